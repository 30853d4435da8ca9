"""Genotype's optimizer recipe -> optax transformation, and the time-based LR schedule.

Two recipes: AdamW on every parameter, or Muon (`optax.contrib.muon`) on the hidden
2-D matrices with AdamW on embeddings, lm head and scalars (the split of
modded-nanogpt and karpathy/autoresearch). Each parameter group has its own learning
rate. Gradients are clipped by global norm first.

The schedule runs on *progress* = training seconds / budget, not on steps, because a
trial's number of steps is unknown in advance: the transformation is built with the
peak learning rates and the train step multiplies its updates by
`lr_multiplier(progress)` (weight decay, being part of the update, follows the
schedule as in optax.adamw).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from models import gpt


GROUPS = ('matrix', 'embed', 'head', 'scalar')


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  optimizer: str = 'adamw'      # 'adamw' everywhere, or 'muon' for hidden matrices
  matrix_lr: float = 3e-3       # AdamW LR of hidden matrices (optimizer='adamw')
  muon_lr: float = 0.02         # Muon LR of hidden matrices (optimizer='muon')
  muon_momentum: float = 0.95   # Muon's Nesterov momentum
  embed_lr: float = 3e-3        # AdamW LR of token/position/value embeddings
  head_lr: float = 3e-3         # AdamW LR of the lm head
  scalar_lr: float = 3e-3       # AdamW LR of norms, gates, mixing scalars
  beta1: float = 0.9            # AdamW first-moment decay
  beta2: float = 0.95           # AdamW second-moment decay
  weight_decay: float = 0.0     # decoupled weight decay of hidden matrices (per unit LR)
  grad_clip: float = 1.0        # global-norm clip; 0 disables
  warmup_frac: float = 0.0      # fraction of the budget with linear warmup from 0
  warmdown_frac: float = 0.3    # final fraction of the budget with linear decay
  final_lr_frac: float = 0.0    # LR at the end of the warmdown, as a fraction of peak


def lr_multiplier(progress, cfg: OptimConfig):
  """Peak-LR multiplier at `progress` in [0, 1] (clipped): linear warmup, constant,
  linear warmdown to `final_lr_frac`. Works on Python floats and JAX scalars."""
  p = jnp.clip(progress, 0.0, 1.0)
  warm = jnp.minimum(1.0, p / cfg.warmup_frac) if cfg.warmup_frac > 0 else 1.0
  if cfg.warmdown_frac > 0:
    into_warmdown = jnp.clip((p - (1.0 - cfg.warmdown_frac)) / cfg.warmdown_frac, 0.0, 1.0)
    down = 1.0 - (1.0 - cfg.final_lr_frac) * into_warmdown
  else:
    down = 1.0
  return warm * down


def _adamw(lr: float, cfg: OptimConfig, weight_decay: float = 0.0):
  return optax.adamw(lr, b1=cfg.beta1, b2=cfg.beta2, eps=1e-8, weight_decay=weight_decay)


def param_labels(params):
  """Pytree of group names, one per parameter of an `nnx.State` of GPT parameters."""
  def label(path, _):
    # Keys of the State's own nesting; the Variable adds a trailing GetAttrKey.
    keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    return gpt.param_group(keys)
  return jax.tree_util.tree_map_with_path(label, params)


def build(cfg: OptimConfig, params) -> optax.GradientTransformation:
  """The optax transformation for `params` (an `nnx.State`), at peak learning rates."""
  if cfg.optimizer not in ('adamw', 'muon'):
    raise ValueError(f'optimizer={cfg.optimizer!r} not in (adamw, muon)')

  def matrix():
    if cfg.optimizer == 'adamw':
      return _adamw(cfg.matrix_lr, cfg, cfg.weight_decay)
    return optax.contrib.muon(cfg.muon_lr, beta=cfg.muon_momentum,
                              weight_decay=cfg.weight_decay, nesterov=True)
  labels = param_labels(params)
  present = set(jax.tree_util.tree_leaves(labels))
  # Only the groups that hold parameters: an empty group's settings train nothing.
  makers = {'matrix': matrix, 'embed': lambda: _adamw(cfg.embed_lr, cfg),
            'head': lambda: _adamw(cfg.head_lr, cfg), 'scalar': lambda: _adamw(cfg.scalar_lr, cfg)}
  tx = optax.multi_transform({g: makers[g]() for g in GROUPS if g in present}, labels)
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx


def scale_updates(updates, multiplier):
  """Applies the schedule: every update times `multiplier` (a traced scalar)."""
  return jax.tree_util.tree_map(lambda u: (u * multiplier).astype(u.dtype), updates)

"""Genotype's optimizer recipe -> optax transformation, and the time-based LR schedule.

Two recipes: AdamW on every parameter, or Muon (`optax.contrib.muon`) on the hidden
2-D matrices with AdamW on embeddings, lm head and scalars (the split of
modded-nanogpt and karpathy/autoresearch). Each parameter group has its own learning
rate. Gradients are clipped by global norm first. Two refinements of the hidden
matrices' update from the modded-nanogpt speedrun (github.com/KellerJordan/modded-nanogpt):
cautious weight decay, which decays a weight only where the update and the weight agree
in sign (records 43 and 50), and NorMuon, Muon's orthogonalised update normalised per
neuron by a running second moment (record 41; arXiv 2510.05491).

The schedule runs on *progress* = training seconds / budget, not on steps, because a
trial's number of steps is unknown in advance: the transformation is built with the
peak learning rates and the train step multiplies its updates by
`lr_multiplier(progress)` (weight decay, being part of the update, follows the
schedule as in optax.adamw).

The numbers of the recipe (`RUNTIME_FIELDS`: learning rates, momenta, betas, decay,
clip, schedule fractions) can be given at run time: `build(cfg, params, values)` and
`lr_multiplier(progress, cfg, values)` take them from `values` (traced scalars inside a
jitted step) and only the branches from `cfg`, so two recipes that differ only in those
numbers share one compiled step (`program_config` is what that step is compiled for).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
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
  cautious_wd: bool = False     # decay hidden matrices only where update and weight agree in sign
  normuon: bool = False         # Muon's update normalised per neuron (optimizer='muon')

NORMUON_BETA2 = 0.95            # decay of NorMuon's per-neuron second moment

# The fields a compiled step takes at run time; every other field shapes the program.
RUNTIME_FIELDS = ('matrix_lr', 'muon_lr', 'muon_momentum', 'embed_lr', 'head_lr', 'scalar_lr',
                  'beta1', 'beta2', 'weight_decay', 'grad_clip', 'warmup_frac', 'warmdown_frac',
                  'final_lr_frac')
Values = Mapping[str, Any]   # runtime field -> a Python float, a numpy or a traced scalar


def runtime_values(cfg: OptimConfig) -> dict[str, np.float32]:
  """The numbers a compiled step of `program_config(cfg)` takes to train `cfg`."""
  return {name: np.float32(getattr(cfg, name)) for name in RUNTIME_FIELDS}


def program_config(cfg: OptimConfig) -> OptimConfig:
  """`cfg` as its compiled program sees it: each runtime number at a stand-in that takes
  the same branches (0 stays 0, any other value is 1), so recipes that differ only in
  those numbers give one config, and a number read from the config instead of the
  runtime values trains visibly wrong instead of silently right once."""
  return dataclasses.replace(cfg, **{name: 0.0 if getattr(cfg, name) == 0 else 1.0
                                     for name in RUNTIME_FIELDS})


class _ConfigNumbers:
  """The numbers of `cfg` itself, each read when asked for (what building reads is what
  decides whether two recipes build alike: `autoresearch/space/builds.py`)."""

  def __init__(self, cfg: OptimConfig):
    self._cfg = cfg

  def __getitem__(self, name: str):
    return getattr(self._cfg, name)


def _numbers(cfg: OptimConfig, values: Optional[Values]):
  return values if values is not None else _ConfigNumbers(cfg)


def lr_multiplier(progress, cfg: OptimConfig, values: Optional[Values] = None):
  """Peak-LR multiplier at `progress` in [0, 1] (clipped): linear warmup, constant,
  linear warmdown to `final_lr_frac`. Works on Python floats and JAX scalars; the
  numbers from `values` when given (the branches from `cfg`)."""
  v = _numbers(cfg, values)
  p = jnp.clip(progress, 0.0, 1.0)
  warm = jnp.minimum(1.0, p / v['warmup_frac']) if cfg.warmup_frac > 0 else 1.0
  if cfg.warmdown_frac > 0:
    into_warmdown = jnp.clip((p - (1.0 - v['warmdown_frac'])) / v['warmdown_frac'], 0.0, 1.0)
    down = 1.0 - (1.0 - v['final_lr_frac']) * into_warmdown
  else:
    down = 1.0
  return warm * down


def _adamw(lr, v: Values, weight_decay=0.0):
  return optax.adamw(lr, b1=v['beta1'], b2=v['beta2'], eps=1e-8, weight_decay=weight_decay)


def param_labels(params):
  """Pytree of group names, one per parameter of an `nnx.State` of GPT parameters."""
  def label(path, _):
    # Keys of the State's own nesting; the Variable adds a trailing GetAttrKey.
    keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    return gpt.param_group(keys)
  return jax.tree_util.tree_map_with_path(label, params)


def build(cfg: OptimConfig, params, values: Optional[Values] = None) -> optax.GradientTransformation:
  """The optax transformation for `params` (an `nnx.State`), at peak learning rates;
  the numbers from `values` when given (the branches from `cfg`)."""
  if cfg.optimizer not in ('adamw', 'muon'):
    raise ValueError(f'optimizer={cfg.optimizer!r} not in (adamw, muon)')
  v = _numbers(cfg, values)

  def matrix():
    # A refinement is read only where it changes something: cautious decay with some
    # decay, NorMuon with Muon. Without either, the library's own transformations.
    cautious = cfg.weight_decay > 0 and cfg.cautious_wd
    normuon = cfg.optimizer == 'muon' and cfg.normuon
    if cfg.optimizer == 'adamw':
      if not cautious:
        return _adamw(v['matrix_lr'], v, v['weight_decay'])
      return optax.chain(optax.scale_by_adam(b1=v['beta1'], b2=v['beta2'], eps=1e-8),
                         cautious_decayed_weights(v['weight_decay']),
                         optax.scale_by_learning_rate(v['matrix_lr']))
    if not (cautious or normuon):
      return optax.contrib.muon(v['muon_lr'], beta=v['muon_momentum'],
                                weight_decay=v['weight_decay'], nesterov=True)
    decay = (cautious_decayed_weights(v['weight_decay']) if cautious
             else optax.add_decayed_weights(v['weight_decay']))
    return optax.chain(optax.contrib.scale_by_muon(beta=v['muon_momentum'], nesterov=True,
                                                   weight_dimension_numbers=_matrix_dims),
                       scale_by_width(),
                       *([scale_by_neuron_rms(NORMUON_BETA2)] if normuon else []),
                       decay, optax.scale_by_learning_rate(v['muon_lr']))
  labels = param_labels(params)
  present = set(jax.tree_util.tree_leaves(labels))
  # Only the groups that hold parameters: an empty group's settings train nothing.
  makers = {'matrix': matrix, 'embed': lambda: _adamw(v['embed_lr'], v),
            'head': lambda: _adamw(v['head_lr'], v), 'scalar': lambda: _adamw(v['scalar_lr'], v)}
  tx = optax.multi_transform({g: makers[g]() for g in GROUPS if g in present}, labels)
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(v['grad_clip']), tx)
  return tx


def scale_updates(updates, multiplier):
  """Applies the schedule: every update times `multiplier` (a traced scalar)."""
  return jax.tree_util.tree_map(lambda u: (u * multiplier).astype(u.dtype), updates)


def _matrix_dims(updates):
  """Muon's dimension numbers of every (fan_in, fan_out) matrix: reduce over fan_in."""
  return jax.tree_util.tree_map(lambda _: optax.contrib.MuonDimensionNumbers(), updates)


def scale_by_width() -> optax.GradientTransformation:
  """Muon's width scaling of a (fan_in, fan_out) update, sqrt(max(1, fan_out / fan_in)),
  as `optax.contrib.muon` applies it after orthogonalising."""
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(
        lambda u: jnp.sqrt(jnp.maximum(1, u.shape[1] / u.shape[0])) * u, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def cautious_decayed_weights(weight_decay: float) -> optax.GradientTransformation:
  """Decoupled weight decay, only where the update (before the learning rate's minus)
  and the weight agree in sign: where the step already moves the weight towards zero."""
  def update(updates, state, params):
    decayed = jax.tree_util.tree_map(
        lambda u, p: u + weight_decay * p * (u * p > 0).astype(u.dtype), updates, params)
    return decayed, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class NeuronRmsState(NamedTuple):
  second_moment: Any   # per matrix: a running mean square of the update per neuron


def _neuron_axis(shape) -> int:
  """The axis NorMuon averages over: the smaller side's (fan_in, fan_out) matrix keeps
  one statistic per unit of its larger side, as the speedrun's per-neuron statistic."""
  return 0 if shape[1] >= shape[0] else 1


def scale_by_neuron_rms(beta2: float, eps: float = 1e-10) -> optax.GradientTransformation:
  """NorMuon's normalisation of an orthogonalised update U (a 2-D matrix): a running
  mean square v of U per neuron, U / sqrt(v), rescaled to U's own Frobenius norm."""
  def init(params):
    return NeuronRmsState(jax.tree_util.tree_map(
        lambda p: jnp.zeros_like(jnp.mean(p, axis=_neuron_axis(p.shape), keepdims=True)),
        params))

  def update(updates, state, params=None):
    del params
    moments = jax.tree_util.tree_map(
        lambda u, v: beta2 * v + (1 - beta2) * jnp.mean(
            jnp.square(u), axis=_neuron_axis(u.shape), keepdims=True),
        updates, state.second_moment)

    def normalise(u, v):
      scaled = u * jax.lax.rsqrt(jnp.maximum(v, eps))
      norm, scaled_norm = jnp.sqrt(jnp.sum(jnp.square(u))), jnp.sqrt(jnp.sum(jnp.square(scaled)))
      return scaled * (norm / jnp.maximum(scaled_norm, eps))
    return jax.tree_util.tree_map(normalise, updates, moments), NeuronRmsState(moments)
  return optax.GradientTransformation(init, update)

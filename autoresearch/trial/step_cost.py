"""What a training step costs in seconds, as a linear model of what the step does: the
modelled clock (`trial.clock='modelled'`) charges each step this, so a trial's outcome
does not depend on the machine's load and yet a small model is not over-credited.

A step's seconds = sum over FEATURES of coefficient x feature, where the features are
counts the genotype fixes (no JAX here), each a kind of work a step does:

* `step`: 1, the per-step work of dispatch and the host (reading the loss, the next
  batch);
* `layer`: transformer blocks, each a fixed number of kernels whatever their size;
* `flops`: model matmul FLOPs (`models.gpt.flops_per_token` x tokens), 1 / the
  matmul rate;
* `scores`: attention scores computed (tokens x visible keys x heads, over the
  blocks): their softmax and masking;
* `residual`: tokens x blocks x width, the elementwise work on the residual stream
  (norms, adds, RoPE);
* `hidden`: tokens x blocks x MLP width (x2 for SwiGLU's gate), the activation;
* `extra`: tokens x blocks x width per elementwise refinement on (QK-norm, residual
  mixing, U-net skips);
* `logits`: tokens x vocabulary per output head (the softmax and its gradient), and
  `softcap` the same again where the logits are soft-capped (tanh);
* `param`: parameters, each updated once by the optimizer; `table`: the parameters
  of embedding tables (their gradient is a scatter into the whole table);
  `cautious`: hidden-matrix parameters under cautious weight decay (a sign test
  and a mask each);
* `muon`: the FLOPs of Muon's Newton-Schulz orthogonalisation of the hidden matrices
  (5 iterations of optax.contrib.muon; 0 under AdamW).

The coefficients are fitted to the idle wall seconds of real steps on the reference
machine (`benchmarks/clock_fidelity.py`, non-negative least squares of the relative
error) and live in the config as `trial.step_cost`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import STEP_COST_FEATURES, TrialConfig
from models import gpt

FEATURES = STEP_COST_FEATURES
NEWTON_SCHULZ_STEPS = 5   # optax.contrib.muon's ns_steps


def _muon_flops(cfg: gpt.GPTConfig) -> float:
  """FLOPs of orthogonalising every hidden matrix once: per iteration on an m x n
  matrix (m <= n), X X^T (2 m^2 n), a polynomial of it (2 m^3) and its product with X
  (2 m^2 n)."""
  d, e, f = cfg.d_model, cfg.head_dim, cfg.mlp_hidden
  shapes = [(d, cfg.n_heads * e), (d, cfg.n_kv_heads * e), (d, cfg.n_kv_heads * e),
            (cfg.n_heads * e, d), (d, f), (f, d)]
  if cfg.activation == 'swiglu':
    shapes.append((d, f))
  per_layer = sum(4 * min(a, b) ** 2 * max(a, b) + 2 * min(a, b) ** 3 for a, b in shapes)
  return NEWTON_SCHULZ_STEPS * cfg.n_layers * per_layer


def _hidden_matrix_params(cfg: gpt.GPTConfig) -> int:
  d, e, f = cfg.d_model, cfg.head_dim, cfg.mlp_hidden
  attention = d * cfg.n_heads * e * 2 + d * cfg.n_kv_heads * e * 2
  return cfg.n_layers * (attention + (3 if cfg.activation == 'swiglu' else 2) * d * f)


def _table_params(cfg: gpt.GPTConfig) -> int:
  tables = cfg.vocab_size + cfg.bigram_buckets + (cfg.seq_len if cfg.position == 'learned' else 0)
  return (tables * cfg.d_model
          + len(cfg.value_embed_layers()) * cfg.vocab_size * cfg.n_kv_heads * cfg.head_dim)


def features(model_cfg: gpt.GPTConfig, optimizer: str, rows: int,
             cautious_wd: bool = False) -> dict[str, float]:
  """The step's counts (FEATURES) for `rows` sequences of `model_cfg.seq_len` tokens."""
  cfg, t = model_cfg, model_cfg.seq_len
  tokens = rows * t
  keys = sum(gpt.mean_visible_keys(cfg))
  heads = 1 + (cfg.mtp_weight > 0)
  refinements = cfg.qk_norm + cfg.residual_mix + bool(cfg.skip_pairs())
  return {
      'step': 1.0,
      'layer': float(cfg.n_layers),
      'flops': gpt.flops_per_token(cfg) * tokens,
      'scores': float(tokens * keys * cfg.n_heads),
      'residual': float(tokens * cfg.n_layers * cfg.d_model),
      'hidden': float(tokens * cfg.n_layers * cfg.mlp_hidden * (2 if cfg.activation == 'swiglu'
                                                                else 1)),
      'extra': float(tokens * cfg.n_layers * cfg.d_model * refinements),
      'logits': float(tokens * cfg.vocab_size * heads),
      'softcap': float(tokens * cfg.vocab_size * heads * (cfg.logit_softcap > 0)),
      'param': float(gpt.count_params(cfg)),
      'table': float(_table_params(cfg)),
      'cautious': float(_hidden_matrix_params(cfg) * cautious_wd),
      'muon': _muon_flops(cfg) if optimizer == 'muon' else 0.0,
  }


def seconds(coefficients: Mapping[str, float], counts: Mapping[str, float]) -> float:
  """Modelled seconds of a step with `counts`; features without a coefficient cost 0."""
  return float(sum(coefficients.get(name, 0.0) * counts[name] for name in FEATURES))


def clock_seconds(cfg: TrialConfig, model_cfg: gpt.GPTConfig, optim_cfg,
                  rows: int) -> float:
  """The training seconds clock `cfg.clock` charges a step of `rows` sequences: its
  FLOPs at the reference rate ('flops') or `cfg.step_cost`'s model ('modelled'); 0
  under the wall clock, which reads the machine instead."""
  counts = features(model_cfg, optim_cfg.optimizer, rows, optim_cfg.cautious_wd)
  if cfg.clock == 'flops':
    return counts['flops'] / cfg.reference_flops_per_second
  if cfg.clock == 'modelled':
    return seconds(dict(cfg.step_cost), counts)
  return 0.0


def genotype_features(genotype: Mapping, rows: int | None = None) -> dict[str, float]:
  """`features` of a genotype's step (its whole batch unless `rows` is given)."""
  genotype = genotype_lib.make(genotype)
  return features(genotype_lib.model_config(genotype), genotype['optimizer'],
                  genotype['batch_size'] if rows is None else rows, genotype['cautious_wd'])


def fit(counts: Sequence[Mapping[str, float]], wall_seconds: Sequence[float],
        features: Sequence[str] = FEATURES) -> dict[str, float]:
  """Non-negative coefficients of `features` minimising the squared relative error of
  the modelled seconds against `wall_seconds`, one measured step per `counts` (the
  step's `features`)."""
  from scipy import optimize
  matrix = np.array([[c[name] for name in features] for c in counts], dtype=np.float64)
  wall = np.asarray(wall_seconds, dtype=np.float64)
  rows = matrix / wall[:, None]                  # each row's error relative to its own wall
  scale = np.maximum(np.abs(rows).max(axis=0), 1e-300)
  solution, _ = optimize.nnls(rows / scale, np.ones(len(wall)))
  return {name: float(c) for name, c in zip(features, solution / scale)}

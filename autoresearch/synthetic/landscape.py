"""Synthetic recipe landscapes: val_bpb as a known function of the genotype.

A landscape stands in for training, so that the real search loop, agents, keep rule
and ledger can run thousands of trials a minute against a problem whose structure and
noise are known. A family is drawn from a seed (`draw`); each member has the kinds of
structure the real landscape has:

* main effects: per gene, an effect of each value. Ordered genes (numbers) get a bowl
  over the value's position in its set, centred at a random optimum; categorical and
  binary genes a random effect per value. Gene importances are heavy-tailed
  (log-normal): a few genes matter most, many barely, as in real recipe ablations.
* interactions: a few random pairs of genes with a random effect per value pair;
* a budget-dependent size optimum: a bowl in log2 of the model's matrix parameters
  around an optimum that grows with the training budget (compute-optimal size grows
  about as compute^0.5, Hoffmann et al. 2022), and a bowl in log2 tokens per step;
* a crash region: where a weighted sum of three genes' positions passes a threshold
  (about 10% of uniformly drawn genotypes), the trial diverges; genotypes that cannot
  be built (`genotype.check`) are invalid there as they are in a real trial;
* Gaussian noise of a known σ, drawn from the landscape, the trial's seed and the
  genotype, so that one genotype and seed always give one val_bpb on a landscape,
  re-runs (seed + 1) differ, and two landscapes draw a genotype independent noise.

`value(landscape, indices, key)` is pure JAX, jitted and vmappable over genotypes
(`indices`: int32 (N_GENES,), each gene's value index) and keys. `make_runner` wraps a
landscape as a `runner.run` stand-in; synthetic/harness.py runs whole searches on one.
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.results import LossReading, TrialResult


N_GENES, MAX_VALUES = genotype_lib.N_GENES, genotype_lib.MAX_VALUES
N_PAIRS = 8                # interacting gene pairs
N_CRASH_GENES = 3          # genes whose positions span the crash region
CRASH_QUANTILE = 1.2816    # standard normal quantile: ~10% of uniform genotypes crash
REFERENCE_BUDGET = 60.0    # seconds at which the size optimum is `size_optimum`
_INDEX = {g.name: i for i, g in enumerate(genotype_lib.GENES)}


def _table(values) -> np.ndarray:
  """A gene's numeric values, padded to MAX_VALUES."""
  out = np.zeros(MAX_VALUES, np.float32)
  out[:len(values)] = np.asarray(values, np.float32)
  return out


_SIZES = np.array([len(g.values) for g in genotype_lib.GENES], np.int32)
_ORDERED = np.array([all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         for v in g.values) for g in genotype_lib.GENES])
_VALID_SLOT = np.arange(MAX_VALUES)[None, :] < _SIZES[:, None]          # (N_GENES, MAX_VALUES)
_POSITION = np.where(_VALID_SLOT, np.arange(MAX_VALUES)[None, :] /
                     np.maximum(_SIZES[:, None] - 1, 1), 0.0).astype(np.float32)
_N_LAYERS = _table(genotype_lib.GENE_BY_NAME['n_layers'].values)
_D_MODEL = _table(genotype_lib.GENE_BY_NAME['d_model'].values)
_MLP_RATIO = _table(genotype_lib.GENE_BY_NAME['mlp_ratio'].values)
_BATCH = _table(genotype_lib.GENE_BY_NAME['batch_size'].values)
_SEQ = _table(genotype_lib.GENE_BY_NAME['seq_len'].values)


class Landscape(NamedTuple):
  """One member of the family (arrays; a pytree)."""
  base: jax.Array            # () bpb of a genotype at every optimum
  main: jax.Array            # (N_GENES, MAX_VALUES) bpb added by each value (0 past a set)
  pair_genes: jax.Array      # (N_PAIRS, 2) int32
  pair_effects: jax.Array    # (N_PAIRS, MAX_VALUES, MAX_VALUES) bpb per value pair
  size_optimum: jax.Array    # () log2 matrix parameters at the optimum
  size_curvature: jax.Array  # () bpb per squared octave away from it
  tokens_optimum: jax.Array  # () log2 tokens per step at the optimum
  tokens_curvature: jax.Array  # () bpb per squared octave away from it
  crash_genes: jax.Array     # (N_CRASH_GENES,) int32
  crash_weights: jax.Array   # (N_CRASH_GENES,) weight of each gene's position
  crash_threshold: jax.Array  # () the crash region: weighted positions above it
  noise_sigma: jax.Array     # () σ of val_bpb between seeds, bpb


def draw(key: jax.Array, budget_seconds: float = REFERENCE_BUDGET) -> Landscape:
  """A landscape of the family from `key`; the size optimum follows `budget_seconds`."""
  ks = jax.random.split(key, 12)
  importance = 0.02 * jnp.exp(1.0 * jax.random.normal(ks[0], (N_GENES,)))   # bpb
  centre = jax.random.uniform(ks[1], (N_GENES, 1))
  bowl = jnp.square(_POSITION - centre) * 4.0                     # 0 at the centre, <= 4
  categorical = jnp.abs(jax.random.normal(ks[2], (N_GENES, MAX_VALUES)))
  shape = jnp.where(_ORDERED[:, None], bowl, categorical)
  main = jnp.where(_VALID_SLOT, importance[:, None] * shape, 0.0)
  main = main - jnp.min(jnp.where(_VALID_SLOT, main, jnp.inf), axis=1, keepdims=True)
  main = jnp.where(_VALID_SLOT, main, 0.0)
  pair_genes = jnp.stack([jax.random.choice(k, N_GENES, (2,), replace=False)
                          for k in jax.random.split(ks[3], N_PAIRS)]).astype(jnp.int32)
  pair_effects = 0.02 * jax.random.normal(ks[4], (N_PAIRS, MAX_VALUES, MAX_VALUES))
  crash_genes = jax.random.choice(ks[5], N_GENES, (N_CRASH_GENES,), replace=False)
  crash_weights = jax.random.uniform(ks[6], (N_CRASH_GENES,), minval=0.5, maxval=1.5)
  # Positions of a uniform genotype: mean 1/2, variance ~1/12 each (normal approximation).
  spread = jnp.sqrt(jnp.sum(jnp.square(crash_weights)) / 12.0)
  crash_threshold = 0.5 * jnp.sum(crash_weights) + CRASH_QUANTILE * spread
  size_optimum = (jax.random.uniform(ks[7], (), minval=14.0, maxval=22.0)
                  + 0.5 * math.log2(budget_seconds / REFERENCE_BUDGET))
  return Landscape(
      base=jax.random.uniform(ks[8], (), minval=1.6, maxval=2.4),
      main=main.astype(jnp.float32), pair_genes=pair_genes,
      pair_effects=pair_effects.astype(jnp.float32),
      size_optimum=size_optimum,
      size_curvature=jax.random.uniform(ks[9], (), minval=0.01, maxval=0.04),
      tokens_optimum=jax.random.uniform(ks[10], (), minval=9.0, maxval=15.0),
      tokens_curvature=jax.random.uniform(ks[11], (), minval=0.005, maxval=0.02),
      crash_genes=crash_genes.astype(jnp.int32), crash_weights=crash_weights,
      crash_threshold=crash_threshold,
      noise_sigma=jnp.exp(jax.random.uniform(jax.random.fold_in(key, 99), (),
                                             minval=math.log(0.005), maxval=math.log(0.03))))


def mean_bpb(landscape: Landscape, indices: jax.Array) -> jax.Array:
  """The noiseless val_bpb of the genotype with value indices `indices` (N_GENES,)."""
  genes = jnp.arange(N_GENES)
  total = landscape.base + jnp.sum(landscape.main[genes, indices])
  a, b = landscape.pair_genes[:, 0], landscape.pair_genes[:, 1]
  total += jnp.sum(landscape.pair_effects[jnp.arange(N_PAIRS), indices[a], indices[b]])
  layers = jnp.asarray(_N_LAYERS)[indices[_INDEX['n_layers']]]
  width = jnp.asarray(_D_MODEL)[indices[_INDEX['d_model']]]
  ratio = jnp.asarray(_MLP_RATIO)[indices[_INDEX['mlp_ratio']]]
  log_size = jnp.log2(layers * width * width * (4.0 + 2.0 * ratio))
  total += landscape.size_curvature * jnp.square(log_size - landscape.size_optimum)
  log_tokens = jnp.log2(jnp.asarray(_BATCH)[indices[_INDEX['batch_size']]] *
                        jnp.asarray(_SEQ)[indices[_INDEX['seq_len']]])
  total += landscape.tokens_curvature * jnp.square(log_tokens - landscape.tokens_optimum)
  return total


def crashes(landscape: Landscape, indices: jax.Array) -> jax.Array:
  """Whether training the genotype diverges (bool ())."""
  positions = jnp.asarray(_POSITION)[landscape.crash_genes, indices[landscape.crash_genes]]
  return jnp.sum(landscape.crash_weights * positions) > landscape.crash_threshold


@jax.jit
def value(landscape: Landscape, indices: jax.Array, key: jax.Array):
  """(val_bpb with the seed's noise, crashed) of one genotype; vmap for many."""
  noisy = mean_bpb(landscape, indices) + landscape.noise_sigma * jax.random.normal(key)
  return noisy, crashes(landscape, indices)


def indices_of(genotype) -> np.ndarray:
  """int32 (N_GENES,): each gene's value index in the genotype."""
  return np.array([genotype_lib.value_index(genotype, g.name) for g in genotype_lib.GENES],
                  np.int32)


def fingerprint(landscape: Landscape) -> str:
  """A digest of the landscape's arrays: what tells one member of the family from another."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(landscape):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:16]


def _noise_key(landscape_id: str, seed: int, genotype_id: str, split: str) -> jax.Array:
  """The noise of (landscape, trial seed, genotype, split): one genotype draws independent
  noise on two landscapes, as it would on two real tasks."""
  digest = hashlib.sha256(f'{landscape_id}:{seed}:{genotype_id}:{split}'.encode()).digest()
  return jax.random.key(int.from_bytes(digest[:4], 'little'))


def make_runner(landscape: Landscape, max_params: int = 0, max_step_flops: float = 0.0):
  """A `runner.run` stand-in scoring genotypes on `landscape`: invalid genotypes and the
  crash region are crashes, others score their val_bpb with the noise of (seed,
  genotype); the watcher sees one reading at the end of the budget and may stop it."""
  landscape_id = fingerprint(landscape)

  def run(genotype, corpus=None, cfg=None, watch=None, score_test: bool = False,
          devices: Optional[list] = None) -> TrialResult:
    gid = genotype_lib.genotype_id(genotype)
    ok, reason = genotype_lib.is_valid(genotype, max_params, max_step_flops)
    if not ok:
      return TrialResult(gid, dict(genotype), status='crash', reason=reason)
    indices = jnp.asarray(indices_of(genotype))
    seed = 0 if cfg is None else cfg.seed
    bpb, crashed = value(landscape, indices, _noise_key(landscape_id, seed, gid, 'val'))
    budget = 1.0 if cfg is None else cfg.budget_seconds
    if bool(crashed):
      return TrialResult(gid, dict(genotype), status='crash',
                         reason='loss diverged (landscape crash region)')
    if watch is not None:
      stop = watch(LossReading(budget, 1.0, 1, float(bpb) * math.log(2)))
      if stop is not None:
        return TrialResult(gid, dict(genotype), status=stop.status, reason=stop.reason,
                           predicted_bpb=stop.predicted_bpb, train_seconds=budget, steps=1)
    test = None
    if score_test:
      test = float(value(landscape, indices, _noise_key(landscape_id, seed, gid, 'test'))[0])
    return TrialResult(gid, dict(genotype), status='ok', val_bpb=float(bpb), test_bpb=test,
                       train_seconds=budget, total_seconds=budget, steps=1)
  return run


def true_gain(landscape: Landscape, baseline: dict, best: dict) -> float:
  """How much better the best is than the baseline on the noiseless landscape, bpb
  (the measure of a search's outcome free of its own winner's curse)."""
  return float(mean_bpb(landscape, jnp.asarray(indices_of(baseline))) -
               mean_bpb(landscape, jnp.asarray(indices_of(best))))

"""The PPO agent's world model: what an edit of the best would score, imagined.

An ensemble of small Flax MLPs, each reading a genotype's encoding
(genotype.encode) and predicting two things: its val_bpb gain over the search's
baseline in units of the search's σ (so the model, like the policy, sees no corpus's
absolute numbers) and the logit that it crashes. Every member is fitted from scratch
on the search's own trials with its own bootstrap weights of them (a Poisson(1) count
per trial, as in a bootstrap ensemble), so where the trials say little the members
disagree; that disagreement is the exploration bonus of an imagined edit (ppo_agent).

Every shape is fixed (a `capacity`-row memory, masked where empty), so a search fits
and predicts with one compilation whatever its length. Fitting is deterministic given
the memory and a key: the agent's checkpoint stores the memory and the last fit, and a
resumed search imagines exactly what an uninterrupted one would.

Shape suffixes: C memory rows, M members, N genotypes, S genome features, H hidden.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
  """From `config.agent.dyna` (configs/default.py holds the defaults)."""
  members: int            # MLPs in the ensemble
  hidden: int             # width of each member's two hidden layers
  steps: int              # full-batch Adam steps per fit
  learning_rate: float    # Adam LR
  weight_decay: float     # decoupled weight decay (AdamW)
  capacity: int           # trials remembered; the oldest are forgotten beyond it


class Memory(NamedTuple):
  """The trials the model is fitted on, filled in place (numpy) as a ring."""
  genome_CxS: np.ndarray   # float32: encoding of each trial's genotype
  bpb_C: np.ndarray        # float32: its val_bpb (nan when it crashed)
  crashed_C: np.ndarray    # bool
  used_C: np.ndarray       # bool: a real row


def empty_memory(capacity: int, genome_dim: int) -> Memory:
  return Memory(np.zeros((capacity, genome_dim), np.float32), np.full(capacity, np.nan, np.float32),
                np.zeros(capacity, bool), np.zeros(capacity, bool))


def remember(memory: Memory, count: int, genome_S, bpb, crashed: bool) -> int:
  """Writes one trial at row `count` modulo the capacity; returns the new count."""
  i = count % len(memory.used_C)
  memory.genome_CxS[i], memory.crashed_C[i], memory.used_C[i] = genome_S, crashed, True
  memory.bpb_C[i] = np.nan if bpb is None else bpb
  return count + 1


class Member(nnx.Module):
  """genome (N, S) -> (gain in σ, normalised; crash logit), each (N,)."""

  def __init__(self, genome_dim: int, hidden: int, rngs: nnx.Rngs):
    self.hidden1 = nnx.Linear(genome_dim, hidden, rngs=rngs)
    self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, 2, rngs=rngs)

  def __call__(self, genome_NxS):
    h = jax.nn.gelu(self.hidden1(genome_NxS))
    out = self.out(jax.nn.gelu(self.hidden2(h)))
    return out[:, 0], out[:, 1]


class Fit(NamedTuple):
  """A fitted ensemble: member parameters stacked on a leading M axis, and the scale
  of the gain targets it was fitted on (predictions are mapped back with it)."""
  params: nnx.State
  gain_mean: jax.Array     # () σ
  gain_std: jax.Array      # () σ


class Compiled(NamedTuple):
  fit: Callable       # (memory, baseline_bpb, sigma, key) -> (Fit, final training loss)
  predict: Callable   # (Fit, genome_NxS) -> (gain in σ (M, N), crash probability (M, N))
  init: Callable      # (key) -> Fit of untrained members (the shapes of a checkpoint)


@functools.lru_cache(maxsize=4)
def compiled(config: WorldModelConfig, genome_dim: int) -> Compiled:
  graphdef, _ = nnx.split(Member(genome_dim, config.hidden, nnx.Rngs(0)), nnx.Param)
  tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)

  def init_params(key):
    return jax.vmap(lambda k: nnx.split(Member(genome_dim, config.hidden, nnx.Rngs(k)),
                                        nnx.Param)[1])(jax.random.split(key, config.members))

  def apply(params, genome_NxS):
    return nnx.merge(graphdef, params)(genome_NxS)

  def member_loss(params, genome_CxS, gain_C, scored_C, crashed_C, weight_C):
    gain, crash_logit = apply(params, genome_CxS)
    squared = jnp.where(scored_C, (gain - gain_C) ** 2, 0.0)
    crash = optax.sigmoid_binary_cross_entropy(crash_logit, crashed_C.astype(jnp.float32))
    return jnp.sum(weight_C * (squared + crash)) / jnp.maximum(jnp.sum(weight_C), 1.0)

  def fit(memory: Memory, baseline_bpb, sigma, key):
    used = memory.used_C
    scored = used & ~memory.crashed_C & jnp.isfinite(memory.bpb_C)
    gain = jnp.where(scored, (baseline_bpb - memory.bpb_C) / sigma, 0.0)
    n = jnp.maximum(jnp.sum(scored), 1)
    mean = jnp.sum(gain) / n
    std = jnp.sqrt(jnp.sum(jnp.where(scored, (gain - mean) ** 2, 0.0)) / n) + 1e-3
    target = (gain - mean) / std
    init_key, boot_key = jax.random.split(key)
    weights_MxC = jax.random.poisson(boot_key, 1.0, (config.members, used.shape[0])) * used[None, :]

    def fit_member(params, weight_C):
      grad = jax.value_and_grad(member_loss)

      def step(carry, _):
        params, opt_state = carry
        loss, g = grad(params, memory.genome_CxS, target, scored, memory.crashed_C, weight_C)
        updates, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

      (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, config.steps)
      return params, losses[-1]

    params, loss_M = jax.vmap(fit_member)(init_params(init_key), weights_MxC.astype(jnp.float32))
    return Fit(params, mean, std), jnp.mean(loss_M)

  def predict(fitted: Fit, genome_NxS):
    gain, crash_logit = jax.vmap(apply, in_axes=(0, None))(fitted.params, genome_NxS)
    return gain * fitted.gain_std + fitted.gain_mean, jax.nn.sigmoid(crash_logit)

  def init(key):
    return Fit(init_params(key), jnp.zeros(()), jnp.ones(()))

  return Compiled(jax.jit(fit), jax.jit(predict), init)

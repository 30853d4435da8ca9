"""Imagined edits for the PPO agent (Dyna): many more transitions per real trial.

Between real trials nothing new is known, but the search's trials say something about
edits not yet tried. Before each PPO update the agent fits the world model
(world_model.py) on every trial it has seen, and for each state of the real rollout
draws `imagined` edits from the current policy; a member of the ensemble, chosen at
random per edit, says what the child would score (its crash drawn from the member's
probability) and the edit earns the reward a real trial with that val_bpb would (the
one formula of agents/reward.py: the gain over the best in σ, clipped, log1p; 0 for a
crash), plus `bonus` per σ of the members' disagreement, so that the policy is drawn
to edits the trials have not pinned down. The update then runs over the real and the
imagined transitions together.

Credit is immediate (γ = 0, ppo.py), so an imagined edit needs no imagined future:
each is a one-step transition from a state the search really was in, with the policy's
own log-probability and critic as it acts now. Only real trials enter the ledger, the
keep rule and the memory; imagination changes what the policy proposes, nothing else.

The world model's error is measured honestly: each fit's gain predictions are scored
against the next rollout's real trials, which it has not seen (`wm_rmse_sigmas`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autoresearch.agents import reward as reward_lib
from autoresearch.agents.api import Outcome, SearchView
from autoresearch.agents.ppo import update as ppo_update, world_model
from autoresearch.space import genotype as genotype_lib


@dataclasses.dataclass(frozen=True)
class DynaConfig:
  """From `config.agent.dyna` (configs/default.py holds the defaults)."""
  imagined: int           # imagined edits per real transition; 0 = no imagination
  bonus: float            # imagined reward per σ of ensemble disagreement
  min_trials: int         # trials remembered before the model is used
  reward_clip: float      # as search.reward_clip
  model: world_model.WorldModelConfig


def config_from(dyna_config) -> DynaConfig:
  d = dyna_config.to_dict()
  model = {f.name: d.pop(f.name) for f in dataclasses.fields(world_model.WorldModelConfig)}
  return DynaConfig(model=world_model.WorldModelConfig(**model), **d)


class Imagination(NamedTuple):
  """The imagined transitions (N = T · imagined of them) and what the world model said
  of each: the child's val_bpb (NaN: it crashed) and the members' disagreement, σ."""
  rollout: ppo_update.Rollout
  bpb_N: jax.Array
  disagreement_N: jax.Array


@functools.lru_cache(maxsize=4)
def _imagine_fn(config: DynaConfig, act: Callable) -> Callable:
  """(params, fit, obs (T, ...), best bpb (T,), baseline bpb, σ, key) -> Imagination."""
  predict = world_model.compiled(config.model, genotype_lib.GENOME_DIM).predict
  keep, put = (jnp.asarray(a) for a in genotype_lib.edit_encodings())
  act_many = jax.vmap(act, in_axes=(None, 0, 0))

  def imagine(params, fitted, obs_T, best_bpb_T, baseline_bpb, sigma, key):
    k = config.imagined
    obs = jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0), obs_T)
    best_bpb = jnp.repeat(best_bpb_T, k)
    n = best_bpb.shape[0]
    act_key, member_key, crash_key = jax.random.split(key, 3)
    gene, value, log_prob, critic = act_many(params, obs, jax.random.split(act_key, n))
    child = obs.genome * keep[gene] + put[gene, value]
    gain_MxN, crash_MxN = predict(fitted, child)
    member = jax.random.randint(member_key, (n,), 0, gain_MxN.shape[0])
    gain = gain_MxN[member, jnp.arange(n)]
    crashed = jax.random.uniform(crash_key, (n,)) < crash_MxN[member, jnp.arange(n)]
    disagreement = jnp.std(gain_MxN, axis=0)
    bpb = jnp.where(crashed, jnp.nan, baseline_bpb - gain * sigma)   # the gain is in σ
    reward = reward_lib.improvement(best_bpb, bpb, sigma, config.reward_clip, xp=jnp)
    reward = reward + config.bonus * disagreement
    return Imagination(ppo_update.Rollout(obs, gene, value, log_prob, critic, reward), bpb,
                       disagreement)

  return jax.jit(imagine)


class Dyna:
  """The memory of real trials, the last fit, and imagination from them."""

  def __init__(self, config: DynaConfig, seed: int):
    self.config = config
    self.fns = world_model.compiled(config.model, genotype_lib.GENOME_DIM)
    self.memory = world_model.empty_memory(config.model.capacity, genotype_lib.GENOME_DIM)
    self.remembered = 0               # trials written (the memory keeps the last `capacity`)
    self.fitted = self.fns.init(jax.random.key(seed))
    self.fitted_at = -1               # `remembered` when `fitted` was fitted; -1 never

  @property
  def enabled(self) -> bool:
    return self.config.imagined > 0

  def remember(self, view: SearchView, outcome: Outcome) -> None:
    if not self.enabled:
      return
    if self.remembered == 0 and math.isfinite(view.baseline_bpb):  # the baseline itself
      self.remembered = world_model.remember(self.memory, 0, genotype_lib.encode(
          view.best_genotype), view.baseline_bpb, False)
    crashed = outcome.status == 'crash'
    if outcome.bpb is None and not crashed:
      return  # an aborted trial without a prediction says nothing
    self.remembered = world_model.remember(self.memory, self.remembered,
                                           genotype_lib.encode(outcome.genotype), outcome.bpb,
                                           crashed)

  def _unseen_error(self, view: SearchView) -> float:
    """RMSE in σ of the last fit's gain predictions on the trials remembered since."""
    new = min(self.remembered - self.fitted_at, self.config.model.capacity)
    rows = [(self.remembered - 1 - i) % self.config.model.capacity for i in range(new)]
    rows = [i for i in rows if not self.memory.crashed_C[i] and np.isfinite(self.memory.bpb_C[i])]
    if not rows:
      return math.nan
    gain = (view.baseline_bpb - self.memory.bpb_C[rows]) / view.sigma
    predicted = np.mean(
        np.asarray(self.fns.predict(self.fitted, self.memory.genome_CxS[rows])[0]), 0)
    return float(np.sqrt(np.mean((predicted - gain) ** 2)))

  def imagine(self, params, act: Callable, rollout: ppo_update.Rollout, best_bpb_T: np.ndarray,
              view: SearchView, key) -> tuple[Imagination | None, dict]:
    """The imagined transitions from the states of `rollout` (None while the memory is
    too small or the view has no baseline and σ), and the world model's figures."""
    if (not self.enabled or self.remembered < self.config.min_trials
        or not (math.isfinite(view.baseline_bpb) and view.sigma > 0)):
      return None, {}
    metrics = {'wm_rmse_sigmas': self._unseen_error(view)} if self.fitted_at >= 0 else {}
    fit_key, imagine_key = jax.random.split(key)
    self.fitted, loss = self.fns.fit(self.memory, view.baseline_bpb, view.sigma, fit_key)
    self.fitted_at = self.remembered
    imagined = _imagine_fn(self.config, act)(
        params, self.fitted, rollout.obs, jnp.asarray(best_bpb_T, jnp.float32),
        jnp.float32(view.baseline_bpb), jnp.float32(view.sigma), imagine_key)
    metrics.update(wm_loss=float(loss),
                   wm_disagreement_sigmas=float(jnp.mean(imagined.disagreement_N)),
                   imagined_reward=float(jnp.mean(imagined.rollout.reward)))
    return imagined, metrics

  def state_dict(self) -> tuple[dict, dict]:
    fitted = self.fitted._replace(params=nnx.to_pure_dict(self.fitted.params))
    return ({'memory': self.memory, 'fitted': fitted},
            {'remembered': self.remembered, 'fitted_at': self.fitted_at})

  def load_state_dict(self, arrays: dict[str, Any], meta: dict) -> None:
    self.memory = world_model.Memory(*(np.array(a) for a in arrays['memory']))
    fitted = arrays['fitted']   # restored into state_dict's structure: a Fit, params a dict
    nnx.replace_by_pure_dict(self.fitted.params, fitted.params)
    self.fitted = world_model.Fit(self.fitted.params, jnp.asarray(fitted.gain_mean),
                                  jnp.asarray(fitted.gain_std))
    self.remembered, self.fitted_at = meta['remembered'], meta['fitted_at']

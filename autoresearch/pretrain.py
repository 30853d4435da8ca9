"""Pretraining the PPO policy on synthetic landscapes: learning across searches.

    python main.py --mode=pretrain --workdir=policies/default

Each iteration draws `searches` landscapes (synthetic/landscape.py) from the pretraining seeds,
runs the real search loop on each in memory (`harness.search_on`: the same baseline
runs, keep rule, rewards and view a real search has) with the current policy acting
and not learning (a collect-only agent), and then takes one PPO update over all their
transitions. The pretraining seeds start at PRETRAIN_SEED and are used by nothing else:
tests and benchmarks draw their landscapes below TEST_SEED_LIMIT, so a pretrained policy
is always measured on landscapes it never saw.

Credit is the agent's own (ppo.py: an edit's reward is immediate, γ = 0), so the
transitions of many searches can be pooled into one batch without crossing searches.
What the policy can learn here is what holds across the family: which kinds of edits
tend to pay (moves towards the middle of a value range, away from the ends where the
crash region lies), not to repeat an edit that just failed, what to do after a keep.
Whether that carries over to real training is measured on real searches, not assumed.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from absl import logging

from autoresearch.agents.ppo import agent as ppo_agent, saved_policies, update as ppo_update
from autoresearch.space import genotype as genotype_lib
from autoresearch.synthetic import harness, landscape


PRETRAIN_SEED = 1_000_000   # landscapes and searches of pretraining: this and above
TEST_SEED_LIMIT = 100_000   # landscapes of tests and benchmarks: below this


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """From `config.pretrain` (configs/default.py holds the defaults)."""
  iterations: int        # PPO updates
  searches: int          # landscapes (one search each) per update
  trials: int            # ledger rows per search (baseline runs included)
  epochs: int            # passes over each iteration's transitions
  minibatches: int       # minibatches per pass
  learning_rate: float   # Adam step size

  @classmethod
  def from_config(cls, config) -> 'PretrainConfig':
    return cls(**config.pretrain.to_dict())


def collect(params, config, seeds, corpus=None) -> tuple[ppo_update.Rollout, list[float]]:
  """One search per seed (landscape `seed`, search seed `seed`) with `params` acting
  (a collect-only agent); returns (every transition, concatenated; the true gain of
  each search's best)."""
  rollouts, gains = [], []
  for seed in seeds:
    search_config = harness.search_config(config, seed, config.pretrain.trials)
    agent = ppo_agent.PPOAgent(search_config.agent, seed, learn=False, params=params)
    land = landscape.draw(jax.random.key(seed), search_config.trial.budget_seconds)
    s = harness.search_on(land, search_config, corpus, agent=agent)
    rollouts.append(agent.transitions())
    gains.append(landscape.true_gain(land, genotype_lib.from_config(config),
                                     s.state.best_genotype))
  return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *rollouts), gains


def _fixed_size(rollout: ppo_update.Rollout, size: int, key) -> ppo_update.Rollout:
  """`size` transitions of `rollout`: a random subset, or all of them and a random
  draw of them again when there are fewer."""
  n = len(rollout.reward)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
  order = rng.permutation(n)[:size] if n >= size else np.concatenate(
      [np.arange(n), rng.integers(0, n, size - n)])
  return jax.tree_util.tree_map(lambda x: x[order], rollout)


def landscape_seeds(seed: int, iteration: int, searches: int) -> list[int]:
  """The landscapes (and search seeds) of one pretraining iteration: pretraining's own,
  at PRETRAIN_SEED and above."""
  first = PRETRAIN_SEED + seed * 100_000 + iteration * searches
  return list(range(first, first + searches))


def pretrain(config, folder: str, seed: int = 0):
  """Pretrains a policy from scratch (module docstring) and saves it in `folder`
  (agents/ppo/saved_policies.py). Returns the parameters."""
  pcfg = PretrainConfig.from_config(config)
  acting = ppo_agent.PPOAgent(config.agent, seed, learn=False)   # the initial policy
  ppo_config = dataclasses.replace(
      acting.ppo_config, gamma=0.0, epochs=pcfg.epochs, minibatches=pcfg.minibatches,
      learning_rate=pcfg.learning_rate)
  fns = ppo_agent.compiled(acting.policy_config, ppo_config)
  params, opt_state = acting.params, fns.tx.init(acting.params)
  key = jax.random.key(seed)
  # One batch size for every update (one compile): 3/4 of the most proposals the
  # searches can make (re-runs take ledger rows too), a multiple of the minibatches.
  most = pcfg.searches * (pcfg.trials - config.search.noise_repeats)
  batch = most * 3 // 4 // pcfg.minibatches * pcfg.minibatches
  history = []
  for iteration in range(pcfg.iterations):
    start = time.time()
    seeds = landscape_seeds(seed, iteration, pcfg.searches)
    rollout, gains = collect(params, config, seeds)
    key, pick_key, update_key = jax.random.split(key, 3)
    rollout = _fixed_size(rollout, batch, pick_key)
    params, opt_state, metrics = fns.update(params, opt_state, rollout, 0.0, update_key)
    metrics = {k: float(v) for k, v in metrics.items()}
    history.append(dict(iteration=iteration, seeds=seeds, mean_true_gain=float(np.mean(gains)),
                        mean_reward=float(np.mean(rollout.reward)), **metrics))
    logging.info('pretrain %d/%d: true gain %.4f bpb, reward %.3f, approx_kl %.4f, '
                 'clip %.3f, entropy %.3f, explained variance %.3f (%.0f s)',
                 iteration + 1, pcfg.iterations, np.mean(gains), np.mean(rollout.reward),
                 metrics['approx_kl'], metrics['clip_fraction'], metrics['entropy'],
                 metrics['explained_variance'], time.time() - start)
  saved_policies.save(folder, params, acting.policy_config,
                      {'pretrain': dataclasses.asdict(pcfg), 'seed': seed, 'history': history})
  return params

"""Pretraining on synthetic landscapes, the shipped policy folder, and a search started from it."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from autoresearch import pretrain
from autoresearch.agents import factory
from autoresearch.agents.ppo import agent as ppo_agent, saved_policies
from autoresearch.search import loop
from autoresearch.synthetic import harness, landscape
from autoresearch.workdir import store
from configs import default


def _config():
  config = default.get_config()
  config.agent.init_from = 'none'
  config.pretrain.iterations, config.pretrain.searches, config.pretrain.trials = 1, 2, 12
  config.pretrain.minibatches = 2
  return config


def _leaves(params):
  return jax.tree_util.tree_leaves(nnx.to_pure_dict(params))


def test_collect_gathers_every_proposal_of_the_real_search_loop_with_its_reward():
  config = _config()
  agent = ppo_agent.PPOAgent(config.agent, 7, learn=False)
  rollout, gains = pretrain.collect(agent.params, config, [7, 8])
  # The same searches again, recorded: one transition per proposal, its reward the row's.
  rewards = []
  for seed in (7, 8):
    cfg = harness.search_config(config, seed, 12)
    land = landscape.draw(jax.random.key(seed), cfg.trial.budget_seconds)
    acting = ppo_agent.PPOAgent(cfg.agent, seed, learn=False, params=agent.params)
    s = harness.search_on(land, cfg, agent=acting)
    firsts = [r for r in s.store.rows if r.agent == 'ppo' and r.rerun_of is None]
    rewards += [r.reward for r in firsts]
  np.testing.assert_allclose(rollout.reward, rewards, rtol=1e-6)
  assert len(gains) == 2 and all(np.isfinite(gains))
  assert rollout.obs.edit_mask.shape[0] == len(rewards)


def _search(config, land, corpus):
  """A search on `land`, in memory, with the agent the config names."""
  return loop.Search(config, store.MemoryStore(), corpus, factory.make(config.agent, 3),
                     landscape.make_runner(land))


@pytest.mark.slow   # about 20 s
def test_pretrain_writes_a_policy_a_search_starts_from(tmp_path, stdlib_corpus):
  config = _config()
  folder = str(tmp_path / 'policy')
  params = pretrain.pretrain(config, folder)
  about = json.load(open(tmp_path / 'policy' / 'policy.json'))
  assert about['pretrain']['searches'] == 2 and len(about['history']) == 1
  # The landscapes it drew, one per search: pretraining's own, which no test draws.
  assert about['history'][0]['seeds'] == [pretrain.PRETRAIN_SEED, pretrain.PRETRAIN_SEED + 1]
  assert np.isfinite(about['history'][0]['approx_kl'])
  fresh = ppo_agent.PPOAgent(config.agent, 3)
  assert any(not np.allclose(a, b) for a, b in zip(_leaves(params), _leaves(fresh.params)))

  config = harness.search_config(config, 3, 8)   # search seed 3: the agent's seed too
  config.agent.init_from = folder
  land = landscape.draw(jax.random.key(3))
  s = _search(config, land, stdlib_corpus)
  for a, b in zip(_leaves(s.agent.params), _leaves(params)):
    np.testing.assert_array_equal(a, b)
  config.agent.init_from = 'none'
  s = _search(config, land, stdlib_corpus)
  for a, b in zip(_leaves(s.agent.params), _leaves(fresh.params)):
    np.testing.assert_array_equal(a, b)

  # A policy made for other sizes is refused with what differs.
  config.agent.hidden, config.agent.init_from = 32, folder
  with pytest.raises(saved_policies.PolicyError, match='hidden 64 vs 32'):
    _search(config, land, stdlib_corpus)


def test_the_shipped_policy_matches_the_default_agent_and_is_the_default():
  config = default.get_config()
  assert config.agent.init_from == 'policies/default'
  folder = saved_policies.resolve(config.agent.init_from)
  assert saved_policies.is_policy(folder)
  agent = ppo_agent.PPOAgent(config.agent, 0)
  arrays = saved_policies.load(folder, agent)
  fresh = _leaves(agent.params)
  agent.load_policy(arrays)
  assert any(not np.allclose(a, b) for a, b in zip(_leaves(agent.params), fresh))
  about = json.load(open(f'{folder}/policy.json'))
  # Pretrained on landscapes no test or benchmark draws: the seeds its recorded settings
  # drew (a new pretraining records them itself: the test above).
  made = about['pretrain']
  drawn = [s for i in range(made['iterations'])
           for s in pretrain.landscape_seeds(about['seed'], i, made['searches'])]
  assert len(set(drawn)) == 30 * 24 and min(drawn) >= pretrain.TEST_SEED_LIMIT

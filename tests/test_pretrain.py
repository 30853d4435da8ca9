"""Pretraining on synthetic landscapes, the shipped policy folder, and a search started from it."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from autoresearch import landscape, policies, ppo_agent, pretrain, search, store
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
  agent = ppo_agent.PPOAgent(pretrain._acting_config(config, 7, 12).agent, 7)
  rollout, gains = pretrain.collect(agent.params, config, [7, 8])
  # The same searches again, recorded: one transition per proposal, its reward the row's.
  rewards = []
  for seed in (7, 8):
    cfg = pretrain._acting_config(config, seed, 12)
    land = landscape.draw(jax.random.key(seed), cfg.trial.budget_seconds)
    acting = ppo_agent.PPOAgent(cfg.agent, seed)
    acting.params = agent.params
    s = landscape.search_on(land, cfg, agent=acting)
    firsts = [r for r in s.store.rows if r.agent == 'ppo' and r.rerun_of is None]
    rewards += [r.reward for r in firsts]
  np.testing.assert_allclose(rollout.reward, rewards, rtol=1e-6)
  assert len(gains) == 2 and all(np.isfinite(gains))
  assert rollout.obs.edit_mask.shape[0] == len(rewards)


@pytest.mark.slow   # about 20 s
def test_pretrain_writes_a_policy_a_search_starts_from(tmp_path):
  config = _config()
  folder = str(tmp_path / 'policy')
  params = pretrain.pretrain(config, folder)
  about = json.load(open(tmp_path / 'policy' / 'policy.json'))
  assert about['pretrain']['searches'] == 2 and len(about['history']) == 1
  assert np.isfinite(about['history'][0]['approx_kl'])
  fresh = ppo_agent.PPOAgent(config.agent, 3)
  assert any(not np.allclose(a, b) for a, b in zip(_leaves(params), _leaves(fresh.params)))

  config = landscape.search_config(config, 3, 8)   # search seed 3: the agent's seed too
  config.agent.init_from = folder
  land = landscape.draw(jax.random.key(3))
  s = search.Search(config, '', runner=landscape.make_runner(land), store=store.MemoryStore())
  for a, b in zip(_leaves(s.agent.params), _leaves(params)):
    np.testing.assert_array_equal(a, b)
  config.agent.init_from = 'none'
  s = search.Search(config, '', runner=landscape.make_runner(land), store=store.MemoryStore())
  for a, b in zip(_leaves(s.agent.params), _leaves(fresh.params)):
    np.testing.assert_array_equal(a, b)

  # A policy made for other sizes is refused with what differs.
  config.agent.hidden, config.agent.init_from = 32, folder
  with pytest.raises(policies.PolicyError, match='hidden 64 vs 32'):
    search.Search(config, '', runner=landscape.make_runner(land), store=store.MemoryStore())


def test_the_shipped_policy_matches_the_default_agent_and_is_the_default():
  config = default.get_config()
  assert config.agent.init_from == 'policies/default'
  folder = policies.resolve(config.agent.init_from)
  assert policies.is_policy(folder)
  agent = ppo_agent.PPOAgent(config.agent, 0)
  arrays = policies.load(folder, agent)
  fresh = _leaves(agent.params)
  agent.load_policy(arrays)
  assert any(not np.allclose(a, b) for a, b in zip(_leaves(agent.params), fresh))
  about = json.load(open(f'{folder}/policy.json'))
  # Pretrained on landscapes no test or benchmark draws.
  assert about['seed'] * 100_000 + pretrain.PRETRAIN_SEED >= pretrain.TEST_SEED_LIMIT

"""The PPO agent: the search's view turned into the policy's features (features.py),
an actor-critic over edits of the best (models/policy.py), PPO updates (update.py)
every `update_every` trials on the continuing stream of (observation, edit, reward),
together with edits imagined on a world model of the search's trials (dyna.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from autoresearch.agents.api import Outcome, Proposal, SearchView
from autoresearch.agents.ppo import dyna, features, update as ppo_update
from autoresearch.space import genotype as genotype_lib
from models import policy


class Compiled(NamedTuple):
  """The jitted functions of one (policy, PPO) configuration."""
  tx: optax.GradientTransformation
  act: Callable      # (params, obs, key) -> (gene, value, log_prob, critic) of one observation
  critic: Callable   # (params, obs) -> critic of one observation
  update: Callable   # ppo.make_update's


@functools.lru_cache(maxsize=8)
def compiled(policy_config: policy.PolicyConfig, ppo_config: ppo_update.PPOConfig) -> Compiled:
  """Shared by every agent of one configuration, so that many agents (searches on
  synthetic landscapes, pretraining) compile once."""
  graphdef, _ = nnx.split(policy.ActorCritic(policy_config, rngs=nnx.Rngs(0)), nnx.Param)

  def outputs(params, obs):
    batched = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], obs)
    return nnx.merge(graphdef, params)(batched), batched.edit_mask

  def act(params, obs, key):
    out, edit_mask = outputs(params, obs)
    gene, value, log_prob = policy.sample(key, out, edit_mask)
    return gene[0], value[0], log_prob[0], out.value[0]

  tx = ppo_update.make_optimizer(ppo_config)
  return Compiled(tx, jax.jit(act), jax.jit(lambda params, obs: outputs(params, obs)[0].value[0]),
                  ppo_update.make_update(graphdef, tx, ppo_config))


class PPOAgent:
  """An actor-critic over edits, updated by PPO every `update_every` trials on the
  continuing stream of (observation, edit, reward).

  `learn=False` makes a collect-only agent (pretraining's actors): it acts with its
  parameters (`params`, else freshly initialised from `seed`), never updates, and keeps
  every transition it sees for `transitions()`; it lives in memory only."""

  kind = 'ppo'

  def __init__(self, agent_config, seed: int, learn: bool = True,
               params: Optional[nnx.State] = None):
    self.update_every = agent_config.update_every
    if self.update_every < 2 or self.update_every % agent_config.ppo.minibatches:
      # Advantages are normalised over the rollout: one transition would give zero signal.
      raise ValueError(f'agent.update_every={self.update_every} must be at least 2 and a '
                       f'multiple of agent.ppo.minibatches={agent_config.ppo.minibatches}')
    self.policy_config = policy.PolicyConfig(
        genome_dim=genotype_lib.GENOME_DIM, history_dim=features.HISTORY_DIM,
        globals_dim=features.GLOBALS_DIM, n_genes=genotype_lib.N_GENES,
        max_values=genotype_lib.MAX_VALUES, history_len=agent_config.history,
        hidden=agent_config.hidden, num_heads=agent_config.num_heads)
    self.ppo_config = ppo_update.PPOConfig(**agent_config.ppo.to_dict())
    self.dyna = dyna.Dyna(dyna.config_from(agent_config.dyna), seed)
    if self.dyna.config.imagined and self.ppo_config.gamma != 0.0:
      raise ValueError('agent.dyna.imagined > 0 needs agent.ppo.gamma = 0: imagined edits '
                       'are one-step transitions (dyna.py)')
    model = policy.ActorCritic(self.policy_config, rngs=nnx.Rngs(seed))
    _, self.params = nnx.split(model, nnx.Param)
    if params is not None:
      self.params = params
    self.learn = learn
    self._collected: list[ppo_update.Rollout] = []   # collect-only: one row per transition
    self.fns = compiled(self.policy_config, self.ppo_config)
    self.opt_state = self.fns.tx.init(self.params)
    self.key = jax.random.key(seed)
    self.buffer = self._empty_buffer()
    self.buffer_best_bpb = np.zeros(self.update_every, np.float32)  # the best each transition saw
    self.buffered = 0   # transitions in the buffer since the last update

  def propose(self, view: SearchView) -> Proposal:
    self.key, key = jax.random.split(self.key)
    obs = features.observation(view, self.policy_config.history_len)
    gene, value, log_prob, critic = self.fns.act(self.params, obs, key)
    return Proposal(int(gene), int(value), float(log_prob), float(critic))

  def _empty_buffer(self) -> ppo_update.Rollout:
    """A fixed-size rollout (update_every transitions), filled in place."""
    n, c = self.update_every, self.policy_config
    obs = policy.Observation(
        genome=np.zeros((n, c.genome_dim), np.float32),
        history=np.zeros((n, c.history_len, c.history_dim), np.float32),
        history_mask=np.zeros((n, c.history_len), bool),
        globals=np.zeros((n, c.globals_dim), np.float32),
        edit_mask=np.zeros((n, c.n_genes, c.max_values), bool))
    return ppo_update.Rollout(obs=obs, gene=np.zeros(n, np.int32),
                              value_index=np.zeros(n, np.int32), log_prob=np.zeros(n, np.float32),
                              critic=np.zeros(n, np.float32), reward=np.zeros(n, np.float32))

  def observe(self, view: SearchView, proposal: Proposal, reward: float,
              next_view: SearchView, outcome: Outcome) -> dict:
    if not self.learn:
      self._collected.append(self._transition(view, proposal, reward))
      return {}
    i, b = self.buffered, self.buffer
    for field, value in zip(b.obs, features.observation(view, self.policy_config.history_len)):
      field[i] = value
    b.gene[i], b.value_index[i] = proposal.gene, proposal.value
    b.log_prob[i], b.critic[i], b.reward[i] = proposal.log_prob, proposal.critic, reward
    self.buffer_best_bpb[i] = view.best_bpb
    self.buffered += 1
    self.dyna.remember(view, outcome)
    if self.buffered < self.update_every:
      return {}
    last_critic = self.fns.critic(self.params,
                                  features.observation(next_view, self.policy_config.history_len))
    self.key, key = jax.random.split(self.key)
    imagine_key = jax.random.fold_in(key, 1)   # the update's key as without imagination
    imagined, dyna_metrics = self.dyna.imagine(self.params, self.fns.act, self.buffer,
                                               self.buffer_best_bpb, next_view, imagine_key)
    rollout = self.buffer if imagined is None else jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b]), self.buffer, imagined.rollout)
    self.params, self.opt_state, metrics = self.fns.update(
        self.params, self.opt_state, rollout, last_critic, key)
    self.buffer, self.buffered = self._empty_buffer(), 0
    return {**{k: float(v) for k, v in metrics.items()}, **dyna_metrics}

  def _transition(self, view: SearchView, proposal: Proposal, reward: float
                  ) -> ppo_update.Rollout:
    """One transition as a rollout of one row."""
    obs = features.observation(view, self.policy_config.history_len)
    return ppo_update.Rollout(
        obs=jax.tree_util.tree_map(lambda x: np.asarray(x)[None], obs),
        gene=np.array([proposal.gene], np.int32), value_index=np.array([proposal.value], np.int32),
        log_prob=np.array([proposal.log_prob], np.float32),
        critic=np.array([proposal.critic], np.float32), reward=np.array([reward], np.float32))

  def transitions(self) -> ppo_update.Rollout:
    """Every transition a collect-only agent has seen, in order, as one rollout."""
    if self.learn:
      raise ValueError('transitions() is for a collect-only agent (learn=False)')
    if not self._collected:
      return jax.tree_util.tree_map(lambda x: x[:0], self._empty_buffer())
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *self._collected)

  def state_dict(self) -> tuple[Any, dict]:
    """(arrays, meta): everything needed to continue exactly."""
    if not self.learn:
      raise ValueError('a collect-only agent (learn=False) is not saved: it lives in memory')
    arrays = {'params': nnx.to_pure_dict(self.params), 'opt_state': self.opt_state,
              'key': jax.random.key_data(self.key), 'buffer': self.buffer}
    meta = {'buffered': self.buffered}
    if self.dyna.enabled:   # without imagination the state is as it was before Dyna
      arrays['buffer_best_bpb'], (arrays['dyna'], meta['dyna']) = (self.buffer_best_bpb,
                                                                   self.dyna.state_dict())
    return arrays, meta

  def load_policy(self, arrays) -> None:
    """Starts from the policy (parameters only) of another search's checkpoint."""
    nnx.replace_by_pure_dict(self.params, arrays['params'])

  def load_state_dict(self, arrays, meta: dict) -> None:
    nnx.replace_by_pure_dict(self.params, arrays['params'])
    self.opt_state = arrays['opt_state']
    self.key = jax.random.wrap_key_data(arrays['key'])
    self.buffer = jax.tree_util.tree_map(np.array, arrays['buffer'])
    self.buffered = meta['buffered']
    if self.dyna.enabled:
      self.buffer_best_bpb = np.array(arrays['buffer_best_bpb'])
      self.dyna.load_state_dict(arrays['dyna'], meta['dyna'])



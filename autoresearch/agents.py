"""Proposers of the next trial, behind one interface, and what they observe.

Every agent sees the same `policy.Observation` (the current best genotype, the last H
trials, a few global counters, the mask of valid edits of the best) and proposes
either one edit (gene index, value index) of the current best or, for the agents that
search the space by themselves, a whole genotype (`Proposal.genotype`). After the
trial it is told the reward and the outcome (the genotype's val_bpb, or the
self-evaluator's prediction for an aborted trial; None for a crash).

    agent.propose(obs, key=None) -> Proposal
    agent.observe(obs, proposal, reward, next_obs, outcome) -> dict of metrics ({} if none)
    agent.state_dict() -> (arrays, meta); agent.load_state_dict(arrays, meta)
        (a pytree of arrays for Orbax, and JSON-able metadata)

Agents (`agent.kind`):
  ppo            a Flax actor-critic over edits of the best, trained by PPO (the default)
  random         a uniformly random valid edit of the best
  random_global  a uniformly random valid genotype of the whole space (random search)
  evolution      regularized evolution (Real et al. 2019): a population of the last
                 `evolution.population` trials; the best of `evolution.tournament`
                 random members is mutated by one random valid edit; the oldest dies
  tpe, cmaes     Optuna's TPE and CMA-ES samplers through ask-and-tell
                 (third_party/optuna_agents.py)
The agents that draw at random draw only valid genotypes (within the parameter and
step-FLOPs caps); Optuna's samplers may propose invalid ones, which the trial records as
crashes and the sampler is told as failed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autoresearch import genotype as genotype_lib, ledger, ppo
from models import policy

HISTORY_DIM = genotype_lib.N_GENES + 5 + len(ledger.STATUSES)
GLOBALS_DIM = 3


@dataclasses.dataclass(frozen=True)
class Proposal:
  """An edit (gene, value) of the current best, or, when `genotype` is set, a whole
  genotype (gene and value are then -1)."""
  gene: int
  value: int
  log_prob: float = 0.0
  critic: float = 0.0
  genotype: Optional[dict] = None


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a proposal gave: the genotype trained, its status ('keep', 'discard',
  'crash', 'aborted') and val_bpb (the mean of a re-run pair; the predicted val_bpb
  of an aborted trial; None for a crash or an aborted trial without a prediction)."""
  genotype: dict
  status: str
  bpb: Optional[float]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The limits every proposal must respect (see `genotype.check`)."""
  max_params: int = 0
  max_step_flops: float = 0.0


def history_row(gene: int, old_value: int, new_value: int, delta_sigmas: float, status: str,
                budget_fraction: float, became_best: bool) -> np.ndarray:
  """One trial as the policy reads it: the edit (gene one-hot, the new value's ordinal
  position, the signed step along the ordered value set; all zero for a whole
  genotype, gene -1), its outcome (val_bpb gain over
  the best in units of sigma, squashed), its status, the fraction of the budget used,
  and whether it became the best."""
  n_values = max(1, len(genotype_lib.GENES[gene].values) - 1)
  row = np.zeros(HISTORY_DIM, np.float32)
  if gene >= 0:  # -1: a whole genotype, not one edit
    row[gene] = 1.0
  base = genotype_lib.N_GENES
  row[base] = new_value / n_values
  row[base + 1] = (new_value - old_value) / n_values
  row[base + 2] = math.tanh(delta_sigmas / 3.0) if math.isfinite(delta_sigmas) else -1.0
  row[base + 3] = min(max(budget_fraction, 0.0), 1.0)
  row[base + 4] = float(became_best)
  row[base + 5 + ledger.STATUSES.index(status)] = 1.0
  return row


def build_observation(best: genotype_lib.Genotype, history: list[np.ndarray], history_len: int,
                      trials: int, since_improvement: int, best_bpb: float,
                      space: SearchSpace) -> policy.Observation:
  """The agents' view of the search: `history` holds the rows of past trials, oldest
  first; the last `history_len` are kept."""
  rows = np.zeros((history_len, HISTORY_DIM), np.float32)
  mask = np.zeros(history_len, bool)
  recent = history[-history_len:]
  if recent:
    rows[:len(recent)] = np.stack(recent)
    mask[:len(recent)] = True
  globals_ = np.array([math.log1p(trials) / 5.0, math.log1p(since_improvement) / 5.0,
                       best_bpb / 8.0], np.float32)
  return policy.Observation(
      genome=genotype_lib.encode(best), history=rows, history_mask=mask, globals=globals_,
      edit_mask=genotype_lib.edit_mask(best, space.max_params, space.max_step_flops))


def best_of(obs: policy.Observation) -> tuple[dict, float]:
  """(best genotype, its val_bpb) as `build_observation` wrote them."""
  return genotype_lib.decode(np.asarray(obs.genome)), float(obs.globals[2]) * 8.0


class RandomAgent:
  """A uniformly random valid edit of the current best."""

  kind = 'random'

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)

  def propose(self, obs: policy.Observation, key=None) -> Proposal:
    valid = np.argwhere(np.asarray(obs.edit_mask))
    gene, value = valid[self.rng.integers(len(valid))]
    return Proposal(int(gene), int(value), log_prob=-math.log(len(valid)))

  def observe(self, obs, proposal, reward, next_obs, outcome=None) -> dict:
    return {}

  def state_dict(self) -> tuple[Any, dict]:
    return {}, {'rng': self.rng.bit_generator.state}

  def load_state_dict(self, arrays, meta: dict) -> None:
    self.rng.bit_generator.state = meta['rng']


class RandomGlobalAgent(RandomAgent):
  """Classic random search: a uniformly random valid genotype of the whole space."""

  kind = 'random_global'

  def __init__(self, seed: int, space: SearchSpace):
    super().__init__(seed)
    self.space = space

  def propose(self, obs: policy.Observation, key=None) -> Proposal:
    genotype = genotype_lib.random_genotype(self.rng, self.space.max_params,
                                            self.space.max_step_flops)
    return Proposal(-1, -1, genotype=genotype)


def _fitness(bpb: Optional[float]) -> float:
  return bpb if bpb is not None and math.isfinite(bpb) else math.inf


class EvolutionAgent(RandomAgent):
  """Regularized evolution (Real et al. 2019, "Regularized Evolution for Image
  Classifier Architecture Search"), as ask-and-tell over the search's trials.

  The population is the last `population` trials (genotype, val_bpb; a crash scores
  +inf). While it is filling, each child is a random valid edit of the search's best
  (the baseline at first), so the population starts around the baseline as every
  agent here does; then the parent is the best of `tournament` members drawn without
  replacement, and the child one random valid edit of it. The oldest member dies."""

  kind = 'evolution'

  def __init__(self, seed: int, space: SearchSpace, population: int, tournament: int):
    if not 1 <= tournament <= population:
      raise ValueError(f'agent.evolution.tournament={tournament} must be in '
                       f'[1, agent.evolution.population={population}]')
    super().__init__(seed)
    self.space, self.size, self.tournament = space, population, tournament
    self.population: list[tuple[dict, float]] = []   # oldest first

  def propose(self, obs: policy.Observation, key=None) -> Proposal:
    if len(self.population) < self.size:
      parent = best_of(obs)[0]
    else:
      drawn = self.rng.choice(len(self.population), self.tournament, replace=False)
      parent = min((self.population[i] for i in drawn), key=lambda member: member[1])[0]
    gene, value = genotype_lib.random_edit(self.rng, parent, self.space.max_params,
                                           self.space.max_step_flops)
    return Proposal(-1, -1, genotype=genotype_lib.apply_edit(parent, gene, value))

  def observe(self, obs, proposal, reward, next_obs, outcome=None) -> dict:
    self.population.append((dict(outcome.genotype), _fitness(outcome.bpb)))
    self.population = self.population[-self.size:]
    return {}

  def state_dict(self) -> tuple[Any, dict]:
    arrays, meta = super().state_dict()
    members = [[g, None if math.isinf(f) else f] for g, f in self.population]
    return arrays, dict(meta, population=members)

  def load_state_dict(self, arrays, meta: dict) -> None:
    super().load_state_dict(arrays, meta)
    self.population = [(genotype_lib.make(g), _fitness(f)) for g, f in meta['population']]


class PPOAgent:
  """An actor-critic over edits, updated by PPO every `update_every` trials on the
  continuing stream of (observation, edit, reward)."""

  kind = 'ppo'

  def __init__(self, agent_config, history_len: int, seed: int):
    self.update_every = agent_config.update_every
    per_minibatch, rest = divmod(self.update_every, agent_config.ppo.minibatches)
    if rest or per_minibatch < 2:
      # Advantages are normalised per minibatch: one transition would give zero signal.
      raise ValueError(f'agent.update_every={self.update_every} must be a multiple of '
                       f'agent.ppo.minibatches={agent_config.ppo.minibatches}, at least 2 each')
    self.policy_config = policy.PolicyConfig(
        genome_dim=genotype_lib.GENOME_DIM, history_dim=HISTORY_DIM, globals_dim=GLOBALS_DIM,
        n_genes=genotype_lib.N_GENES, max_values=genotype_lib.MAX_VALUES,
        history_len=history_len, hidden=agent_config.hidden, num_heads=agent_config.num_heads)
    self.ppo_config = ppo.PPOConfig(**agent_config.ppo.to_dict())
    model = policy.ActorCritic(self.policy_config, rngs=nnx.Rngs(seed))
    self.graphdef, self.params = nnx.split(model, nnx.Param)
    self.tx = ppo.make_optimizer(self.ppo_config)
    self.opt_state = self.tx.init(self.params)
    self.key = jax.random.key(seed)
    self.buffer = self._empty_buffer()
    self.buffered = 0   # transitions in the buffer since the last update
    self._act = jax.jit(self._act_fn)
    self._critic = jax.jit(self._critic_fn)
    self._update = ppo.make_update(self.graphdef, self.tx, self.ppo_config)
    self.updates = 0

  def _outputs(self, params, obs):
    batched = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], obs)
    return nnx.merge(self.graphdef, params)(batched), batched.edit_mask

  def _act_fn(self, params, obs, key):
    outputs, edit_mask = self._outputs(params, obs)
    gene, value, log_prob = policy.sample(key, outputs, edit_mask)
    return gene[0], value[0], log_prob[0], outputs[2][0]

  def _critic_fn(self, params, obs):
    outputs, _ = self._outputs(params, obs)
    return outputs[2][0]

  def propose(self, obs: policy.Observation, key=None) -> Proposal:
    if key is None:
      self.key, key = jax.random.split(self.key)
    gene, value, log_prob, critic = self._act(self.params, obs, key)
    return Proposal(int(gene), int(value), float(log_prob), float(critic))

  def _empty_buffer(self) -> ppo.Rollout:
    """A fixed-size rollout (update_every transitions), filled in place."""
    n, c = self.update_every, self.policy_config
    obs = policy.Observation(
        genome=np.zeros((n, c.genome_dim), np.float32),
        history=np.zeros((n, c.history_len, c.history_dim), np.float32),
        history_mask=np.zeros((n, c.history_len), bool),
        globals=np.zeros((n, c.globals_dim), np.float32),
        edit_mask=np.zeros((n, c.n_genes, c.max_values), bool))
    return ppo.Rollout(obs=obs, gene=np.zeros(n, np.int32), value_index=np.zeros(n, np.int32),
                       log_prob=np.zeros(n, np.float32), critic=np.zeros(n, np.float32),
                       reward=np.zeros(n, np.float32))

  def observe(self, obs, proposal: Proposal, reward: float, next_obs, outcome=None) -> dict:
    i, b = self.buffered, self.buffer
    for field, value in zip(b.obs, obs):
      field[i] = value
    b.gene[i], b.value_index[i] = proposal.gene, proposal.value
    b.log_prob[i], b.critic[i], b.reward[i] = proposal.log_prob, proposal.critic, reward
    self.buffered += 1
    if self.buffered < self.update_every:
      return {}
    last_critic = self._critic(self.params, next_obs)
    self.key, key = jax.random.split(self.key)
    self.params, self.opt_state, metrics = self._update(
        self.params, self.opt_state, self.buffer, last_critic, key)
    self.buffer, self.buffered = self._empty_buffer(), 0
    self.updates += 1
    return {k: float(v) for k, v in metrics.items()}

  def state_dict(self) -> tuple[Any, dict]:
    """(arrays, meta): everything needed to continue exactly."""
    arrays = {'params': nnx.to_pure_dict(self.params), 'opt_state': self.opt_state,
              'key': jax.random.key_data(self.key), 'buffer': self.buffer}
    return arrays, {'buffered': self.buffered, 'updates': self.updates}

  def load_policy(self, arrays) -> None:
    """Starts from the policy (parameters only) of another search's checkpoint."""
    nnx.replace_by_pure_dict(self.params, arrays['params'])

  def load_state_dict(self, arrays, meta: dict) -> None:
    nnx.replace_by_pure_dict(self.params, arrays['params'])
    self.opt_state = arrays['opt_state']
    self.key = jax.random.wrap_key_data(arrays['key'])
    self.buffer = jax.tree_util.tree_map(np.array, arrays['buffer'])
    self.buffered, self.updates = meta['buffered'], meta['updates']


KINDS = ('ppo', 'random', 'random_global', 'evolution', 'tpe', 'cmaes')


def make(agent_config, history_len: int, seed: int, space: SearchSpace = SearchSpace(),
         workdir: str = ''):
  """The agent named by `agent_config.kind`; Optuna's keep their study in `workdir`."""
  kind = agent_config.kind
  if kind == 'ppo':
    return PPOAgent(agent_config, history_len, seed)
  if kind == 'random':
    return RandomAgent(seed)
  if kind == 'random_global':
    return RandomGlobalAgent(seed, space)
  if kind == 'evolution':
    return EvolutionAgent(seed, space, agent_config.evolution.population,
                          agent_config.evolution.tournament)
  if kind in ('tpe', 'cmaes'):
    from third_party import optuna_agents  # Optuna is a development requirement only.
    return optuna_agents.OptunaAgent(kind, seed, workdir)
  raise ValueError(f'agent.kind={kind!r} not in {KINDS}')

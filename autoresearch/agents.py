"""Proposers of the next trial, behind one interface, and the view of the search they see.

Every agent sees the same `SearchView`: the current best genotype and its val_bpb, σ,
a few counters, the raw outcomes of the last trials (`HistoryEntry`), and the mask of
valid edits of the best. It proposes either one edit (gene index, value index) of the
best or, for the agents that search the space by themselves, a whole genotype
(`Proposal.genotype`). After the trial it is told the reward and the outcome (the
genotype's val_bpb, or the self-evaluator's prediction for an aborted trial; None for a
crash). A learning agent turns the view into its own features (`ppo_agent.py`), so the
search's checkpoint holds raw outcomes, not one policy's encoding.

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
from typing import Any, Optional, Protocol

import numpy as np

from autoresearch import genotype as genotype_lib


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
  max_params: int
  max_step_flops: float


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
  """One past proposal as it happened (JSON-able: the checkpoint stores these)."""
  gene: int               # the edited gene's index; -1 for a whole genotype
  old_value: int          # its value index in the parent; -1 for a whole genotype
  new_value: int          # its value index in the candidate; -1 for a whole genotype
  status: str             # 'keep', 'discard', 'crash' or 'aborted'
  bpb: Optional[float]    # the outcome's bpb (see Outcome); None without a score
  best_before: float      # the best val_bpb the proposal was made against
  sigma: float            # σ of val_bpb at the time, bpb
  budget_fraction: float  # training seconds / budget
  became_best: bool

  @property
  def gain_sigmas(self) -> float:
    """(best before − bpb) / σ; −inf without a score."""
    return (self.best_before - self.bpb) / self.sigma if self.bpb is not None else -math.inf

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SearchView:
  """What every agent sees before it proposes."""
  best_genotype: dict
  best_bpb: float                   # val_bpb of the best (a mean over its runs)
  sigma: float                      # σ of val_bpb, bpb
  trials: int                       # ledger rows so far
  since_improvement: int            # proposals since the best last changed
  history: tuple                    # HistoryEntry of the last trials, oldest first
  edit_mask: np.ndarray             # bool (N_GENES, MAX_VALUES): valid edits of the best
  space: SearchSpace
  baseline_bpb: float = math.nan    # val_bpb of the baseline (the mean of its noise runs)


class Agent(Protocol):
  """A proposer of trials. `state_dict` gives (a pytree of arrays for Orbax, JSON-able
  metadata): everything needed to continue exactly after `load_state_dict`."""
  kind: str

  def propose(self, view: SearchView) -> Proposal: ...

  def observe(self, view: SearchView, proposal: Proposal, reward: float,
              next_view: SearchView, outcome: Outcome) -> dict: ...

  def state_dict(self) -> tuple[Any, dict]: ...

  def load_state_dict(self, arrays, meta: dict) -> None: ...


class RandomAgent:
  """A uniformly random valid edit of the current best."""

  kind = 'random'

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)

  def propose(self, view: SearchView) -> Proposal:
    valid = np.argwhere(view.edit_mask)
    gene, value = valid[self.rng.integers(len(valid))]
    return Proposal(int(gene), int(value), log_prob=-math.log(len(valid)))

  def observe(self, view, proposal, reward, next_view, outcome) -> dict:
    return {}

  def state_dict(self) -> tuple[Any, dict]:
    return {}, {'rng': self.rng.bit_generator.state}

  def load_state_dict(self, arrays, meta: dict) -> None:
    self.rng.bit_generator.state = meta['rng']


class RandomGlobalAgent(RandomAgent):
  """Classic random search: a uniformly random valid genotype of the whole space."""

  kind = 'random_global'

  def propose(self, view: SearchView) -> Proposal:
    genotype = genotype_lib.random_genotype(self.rng, view.space.max_params,
                                            view.space.max_step_flops)
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

  def __init__(self, seed: int, population: int, tournament: int):
    if not 1 <= tournament <= population:
      raise ValueError(f'agent.evolution.tournament={tournament} must be in '
                       f'[1, agent.evolution.population={population}]')
    super().__init__(seed)
    self.size, self.tournament = population, tournament
    self.population: list[tuple[dict, float]] = []   # oldest first

  def propose(self, view: SearchView) -> Proposal:
    if len(self.population) < self.size:
      parent = view.best_genotype
    else:
      drawn = self.rng.choice(len(self.population), self.tournament, replace=False)
      parent = min((self.population[i] for i in drawn), key=lambda member: member[1])[0]
    gene, value = genotype_lib.random_edit(self.rng, parent, view.space.max_params,
                                           view.space.max_step_flops)
    return Proposal(-1, -1, genotype=genotype_lib.apply_edit(parent, gene, value))

  def observe(self, view, proposal, reward, next_view, outcome) -> dict:
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


KINDS = ('ppo', 'random', 'random_global', 'evolution', 'tpe', 'cmaes')


def make(agent_config, seed: int, workdir: str = '') -> Agent:
  """The agent named by `agent_config.kind`; Optuna's keep their study in `workdir`."""
  kind = agent_config.kind
  if kind == 'ppo':
    from autoresearch import ppo_agent  # JAX and Flax only for the learning agent.
    return ppo_agent.PPOAgent(agent_config, seed)
  if kind == 'random':
    return RandomAgent(seed)
  if kind == 'random_global':
    return RandomGlobalAgent(seed)
  if kind == 'evolution':
    return EvolutionAgent(seed, agent_config.evolution.population,
                          agent_config.evolution.tournament)
  if kind in ('tpe', 'cmaes'):
    from third_party import optuna_agents  # Optuna is a development requirement only.
    return optuna_agents.OptunaAgent(kind, seed, workdir)
  raise ValueError(f'agent.kind={kind!r} not in {KINDS}')

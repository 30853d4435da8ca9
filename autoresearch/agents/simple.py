"""The agents that draw at random: edits of the best, the whole space, and regularized
evolution. They draw only valid genotypes (within the parameter and step-FLOPs caps)."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from autoresearch.agents.api import Proposal, SearchView
from autoresearch.space import genotype as genotype_lib


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

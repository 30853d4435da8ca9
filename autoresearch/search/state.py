"""What the search keeps between rounds, and the parts of one round.

`SearchState` is checkpointed as a whole (with the agent's state); a `Candidate` is a
proposal made concrete; an `Attempt` is a candidate trained, with its re-run if the
keep rule asked for one; `RoundStart` is what the round's proposals were made against.
The config rules of `config.search` live here too: they are checked before anything is
built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from autoresearch.agents.api import Proposal
from autoresearch.trial.config import ConfigError
from autoresearch.trial.results import TrialResult
from autoresearch.views import outputs


@dataclasses.dataclass
class SearchState:
  """Everything the search needs to continue (checkpointed as a whole with the agent)."""
  trials: int = 0                 # ledger rows written
  proposals: int = 0              # edits proposed by the agent
  best_genotype: dict = dataclasses.field(default_factory=dict)
  best_bpb: float = math.inf
  best_runs: int = 0             # runs whose mean is best_bpb
  sigma: float = 0.0              # pooled σ of val_bpb (keep_rule.pooled), bits/byte
  sigma_dof: int = 0              # its degrees of freedom
  baseline_bpbs: list = dataclasses.field(default_factory=list)
  repeats: dict = dataclasses.field(default_factory=dict)  # genotype id -> val_bpb of each run
  history: list = dataclasses.field(default_factory=list)   # api.HistoryEntry as JSON
  since_improvement: int = 0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, meta: dict) -> 'SearchState':
    return cls(**meta)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A proposal made concrete: the genotype to train and how it differs from the best."""
  proposal: Proposal
  genotype: dict
  description: str
  old_value: int          # the edited gene's value index in the parent; -1: whole genotype


@dataclasses.dataclass
class Attempt:
  """One candidate of a round, trained: its first run, its re-run (the next seed) when
  the first fell inside the noise band and the ledger had room, and its watcher."""
  candidate: Candidate
  watch: Any                          # early_stop.Evaluator, or None
  first: TrialResult
  second: Optional[TrialResult] = None
  no_room: bool = False               # inside the noise band; max_trials left no row for a re-run

  @property
  def results(self) -> list[TrialResult]:
    return [self.first] + ([self.second] if self.second is not None else [])


@dataclasses.dataclass(frozen=True)
class RoundStart:
  """The best as it stood when the round's proposals were made."""
  best_bpb: float
  reference: Any                      # calibration.Reference of the best, or None


def check_config(config) -> None:
  """Raises ConfigError naming a `config.search` or `config.output` field whose value
  cannot work (the trial's own: `TrialConfig.from_config`)."""
  check_search_config(config.search)
  outputs.check_output_config(config.output)


def check_search_config(search) -> None:
  """Raises ConfigError naming a `config.search` field whose value cannot work."""
  problems = []
  if search.noise_repeats < 2:
    problems.append(f'search.noise_repeats={search.noise_repeats}: σ needs at least 2 runs')
  if not 0.0 < search.keep_alpha < 1.0:
    problems.append(f'search.keep_alpha={search.keep_alpha}: a probability in (0, 1)')
  if not search.min_sigma >= 0.0:
    problems.append(f'search.min_sigma={search.min_sigma}: bits/byte, at least 0')
  if not search.reward_clip > 0.0:
    problems.append(f'search.reward_clip={search.reward_clip}: must be positive')
  if search.max_trials < 0:
    problems.append(f'search.max_trials={search.max_trials}: 0 (forever) or more')
  if problems:
    raise ConfigError('; '.join(problems))

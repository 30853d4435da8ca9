"""The interface between the search and its agents: the view of the search they see,
what they propose, what they are told, and the protocol they follow.

Every agent sees the same `SearchView`: the current best genotype and its val_bpb, σ,
a few counters, the raw outcomes of the last trials (`HistoryEntry`), and the mask of
valid edits of the best. It proposes either one edit (gene index, value index) of the
best or, for the agents that search the space by themselves, a whole genotype
(`Proposal.genotype`). After the trial it is told the reward and the outcome (the
genotype's val_bpb, or the self-evaluator's prediction for an aborted trial; None for a
crash). A learning agent turns the view into its own features (`ppo/features.py`), so
the search's checkpoint holds raw outcomes, not one policy's encoding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Protocol

import numpy as np


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

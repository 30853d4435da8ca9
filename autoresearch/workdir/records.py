"""One record schema: the ledger row the search writes and the report, the replay and
the benchmarks read (`trials.jsonl`, one JSON object a line; `results.tsv` is derived).

A row is what one trial measured (it extends `results.TrialResult`) plus what the
search made of it: the decision (a closed set of statuses), the best and σ after it,
the reward, and for the two runs of a candidate inside the noise band `rerun_of` (on
the second run: the trial number of the first) and `mean_bpb` (on both: the two-run
mean that decided). `budget_seconds` is the training budget the trial ran under.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from autoresearch.trial.results import TrialResult


STATUSES = ('keep', 'discard', 'crash', 'aborted')
AGENT_BASELINE = 'baseline'   # the agent name of the baseline's noise runs


@dataclasses.dataclass(kw_only=True)
class TrialRecord(TrialResult):
  """One ledger row: what the trial measured (TrialResult's fields; `status` here is the
  search's decision, one of STATUSES) and what the search made of it. Bits per byte and
  seconds."""
  trial: int                      # 1-based row number in the workdir
  agent: str                      # the agent kind, or 'baseline' for the noise runs
  description: str                # the edit, e.g. 'd_model 128 -> 192'
  best_bpb: float                 # the best val_bpb after this row
  sigma: float                    # σ of val_bpb the keep rule used
  budget_seconds: float           # training seconds of the trial's budget
  mean_bpb: Optional[float] = None        # the two-run mean of a re-run pair
  rerun_of: Optional[int] = None          # on a re-run: the trial number of the first run
  reward: Optional[float] = None
  log_prob: Optional[float] = None
  critic: Optional[float] = None
  edit: Optional[list] = None             # [gene index, value index]; -1s: a whole genotype
  agent_metrics: dict = dataclasses.field(default_factory=dict)  # the agent's update, if any
  predictions: list = dataclasses.field(default_factory=list)    # the evaluator's, in order
  progress_at_stop: Optional[float] = None  # train seconds / budget

  def __post_init__(self):
    if self.status not in STATUSES:
      raise ValueError(f'status {self.status!r} not in {STATUSES}')

  @classmethod
  def from_result(cls, result: TrialResult, **search_fields) -> 'TrialRecord':
    """A row from what the trial measured and what the search decided (`status`
    replaces the trial's own 'ok')."""
    measured = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                if f.name not in search_fields}
    return cls(**measured, **search_fields)

  @classmethod
  def from_dict(cls, row: dict[str, Any]) -> 'TrialRecord':
    """A row of trials.jsonl; unknown keys are an error (a row of another schema)."""
    unknown = set(row) - _FIELDS
    if unknown:
      raise ValueError(f'trial row {row.get("trial")}: unknown fields {sorted(unknown)}')
    return cls(**row)

  @property
  def is_baseline(self) -> bool:
    return self.agent == AGENT_BASELINE

  @property
  def scored(self) -> bool:
    """Trained to the end with a finite val_bpb."""
    return self.status in ('keep', 'discard') and finite(self.val_bpb)

  @property
  def outcome_bpb(self) -> Optional[float]:
    """The bpb the search judged this row by: the two-run mean of a re-run pair, the
    val_bpb, or the prediction of an aborted trial."""
    if self.status == 'aborted':
      return self.predicted_bpb if finite(self.predicted_bpb) else None
    if finite(self.mean_bpb):
      return self.mean_bpb
    return self.val_bpb if finite(self.val_bpb) else None


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

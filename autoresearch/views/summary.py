"""The figures of a search's ledger: its edits (re-run pairs merged), baseline, best,
time and headline. Read-only: the report and the benchmarks build on these.

Conventions:

* The baseline rows (agent 'baseline') come first; their mean val_bpb is the starting
  best. sigma is the σ the search recorded with its last row (`records.TrialRecord`).
* An *edit* is one proposal of the agent. A proposal that fell inside the noise band is
  trained twice: two ledger rows, the second with `rerun_of` set. Both rows are
  plotted, but the pair counts as one edit, whose bpb is the two-run mean.
* The best is the last row's `best_bpb`; the best genotype is that of the last 'keep'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from autoresearch.workdir import io as workdir_io, ledger as ledger_lib
from autoresearch.workdir.records import TrialRecord


HEADLINE_KEYS = ('trials', 'best_val_bpb', 'baseline_val_bpb', 'improvement_bpb',
                 'improvement_sigmas', 'kept', 'aborted_percent', 'crashed_percent',
                 'trials_per_hour')
TIME_PARTS = ('compile', 'train', 'eval', 'other')


def number(value) -> Optional[float]:
  """A finite float, or None (a missing score, NaN or inf all read as 'no score')."""
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return float(value)
  return None


@dataclasses.dataclass
class Edit:
  """One proposal of the agent: one ledger row, or two for a re-run pair."""
  trial: int            # the first row's trial number
  description: str
  status: str
  bpb: Optional[float]  # val_bpb, the two-run mean after a re-run, or the predicted bpb
  best_before: Optional[float]
  best_after: Optional[float]
  reward: Optional[float]
  runs: int = 1

  @property
  def gene(self) -> str:
    return self.description.split()[0] if self.description.split() else '?'


def load(workdir: str) -> list[TrialRecord]:
  """The complete records of `workdir/trials.jsonl`; a clear error when there are none."""
  path = workdir_io.path(workdir, 'trials.jsonl')
  if not path.is_file():
    raise FileNotFoundError(f'no trials.jsonl in workdir {workdir!r}: has a search run there?')
  records = ledger_lib.read_records(path)
  if not records:
    raise ValueError(f'trials.jsonl in workdir {workdir!r} holds no complete trial yet')
  return records


def baseline_stats(records: list[TrialRecord]) -> tuple[float, float]:
  """(mean val_bpb of the baseline rows, the σ of the last row): what the search used."""
  bpbs = [r.val_bpb for r in records if r.is_baseline and number(r.val_bpb) is not None]
  return (float(np.mean(bpbs)) if bpbs else math.nan), records[-1].sigma


def best_bpb(records: list[TrialRecord]) -> float:
  """The best after the last trial: its `best_bpb`, else the lowest kept val_bpb."""
  for r in reversed(records):
    best = number(r.best_bpb)
    if best is not None:
      return best
  kept = [number(r.val_bpb) for r in records if r.status == 'keep']
  kept = [k for k in kept if k is not None]
  return min(kept) if kept else math.nan


def edits(records: list[TrialRecord]) -> list[Edit]:
  """The agent's proposals in order, re-run pairs merged (see the module docstring)."""
  out: list[Edit] = []
  previous_best = None
  for r in records:
    best_after = number(r.best_bpb)
    if r.is_baseline:
      pass
    elif r.rerun_of is not None and out and out[-1].trial == r.rerun_of:
      edit = out[-1]
      edit.runs, edit.status, edit.best_after = 2, r.status, best_after
      edit.bpb = r.outcome_bpb
    else:
      out.append(Edit(trial=r.trial, description=r.description, status=r.status,
                      bpb=r.outcome_bpb, best_before=previous_best, best_after=best_after,
                      reward=number(r.reward)))
    if best_after is not None:
      previous_best = best_after
  return out


def kept_gain(edit: Edit) -> Optional[float]:
  """best before − the kept bpb (what became the best: the two-run mean after a re-run)."""
  bpb = edit.best_after if edit.best_after is not None else edit.bpb
  if edit.best_before is None or bpb is None:
    return None
  return edit.best_before - bpb


def time_totals(records: list[TrialRecord]) -> dict[str, float]:
  """Seconds per part of the trials. 'other' is a trial's time outside compile, train
  and eval (setup, data)."""
  totals = dict.fromkeys(TIME_PARTS, 0.0)
  for r in records:
    parts = {p: number(getattr(r, f'{p}_seconds')) or 0.0 for p in ('compile', 'train', 'eval')}
    total = number(r.total_seconds) or 0.0
    parts['other'] = max(total - parts['compile'] - parts['train'] - parts['eval'], 0.0)
    for part, seconds in parts.items():
      totals[part] += seconds
  return totals


def headline(records: list[TrialRecord]) -> dict[str, Any]:
  """The headline figures (keys `HEADLINE_KEYS`): `kept` counts the agent's kept edits
  (a re-run pair once, the baseline rows not at all); the percentages are of all trials;
  `trials_per_hour` is per hour of trial time (start-up and the time between trials are
  not counted)."""
  n = len(records)
  baseline, sigma = baseline_stats(records)
  best = best_bpb(records)
  wall_hours = sum(time_totals(records).values()) / 3600
  count = lambda status: sum(r.status == status for r in records)
  return {
      'trials': n,
      'best_val_bpb': best,
      'baseline_val_bpb': baseline,
      'improvement_bpb': baseline - best,
      'improvement_sigmas': (baseline - best) / sigma,
      'kept': sum(e.status == 'keep' for e in edits(records)),
      'aborted_percent': 100.0 * count('aborted') / n,
      'crashed_percent': 100.0 * count('crash') / n,
      'trials_per_hour': n / wall_hours if wall_hours > 0 else math.nan,
  }


def format_headline(figures: dict[str, Any]) -> str:
  """The headline as greppable `key: value` lines."""
  lines = []
  for key in HEADLINE_KEYS:
    value = figures[key]
    if isinstance(value, int):
      text = str(value)
    elif key.endswith(('percent', 'per_hour', 'sigmas')):
      text = f'{value:.2f}'
    else:
      text = f'{value:.6f}'
    lines.append(f'{key}: {text}')
  return '\n'.join(lines)

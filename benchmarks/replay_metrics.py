"""What benchmarks/evaluator_replay.py measures per stopping method, and its table.

* speedup: total wall seconds without the method / with it (trials per hour x).
* false kills: of the *winners* (the searched trials whose recorded val_bpb beat the best
  of the unstopped search when it ran them: one set, the same denominator for every
  method), those the method stopped; with the Wilson score interval's 95% upper bound
  (Wilson, 1927), which says how much a small count can hide (0 of 19 is still up to 17%).
* calibration (methods that predict): coverage of the predicted central 90% interval and
  the share of |z| > 2, over every calibrated prediction made on a trial whose recording
  has a final (stopped ones too, up to their stop); MAE of the prediction at 10%, 25% and
  50% of the budget; and the z of the prediction each stop was made on (where the
  recording has the stopped trial's final), the decisions the calibration is for.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np


PREDICTION_POINTS = (0.1, 0.25, 0.5)   # fractions of the budget where the MAE is measured
Z90 = 1.6448536269514722               # the central 90% interval of a Gaussian: |z| <= Z90
Z95 = 1.959963984540054                # two-sided 95%: the Wilson bound's z
MAX_FALSE_KILL_RATE = 0.05             # the constraint of the "fastest within" summary lines


def wilson_upper(kills: int, n: int, z: float = Z95) -> float:
  """Upper end of the Wilson score interval of a rate kills / n (two-sided, z = 1.96 for
  95%); 1 when n = 0 (no winner: the rate is not constrained at all)."""
  if n <= 0:
    return 1.0
  if not 0 <= kills <= n:
    raise ValueError(f'kills={kills} must be within [0, n={n}]')
  p, z2 = kills / n, z * z
  centre = (p + z2 / (2 * n)) / (1 + z2 / n)
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
  return min(1.0, centre + half)


@dataclasses.dataclass
class Metrics:
  """What one method did on one or more searches (sums and lists: files pool by addition)."""
  seconds_without: float = 0.0
  seconds_with: float = 0.0     # the trials' own seconds with the method
  method_seconds: float = 0.0   # measured time in the method's own code
  searched: int = 0
  aborted: int = 0
  better: int = 0               # winners: beat the best of the unstopped search at the time
  killed_better: int = 0        # winners the method stopped
  new_bests: int = 0
  errors: dict = dataclasses.field(
      default_factory=lambda: {p: [] for p in PREDICTION_POINTS})
  z_scores: list = dataclasses.field(default_factory=list)   # (final - mean) / std
  stop_z: list = dataclasses.field(default_factory=list)     # z of the prediction that stopped

  def __add__(self, other: 'Metrics') -> 'Metrics':
    sums = {f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self) if f.name != 'errors'}
    return Metrics(**sums, errors={p: self.errors[p] + other.errors[p] for p in self.errors})

  @property
  def speedup(self) -> float:
    spent = self.seconds_with + self.method_seconds
    return self.seconds_without / spent if spent else 1.0

  @property
  def false_kill_rate(self) -> float:
    return self.killed_better / self.better if self.better else 0.0   # 0/0 counts as 0

  @property
  def false_kill_upper95(self) -> float:
    return wilson_upper(self.killed_better, self.better)

  @property
  def aborted_fraction(self) -> float:
    return self.aborted / self.searched if self.searched else 0.0

  def mae(self, point: float) -> Optional[float]:
    return float(np.mean(self.errors[point])) if self.errors[point] else None

  @property
  def coverage90(self) -> Optional[float]:
    """Share of calibrated predictions whose 90% interval holds the recorded final."""
    z = np.abs(self.z_scores)
    return float(np.mean(z <= Z90)) if z.size else None

  @property
  def beyond_2sigma(self) -> Optional[float]:
    z = np.abs(self.z_scores)
    return float(np.mean(z > 2.0)) if z.size else None


def best_within(rows: list[tuple[str, Metrics]], prefix: str) -> Optional[tuple]:
  """(label, metrics) of the fastest row whose label starts with `prefix`, that stopped
  some trial, and whose false-kill rate is at most MAX_FALSE_KILL_RATE; or None."""
  allowed = [(label, m) for label, m in rows if label.startswith(prefix) and m.aborted
             and m.false_kill_rate <= MAX_FALSE_KILL_RATE]
  return max(allowed, key=lambda row: row[1].speedup, default=None)


def _format(value: Optional[float], spec: str) -> str:
  return '-' if value is None else format(value, spec)


def table(rows: list[tuple[str, Metrics]]) -> list[str]:
  """The results table, one line per method."""
  width = max(len(label) for label, _ in rows)
  maes = ''.join(f'  MAE@{100 * p:.0f}%' for p in PREDICTION_POINTS)
  header = (f'{"agent/pruner":<{width}}  speedup  false-kill (n/winners)  upper95  '
            f'aborted %{maes}  cover90  |z|>2  new bests  method s')
  lines = [header, '-' * len(header)]
  for label, m in rows:
    kills = f'{m.false_kill_rate:.3f} ({m.killed_better}/{m.better})'
    errors = ''.join(f'  {_format(m.mae(p), "7.4f"):>{len(f"MAE@{100 * p:.0f}%")}}'
                     for p in PREDICTION_POINTS)
    lines.append(f'{label:<{width}}  {m.speedup:7.3f}  {kills:>22}  '
                 f'{m.false_kill_upper95:7.3f}  {100 * m.aborted_fraction:9.1f}{errors}  '
                 f'{_format(m.coverage90, "7.3f"):>7}  {_format(m.beyond_2sigma, "5.3f"):>5}  '
                 f'{m.new_bests:9d}  {m.method_seconds:8.1f}')
  return lines


def summary(label: str, m: Metrics) -> str:
  """One line: a row's speedup, false kills with their bound, and calibration."""
  line = (f'{label}: speedup {m.speedup:.3f}, false kills {m.killed_better}/{m.better} '
          f'(rate {m.false_kill_rate:.3f}, upper95 {m.false_kill_upper95:.3f}), '
          f'aborted {100 * m.aborted_fraction:.1f}%')
  if m.coverage90 is not None:
    line += (f', coverage90 {m.coverage90:.3f} (|z|>2 {m.beyond_2sigma:.3f}, '
             f'{len(m.z_scores)} predictions)')
  if m.stop_z:
    z = np.asarray(m.stop_z)
    line += (f'; at its {len(z)} stops of trials with a recorded final: |z|>2 '
             f'{np.mean(np.abs(z) > 2):.3f}, mean z {np.mean(z):+.2f} (> 0: worse than predicted)')
  return line

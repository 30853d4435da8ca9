"""The noise-aware keep rule and the reward: pure functions, one implementation for the
search, the report and the evaluator's replay.

* **σ of val_bpb** is pooled over every group of repeated runs of one genotype the
  search has (the baseline's noise runs, each re-run pair, ...): σ̂² = Σ_g Σ_i (x_gi −
  x̄_g)² / ν with ν = Σ_g (n_g − 1) degrees of freedom, floored at `min_sigma`.
* **The test.** A candidate whose val_bpb is the mean of n_c runs beats the best (a
  mean of n_b runs) when gain = best − candidate > t_{1−a, ν} · σ̂ · √(1/n_b + 1/n_c):
  a one-sided t test, so σ̂'s own uncertainty (few runs, few ν) and the best's own
  error both widen the threshold.
* **Two stages, one false-keep rate.** A neutral edit should be kept with probability
  at most `alpha` (the search's `keep_alpha`). The first run spends a = alpha ·
  FIRST_RUN_SHARE: a clear gain keeps at once; a gain inside the band (0 < gain ≤
  threshold) re-runs the candidate with the next seed and the two-run mean is tested
  with the rest, a = alpha · (1 − FIRST_RUN_SHARE); otherwise discard. By the union
  bound the two stages keep a neutral edit with probability ≤ alpha; a small first
  share leaves most of alpha to the better-measured second stage, where the power is
  (`benchmarks/keep_rule.py` measures both rates against a fake trial of known σ).
  A re-run that did not score discards the candidate.
* **Reward** of an edit: what it adds to the best in σ̂, log1p(clip((best_before −
  bpb)/σ̂, 0, reward_clip)); 0 for a worse edit, a crash, or an aborted trial without a
  prediction. One formula with the edits the PPO agent imagines (agents/reward.py says
  why this one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats

from autoresearch.agents import reward as reward_lib


FIRST_RUN_SHARE = 0.2   # share of the false-keep rate spent on keeping after one run


@dataclasses.dataclass(frozen=True)
class Noise:
  """The pooled estimate of σ of val_bpb."""
  sigma: float   # bits/byte, at least the floor
  dof: int       # degrees of freedom ν behind it (0: no repeat yet)


def pooled(groups: Iterable[Sequence[float]], min_sigma: float) -> Noise:
  """σ̂ pooled over groups of repeated runs of one genotype each (module docstring)."""
  squares, dof = 0.0, 0
  for runs in groups:
    if len(runs) > 1:
      squares += float(np.sum((np.asarray(runs) - np.mean(runs)) ** 2))
      dof += len(runs) - 1
  spread = math.sqrt(squares / dof) if dof else 0.0
  return Noise(max(spread, min_sigma), dof)


def threshold(noise: Noise, best_runs: int, candidate_runs: int, alpha: float) -> float:
  """The gain (bits/byte) a mean of `candidate_runs` runs must exceed over a best that is
  a mean of `best_runs` runs, at one-sided level `alpha`; inf without degrees of freedom."""
  if noise.dof < 1:
    return math.inf
  scale = noise.sigma * math.sqrt(1.0 / best_runs + 1.0 / candidate_runs)
  return float(stats.t.ppf(1.0 - alpha, noise.dof)) * scale


def first_run(gain: float, noise: Noise, best_runs: int, alpha: float) -> str:
  """'keep', 'rerun' or 'discard' for a first run that gained `gain` bpb over the best."""
  if gain > threshold(noise, best_runs, 1, alpha * FIRST_RUN_SHARE):
    return 'keep'
  if gain > 0:
    return 'rerun'
  return 'discard'


def decide(best: float, best_runs: int, first: float, second: Optional[float], rerun: bool,
           noise: Noise, alpha: float) -> tuple[str, float]:
  """(status 'keep' or 'discard', the bpb that decided) of a scored candidate against
  `best`. `rerun`: the candidate was re-run, with val_bpb `second` (None: it did not
  score). Without a re-run the first run decides alone, at the first stage's level."""
  if not rerun:
    keep = first_run(best - first, noise, best_runs, alpha) == 'keep'
    return ('keep' if keep else 'discard'), first
  if second is None:
    return 'discard', first
  mean = (first + second) / 2
  keep = best - mean > threshold(noise, best_runs, 2, alpha * (1.0 - FIRST_RUN_SHARE))
  return ('keep' if keep else 'discard'), mean


def reward(best_before: float, bpb: Optional[float], sigma_bpb: float, clip: float) -> float:
  """The agent's reward of one edit (agents/reward.py), on Python floats."""
  if bpb is None or not math.isfinite(bpb):
    return 0.0
  return float(reward_lib.improvement(best_before, bpb, sigma_bpb, clip))

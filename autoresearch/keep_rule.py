"""The noise-aware keep rule and the reward: pure functions, one implementation for the
search, the report and the evaluator's replay.

* **σ** of val_bpb: the standard deviation (ddof 1) of the baseline's repeated runs,
  floored at `min_sigma` (a floor also when fewer than two runs exist).
* **First run** of a candidate, gain = best − val_bpb: gain > keep_sigmas·σ keeps it;
  0 < gain ≤ keep_sigmas·σ (inside the noise band) re-runs it with a new seed;
  otherwise discard.
* **After a re-run** the mean m of the two runs decides: keep when best − m >
  keep_sigmas·σ/√2 (the standard error of a two-run mean). A re-run that did not score
  discards the candidate.
* **Reward** of an edit: clip((best_before − bpb)/σ, ±reward_clip); a trial without a
  score (crash, or an aborted trial without a prediction) gets −reward_clip.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def sigma(bpbs: Sequence[float], min_sigma: float) -> float:
  """σ of val_bpb from repeated runs of one genotype, at least `min_sigma`."""
  spread = float(np.std(bpbs, ddof=1)) if len(bpbs) > 1 else 0.0
  return max(spread, min_sigma)


def first_run(gain: float, sigma_bpb: float, keep_sigmas: float) -> str:
  """'keep', 'rerun' or 'discard' for a first run that gained `gain` bpb over the best."""
  if gain > keep_sigmas * sigma_bpb:
    return 'keep'
  if gain > 0:
    return 'rerun'
  return 'discard'


def decide(best: float, first: float, second: Optional[float], rerun: bool,
           sigma_bpb: float, keep_sigmas: float) -> tuple[str, float]:
  """(status 'keep' or 'discard', the bpb that decided) of a scored candidate against
  `best`. `rerun`: the candidate was re-run, with val_bpb `second` (None: it did not
  score). Without a re-run the first run decides alone."""
  if not rerun:
    return ('keep' if best - first > keep_sigmas * sigma_bpb else 'discard'), first
  if second is None:
    return 'discard', first
  mean = (first + second) / 2
  keep = best - mean > keep_sigmas * sigma_bpb / math.sqrt(2)
  return ('keep' if keep else 'discard'), mean


def reward(best_before: float, bpb: Optional[float], sigma_bpb: float, clip: float) -> float:
  """The agent's reward of one edit (see the module docstring)."""
  if bpb is None or not math.isfinite(bpb):
    return -clip
  return float(np.clip((best_before - bpb) / sigma_bpb, -clip, clip))

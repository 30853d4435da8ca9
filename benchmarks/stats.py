"""Small statistics for comparisons over paired seeds: bootstrap confidence intervals of a
mean and a sign-flip permutation test of a paired difference."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Interval(NamedTuple):
  mean: float
  low: float    # lower end of the confidence interval
  high: float   # upper end
  n: int        # samples behind it


def bootstrap_mean(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                   seed: int = 0) -> Interval:
  """The mean and its percentile-bootstrap `level` interval."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError('bootstrap_mean of no values')
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
  tail = (1.0 - level) / 2
  return Interval(float(x.mean()), float(np.quantile(means, tail)),
                  float(np.quantile(means, 1.0 - tail)), int(x.size))


def sign_flip_p(differences: Sequence[float], resamples: int = 20_000, seed: int = 0) -> float:
  """Two-sided p-value that paired differences have mean 0: the share of random sign
  flips whose |mean| is at least the observed one (with the observed one counted)."""
  d = np.asarray(differences, np.float64)
  rng = np.random.default_rng(seed)
  signs = rng.choice((-1.0, 1.0), (resamples, d.size))
  flipped = np.abs((signs * d).mean(axis=1))
  return float((1 + np.sum(flipped >= abs(d.mean()) - 1e-15)) / (resamples + 1))

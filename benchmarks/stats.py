"""Small statistics for comparisons over paired seeds: bootstrap and t confidence
intervals of a mean, and sign-flip permutation tests of a paired difference (sampled,
and exact over every sign pattern for the few seeds where sampling is coarse)."""

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


EXACT_MAX_N = 20   # up to this many differences the sign-flip test enumerates all 2^n patterns


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
  """The mean and its Student-t `level` interval (n >= 2)."""
  from scipy import stats as scipy_stats
  x = np.asarray(values, np.float64)
  if x.size < 2:
    raise ValueError('t_interval needs at least two values')
  half = scipy_stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
  return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), int(x.size))


def exact_sign_flip_p(differences: Sequence[float]) -> float:
  """Two-sided p of a zero mean: the share of all 2^n sign patterns whose |mean| is at
  least the observed one (n <= EXACT_MAX_N; the smallest p it can give is 2 / 2^n)."""
  d = np.asarray(differences, np.float64)
  if not 0 < d.size <= EXACT_MAX_N:
    raise ValueError(f'exact_sign_flip_p takes 1 to {EXACT_MAX_N} differences, got {d.size}')
  observed, total, at_least = abs(d.mean()), 2 ** d.size, 0
  bits = np.arange(d.size)
  for start in range(0, total, 2 ** 16):
    patterns = np.arange(start, min(start + 2 ** 16, total))[:, None]
    signs = 1.0 - 2.0 * ((patterns >> bits) & 1)
    at_least += int(np.sum(np.abs(signs @ d) / d.size >= observed - 1e-12))
  return at_least / total

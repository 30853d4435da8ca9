"""The paired-seed statistics: t intervals and the exact sign-flip test."""

import itertools

import numpy as np
import pytest

from benchmarks import stats


def test_the_exact_sign_flip_p_counts_every_sign_pattern():
  assert stats.exact_sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8   # all of one sign
  assert stats.exact_sign_flip_p([-1.0, 1.0]) == 1.0
  assert stats.exact_sign_flip_p([-3.0, 1.0, 1.0, 1.0]) == 1.0


def test_the_exact_sign_flip_p_matches_a_plain_enumeration():
  d = np.random.default_rng(3).normal(0.3, 1.0, 9)
  means = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product((1, -1), repeat=9)]
  expected = sum(m >= abs(d.mean()) - 1e-12 for m in means) / 2 ** 9
  assert stats.exact_sign_flip_p(d) == expected


def test_the_exact_sign_flip_p_reaches_its_floor_at_twenty_seeds_of_one_sign():
  assert stats.exact_sign_flip_p(np.linspace(0.1, 2.0, 20)) == 2 / 2 ** 20
  with pytest.raises(ValueError, match='1 to 20'):
    stats.exact_sign_flip_p(np.ones(21))


def test_the_t_interval_is_the_mean_plus_or_minus_t_times_the_standard_error():
  ci = stats.t_interval([1.0, 2.0, 3.0, 4.0])
  half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2   # t(0.975, 3)
  assert (ci.mean, ci.n) == (2.5, 4)
  assert ci.low == pytest.approx(2.5 - half) and ci.high == pytest.approx(2.5 + half)

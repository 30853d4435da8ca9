"""The keep rule and the reward: the pure functions the search, report and replay share."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from autoresearch.agents import reward as reward_lib
from autoresearch.search import keep_rule
from benchmarks import keep_rule as keep_rule_benchmark
from configs import default


def test_sigma_is_pooled_over_groups_of_repeats_with_a_floor():
  noise = keep_rule.pooled([[2.0, 2.02, 2.04], [3.0, 3.02]], 0.001)
  # Sums of squares 0.0008 and 0.0002 over 2 + 1 degrees of freedom.
  assert noise.dof == 3 and noise.sigma == pytest.approx(math.sqrt(0.001 / 3))
  assert keep_rule.pooled([[2.0, 2.0001]], 0.002) == keep_rule.Noise(0.002, 1)
  assert keep_rule.pooled([[2.0], [3.0]], 0.002) == keep_rule.Noise(0.002, 0)


def test_the_threshold_is_a_t_quantile_of_the_difference_of_two_means():
  noise = keep_rule.Noise(0.01, 4)
  expected = stats.t.ppf(0.99, 4) * 0.01 * math.sqrt(1 / 5 + 1 / 2)
  assert keep_rule.threshold(noise, 5, 2, 0.01) == pytest.approx(expected)
  assert keep_rule.threshold(keep_rule.Noise(0.01, 0), 5, 1, 0.05) == math.inf
  # More degrees of freedom and a better-measured best lower the bar.
  assert keep_rule.threshold(keep_rule.Noise(0.01, 40), 5, 1, 0.01) < \
      keep_rule.threshold(noise, 5, 1, 0.01) < keep_rule.threshold(noise, 1, 1, 0.01)


def test_first_run_keeps_reruns_or_discards():
  noise = keep_rule.Noise(0.01, 4)
  bar = keep_rule.threshold(noise, 5, 1, 0.05 * keep_rule.FIRST_RUN_SHARE)
  assert keep_rule.first_run(bar + 1e-6, noise, 5, 0.05) == 'keep'
  assert keep_rule.first_run(bar, noise, 5, 0.05) == 'rerun'   # not above the bar
  assert keep_rule.first_run(1e-6, noise, 5, 0.05) == 'rerun'
  assert keep_rule.first_run(0.0, noise, 5, 0.05) == 'discard'
  assert keep_rule.first_run(-0.001, noise, 5, 0.05) == 'discard'


def test_a_rerun_pair_is_judged_by_its_mean_at_the_second_stage_level():
  noise = keep_rule.Noise(0.01, 4)
  bar = keep_rule.threshold(noise, 5, 2, 0.05 * (1 - keep_rule.FIRST_RUN_SHARE))
  assert keep_rule.decide(2.0, 5, 2.0 - bar, 2.0 - bar - 0.002, True, noise, 0.05) == (
      'keep', pytest.approx(2.0 - bar - 0.001))
  assert keep_rule.decide(2.0, 5, 2.0 - bar, 2.0 - bar + 0.002, True, noise, 0.05)[0] == 'discard'
  assert keep_rule.decide(2.0, 5, 1.985, None, True, noise, 0.05) == ('discard', 1.985)
  assert keep_rule.decide(2.0, 5, 1.9, None, False, noise, 0.05) == ('keep', 1.9)
  assert keep_rule.decide(2.0, 5, 1.995, None, False, noise, 0.05) == ('discard', 1.995)


def test_the_default_rule_keeps_at_its_nominal_rate_and_finds_a_3_sigma_gain():
  # The benchmark's Monte Carlo at fewer samples; the bounds allow 3 standard errors.
  search, n = default.get_config().search, 3000
  fk = keep_rule_benchmark.keep_rate(0.0, n, 11, search.noise_repeats, search.keep_alpha)
  power = keep_rule_benchmark.keep_rate(3.0, n, 12, search.noise_repeats, search.keep_alpha)
  assert fk <= search.keep_alpha + 3 * np.sqrt(search.keep_alpha * (1 - search.keep_alpha) / n)
  assert power >= 0.8 - 3 * np.sqrt(0.8 * 0.2 / n)
  assert fk > 0.01   # a rule that never keeps would pass the first bound alone


def test_reward_is_the_improvement_in_sigmas_squashed_and_zero_without_one():
  assert keep_rule.reward(2.0, 1.99, 0.01, 5.0) == pytest.approx(math.log(2.0))
  assert keep_rule.reward(2.0, 2.03, 0.01, 5.0) == 0.0    # worse: adds nothing to the best
  assert keep_rule.reward(2.0, 1.0, 0.01, 5.0) == pytest.approx(math.log(6.0))   # capped
  assert keep_rule.reward(2.0, None, 0.01, 5.0) == 0.0
  assert keep_rule.reward(2.0, math.nan, 0.01, 5.0) == 0.0


def test_the_reward_on_float32_arrays_under_jit_is_the_search_s_reward():
  # The formula the imagined edits of dyna.py are paid by (agents/reward.py), on arrays.
  best = np.float32([2.0, 2.0, 2.0, 2.0, 2.0, 1.98])
  bpb = np.float32([1.99, 2.03, 1.0, np.nan, 1.9999, 1.975])
  sigma, clip = np.float32(0.01), 5.0
  got = jax.jit(lambda b, x: reward_lib.improvement(b, x, sigma, clip, xp=jnp))(best, bpb)
  want = [keep_rule.reward(float(b), None if np.isnan(x) else float(x), float(sigma), clip)
          for b, x in zip(best, bpb)]
  assert 0 in want and len(set(want)) == 5   # worse and crashed; small, large and capped
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)

"""The keep rule and the reward: the pure functions the search, report and replay share."""

import math

import pytest

from autoresearch import keep_rule


def test_sigma_is_the_sample_std_with_a_floor():
  assert keep_rule.sigma([2.0, 2.02, 2.04], 0.001) == pytest.approx(0.02)
  assert keep_rule.sigma([2.0, 2.0001], 0.002) == 0.002
  assert keep_rule.sigma([2.0], 0.002) == 0.002   # one run: no spread yet


def test_first_run_keeps_reruns_or_discards():
  assert keep_rule.first_run(gain=0.05, sigma_bpb=0.01, keep_sigmas=2.0) == 'keep'
  assert keep_rule.first_run(gain=0.015, sigma_bpb=0.01, keep_sigmas=2.0) == 'rerun'
  assert keep_rule.first_run(gain=0.02, sigma_bpb=0.01, keep_sigmas=2.0) == 'rerun'  # not >
  assert keep_rule.first_run(gain=-0.001, sigma_bpb=0.01, keep_sigmas=2.0) == 'discard'
  assert keep_rule.first_run(gain=0.0, sigma_bpb=0.01, keep_sigmas=2.0) == 'discard'


def test_a_rerun_pair_is_judged_by_its_mean_against_the_standard_error():
  # Threshold after a re-run: 2 * 0.01 / sqrt(2) = 0.01414.
  assert keep_rule.decide(2.0, 1.985, 1.983, True, 0.01, 2.0) == ('keep', pytest.approx(1.984))
  assert keep_rule.decide(2.0, 1.985, 1.99, True, 0.01, 2.0) == ('discard', pytest.approx(1.9875))
  assert keep_rule.decide(2.0, 1.985, None, True, 0.01, 2.0) == ('discard', 1.985)  # re-run crashed
  assert keep_rule.decide(2.0, 1.97, None, False, 0.01, 2.0) == ('keep', 1.97)
  assert keep_rule.decide(2.0, 1.985, None, False, 0.01, 2.0) == ('discard', 1.985)


def test_reward_is_the_gain_in_sigmas_clipped_with_a_floor_for_crashes():
  assert keep_rule.reward(2.0, 1.99, 0.01, 5.0) == pytest.approx(1.0)
  assert keep_rule.reward(2.0, 2.03, 0.01, 5.0) == pytest.approx(-3.0)
  assert keep_rule.reward(2.0, 1.0, 0.01, 5.0) == 5.0
  assert keep_rule.reward(2.0, None, 0.01, 5.0) == -5.0
  assert keep_rule.reward(2.0, math.nan, 0.01, 5.0) == -5.0

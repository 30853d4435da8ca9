"""The self-evaluator: the calibration and the stop decisions."""

import dataclasses
import json
import math

import numpy as np
import pytest

from autoresearch.early_stop import evaluator, power_law
from autoresearch.early_stop.calibration import Calibration
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.trial.results import LossReading
from autoresearch.workdir.records import TrialRecord
from configs import tiny


BUDGET = 60.0   # seconds of the synthetic trials
READINGS = 600  # readings per synthetic trial


def _config(**overrides) -> EvaluatorConfig:
  """The evaluator config the tiny config (i.e. the default) sets, with `overrides`."""
  return dataclasses.replace(EvaluatorConfig.from_config(tiny.get_config()),
                             **overrides)


def _curve(a, b, c, rng, noise=0.05, budget=BUDGET, readings=READINGS):
  """A ledger loss_curve [[seconds, step, loss]] of L(p) = c + a·p^(-b) plus noise."""
  progress = np.linspace(0.01, 1.0, readings)
  loss = c + a * progress ** -b + rng.normal(0.0, noise, readings)
  return [[float(p * budget), i + 1, float(x)] for i, (p, x) in enumerate(zip(progress, loss))]


def _final_bpb(a, c, rng):
  """The synthetic truth: finals are biased w.r.t. the extrapolated train loss (bits)."""
  return 0.9 * (a + c) / math.log(2) + 0.1 + rng.normal(0.0, 0.003)


def _record(a, b, c, rng, status='discard', noise=0.05):
  return TrialRecord(trial=1, agent='random', status=status, description='edit',
                     genotype_id='g', genotype={}, best_bpb=2.0, sigma=0.004,
                     budget_seconds=BUDGET, val_bpb=_final_bpb(a, c, rng), train_seconds=BUDGET,
                     loss_curve=_curve(a, b, c, rng, noise))


def _random_record(rng, noise=0.05):
  return _record(rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.7), rng.uniform(1.0, 2.2), rng,
                 noise=noise)


@pytest.fixture(scope='module')
def calibrated():
  rng = np.random.default_rng(0)
  calibration = Calibration.create(_config())
  for _ in range(20):
    assert calibration.update(_random_record(rng))
  return calibration


def _watch(calibration, best_bpb, **overrides):
  cfg = dataclasses.replace(calibration.cfg, **overrides)
  calibration = dataclasses.replace(calibration, cfg=cfg, _models={})
  return evaluator.Evaluator(cfg, calibration, best_bpb, keep_margin_bpb=0.004,
                             budget_seconds=BUDGET)


# --- the calibration ------------------------------------------------------------------------

def test_calibration_learns_the_bias_and_improves_with_more_trials():
  # Little reading noise, so that the bias, not the extrapolation's scatter, dominates.
  rng = np.random.default_rng(2)
  held_out = [_random_record(rng, noise=0.01) for _ in range(10)]
  cfg = _config()
  checkpoint = 0.3

  def errors(calibration):
    errs, stds = [], []
    for record in held_out:
      feats = power_law.trial_features(record.loss_curve, BUDGET,
                                       calibration.checkpoints, calibration.fit_start)
      k = int(np.argmin(np.abs(calibration.checkpoints - checkpoint)))
      mean, std = calibration.predict(feats[k], checkpoint)
      errs.append(abs(mean - record.val_bpb))
      stds.append(std)
    return np.mean(errs), np.mean(stds)

  calibration = Calibration.create(cfg)
  uncalibrated_mae, uncalibrated_std = errors(calibration)
  for _ in range(3):
    calibration.update(_random_record(rng, noise=0.01))
  few_mae, few_std = errors(calibration)
  for _ in range(37):
    calibration.update(_random_record(rng, noise=0.01))
  many_mae, many_std = errors(calibration)
  assert uncalibrated_std == few_std == cfg.prior_std   # below min_history: the wide prior
  assert uncalibrated_mae > 0.1                          # the bias is real ...
  assert many_mae < few_mae < uncalibrated_mae           # ... and is learned
  assert many_mae < 0.02


# Coverage of the calibrated std, with n and the band fixed before the test was run: the
# fraction of held-out |error| <= std should be 0.683 (Gaussian errors). Its spread is
# the binomial's over N_HELD_OUT trials, sqrt(0.683 * 0.317 / 400) = 0.023, and the
# std's own from N_CALIBRATION trials' residuals (relative error about 1/sqrt(2 * 200) =
# 0.05, moving the coverage by 2 * phi(1) = 0.48 per unit of log std: 0.024); together
# 0.034, and the band is 3 of them either side.
N_CALIBRATION, N_HELD_OUT, COVERAGE_BAND = 200, 400, (0.683 - 0.10, 0.683 + 0.10)


def test_the_calibrated_std_covers_68_percent_of_held_out_errors():
  rng = np.random.default_rng(13)   # records no other test draws
  calibration = Calibration.create(_config())
  for _ in range(N_CALIBRATION):
    assert calibration.update(_random_record(rng))
  k = int(np.argmin(np.abs(calibration.checkpoints - 0.3)))
  covered = []
  for _ in range(N_HELD_OUT):
    record = _random_record(rng)
    feats = power_law.trial_features(record.loss_curve, BUDGET, calibration.checkpoints,
                                     calibration.fit_start)
    mean, std = calibration.predict(feats[k], float(calibration.checkpoints[k]))
    covered.append(abs(mean - record.val_bpb) <= std)
  assert COVERAGE_BAND[0] <= np.mean(covered) <= COVERAGE_BAND[1], np.mean(covered)


def test_calibration_ignores_crashed_aborted_and_unscored_records():
  rng = np.random.default_rng(3)
  calibration = Calibration.create(_config())
  assert not calibration.update(_record(0.5, 0.5, 1.5, rng, status='crash'))
  assert not calibration.update(_record(0.5, 0.5, 1.5, rng, status='aborted'))
  assert not calibration.update(dataclasses.replace(_record(0.5, 0.5, 1.5, rng), val_bpb=None))
  assert not calibration.update(dataclasses.replace(_record(0.5, 0.5, 1.5, rng), loss_curve=[]))
  assert calibration.update(_record(0.5, 0.5, 1.5, rng, status='keep'))
  assert calibration.num_trials == 1


def test_calibration_keeps_only_the_newest_max_history_trials():
  rng = np.random.default_rng(4)
  cfg = _config(max_history=3)
  calibration = Calibration.create(cfg)
  for i in range(5):
    calibration.add(np.full((len(calibration.checkpoints), 2), 1.0 + i), float(i))
  assert calibration.targets.tolist() == [2.0, 3.0, 4.0]
  assert calibration.update(_random_record(rng)) and calibration.num_trials == 3


def test_calibration_state_round_trips_through_json_and_arrays(calibrated):
  rng = np.random.default_rng(12)
  calibrated = dataclasses.replace(calibrated, _models={})   # add() makes new arrays
  reference = calibrated.reference([_random_record(rng)], 2.5)
  calibrated.update(_random_record(rng), reference)
  state = calibrated.to_dict()
  state['features'][0][0] = [None, None]   # a checkpoint the curve never reached
  for restored_state in (json.loads(json.dumps(state)),
                         {k: np.asarray(v, dtype=float) if isinstance(v, list) else v
                          for k, v in state.items()}):
    restored = Calibration.from_dict(restored_state, calibrated.cfg)
    np.testing.assert_array_equal(restored.checkpoints, calibrated.checkpoints)
    np.testing.assert_allclose(restored.features[1:], calibrated.features[1:], atol=1e-6)
    assert np.isnan(restored.features[0, 0]).all()
    np.testing.assert_array_equal(restored.targets, calibrated.targets)
    np.testing.assert_allclose(restored.ref_features, calibrated.ref_features, atol=1e-6)
    np.testing.assert_array_equal(restored.ref_targets, calibrated.ref_targets)
    assert np.isfinite(restored.ref_features[-1]).all() and restored.ref_targets[-1] == 2.5
    features = calibrated.features[-1, 6]
    assert restored.predict(features, 0.35, reference) == pytest.approx(
        calibrated.predict(features, 0.35, reference), abs=1e-5)
    assert restored.fit_start == calibrated.fit_start
    assert restored.to_dict() == json.loads(json.dumps(state))


# --- the decisions --------------------------------------------------------------------------

BEST = dict(a=0.5, b=0.5, c=1.2)


def _best_bpb():
  return 0.9 * (BEST['a'] + BEST['c']) / math.log(2) + 0.1


@pytest.mark.parametrize('min_progress', [0.2, 0.4])
def test_a_hopeless_trial_is_stopped_after_min_progress_and_never_before(calibrated,
                                                                         min_progress):
  watch = _watch(calibrated, _best_bpb(), min_progress=min_progress)
  curve = _curve(0.5, 0.5, 2.0, np.random.default_rng(5))
  stop, progress = evaluator.replay(watch, curve, BUDGET)
  assert stop is not None and stop.status == 'aborted'
  assert min_progress <= progress < min_progress + 0.05
  assert stop.predicted_bpb > _best_bpb() + 0.5
  assert 'P(beats best' in stop.reason
  assert watch.last_prediction.progress == pytest.approx(progress)
  # It did predict before min_progress (for the progress bar) without stopping.
  assert watch.predictions[0].progress < min_progress


@pytest.mark.parametrize('seed', range(5))
def test_a_trial_headed_below_the_best_is_never_stopped(calibrated, seed):
  watch = _watch(calibrated, _best_bpb())
  stop, progress = evaluator.replay(watch, _curve(0.5, 0.5, 1.1, np.random.default_rng(seed)),
                                    BUDGET)
  assert stop is None and progress == pytest.approx(1.0)
  assert watch.last_prediction.mean_bpb < _best_bpb()
  assert watch.last_prediction.p_beat > 0.5


def test_uncalibrated_only_overwhelmingly_hopeless_trials_are_stopped():
  empty = Calibration.create(_config())
  rng = np.random.default_rng(6)
  worse = _watch(empty, _best_bpb())
  assert evaluator.replay(worse, _curve(0.5, 0.5, 1.5, rng), BUDGET)[0] is None  # +0.4 bits
  hopeless = _watch(empty, _best_bpb())
  assert evaluator.replay(hopeless, _curve(0.5, 0.5, 2.5, rng), BUDGET)[0] is not None


def test_without_a_best_nothing_is_stopped_on_a_prediction(calibrated):
  watch = _watch(calibrated, best_bpb=None)
  assert evaluator.replay(watch, _curve(0.5, 0.5, 2.5, np.random.default_rng(7)),
                          BUDGET)[0] is None


def test_divergence_and_non_finite_losses_stop_at_once(calibrated):
  curve = _curve(0.5, 0.5, 1.2, np.random.default_rng(8))
  jump = 100   # progress ~0.17: before min_progress, which divergence ignores
  diverging = curve[:jump] + [[s, i, 6.0] for s, i, _ in curve[jump:]]
  stop, progress = evaluator.replay(_watch(calibrated, _best_bpb()), diverging, BUDGET)
  assert stop.status == 'aborted' and stop.predicted_bpb is None
  assert 'diverged' in stop.reason
  # Detected within one half-life of the loss EMA (0.01 of the budget: 0.6 s here).
  jump_progress = diverging[jump][0] / BUDGET
  assert jump_progress <= progress <= jump_progress + calibrated.cfg.smoothing
  for bad in (math.nan, math.inf):
    broken = curve[:jump] + [[curve[jump][0], jump + 1, bad]]
    stop, progress = evaluator.replay(_watch(calibrated, _best_bpb()), broken, BUDGET)
    assert stop.status == 'aborted' and progress == curve[jump][0] / BUDGET
    assert str(bad) in stop.reason


def test_a_disabled_evaluator_never_stops(calibrated):
  watch = _watch(calibrated, _best_bpb(), enabled=False)
  curve = _curve(0.5, 0.5, 2.5, np.random.default_rng(9))
  curve[300][2] = math.nan
  assert evaluator.replay(watch, curve, BUDGET)[0] is None
  assert watch.check_stall(1e9) is None


def _lineage_record(a, b, c, gap, rng):
  """A completed trial whose val_bpb carries a quirk `gap` that its lineage shares."""
  record = _record(a, b, c, rng)
  record.val_bpb += gap
  return record


def test_paired_predictions_cancel_what_a_child_shares_with_the_best():
  rng = np.random.default_rng(10)
  calibration = Calibration.create(_config())
  parent = _lineage_record(0.5, 0.5, 1.6, 0.0, rng)
  reference = calibration.reference([parent], parent.val_bpb)
  for _ in range(20):   # the history: children of a parent without the quirk
    child = _lineage_record(0.5 * math.exp(rng.normal(0, 0.1)), 0.5 + rng.normal(0, 0.03),
                            1.6 + rng.uniform(-0.1, 0.3), 0.0, rng)
    assert calibration.update(child, reference)
  # A new best, out of the history's range, whose lineage is 0.15 bits better on val.
  best = _lineage_record(0.5, 0.5, 1.3, -0.15, rng)
  best_reference = calibration.reference([best], best.val_bpb)
  better = _lineage_record(0.5, 0.5, 1.27, -0.15, rng)
  assert better.val_bpb < best.val_bpb
  paired = evaluator.Evaluator(calibration.cfg, calibration, best.val_bpb, 0.004, BUDGET,
                               reference=best_reference)
  absolute = evaluator.Evaluator(calibration.cfg, calibration, best.val_bpb, 0.004, BUDGET)
  assert evaluator.replay(paired, better.loss_curve, BUDGET)[0] is None
  late = [p for p in paired.predictions if p.progress >= 0.5]
  error = np.mean([p.mean_bpb for p in late]) - better.val_bpb
  assert abs(error) < 3 * np.mean([p.std_bpb for p in late])   # one draw: within 3 std
  # The absolute map, blind to the quirk, kills this better trial.
  stop, _ = evaluator.replay(absolute, better.loss_curve, BUDGET)
  assert stop is not None and stop.predicted_bpb > best.val_bpb + 0.05


def test_a_reference_averages_its_runs_and_needs_a_score():
  rng = np.random.default_rng(11)
  calibration = Calibration.create(_config())
  runs = [_record(0.5, 0.5, 1.5, rng) for _ in range(3)]
  reference = calibration.reference(runs + [dataclasses.replace(runs[0], status='crash')], 2.0)
  np.testing.assert_allclose(reference.features,
                             np.mean([calibration.features_of(r) for r in runs], axis=0))
  assert reference.bpb == 2.0
  assert calibration.reference([dataclasses.replace(runs[0], status='crash')], 2.0) is None
  assert calibration.reference(runs, math.inf) is None


def test_stall_detection(calibrated):
  watch = _watch(calibrated, _best_bpb(), stall_seconds=5.0)
  assert watch.check_stall(4.0) is None
  stop = watch.check_stall(6.0)          # no reading yet: counted from the clock's start
  assert stop.status == 'aborted' and 'stalled' in stop.reason
  watch(LossReading(10.0, 10.0 / BUDGET, 1, 3.0))
  assert watch.check_stall(14.0) is None
  assert watch.check_stall(15.5) is not None
  assert _watch(calibrated, _best_bpb(), stall_seconds=0.0).check_stall(1e9) is None


def test_a_step_slower_than_stall_seconds_stops_the_trial(calibrated):
  watch = _watch(calibrated, _best_bpb())
  assert watch(LossReading(1.0, 1.0 / BUDGET, 1, 5.0)) is None
  assert watch(LossReading(2.0, 2.0 / BUDGET, 2, 4.9)) is None
  stop = watch(LossReading(2.0 + watch.cfg.stall_seconds + 1, 0.5, 3, 4.8))
  assert stop is not None and stop.status == 'aborted' and stop.reason.startswith('stalled')
  assert stop.predicted_bpb is None

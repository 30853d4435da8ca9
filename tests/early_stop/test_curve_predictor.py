"""The learned curve predictor: its encoding, its folder, its training and its use by the
self-evaluator."""

import dataclasses
import math
import os

import numpy as np
import pytest
from flax import nnx

from autoresearch.early_stop import curve_predictor as cp, evaluator
from autoresearch.early_stop.calibration import Calibration
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.workdir.records import TrialRecord
from benchmarks import curve_families, train_curve_predictor
from configs import tiny


def test_curve_bins_average_the_readings_of_each_bin():
  w = cp.BIN_WIDTH
  progress = [0.5 * w, w, 1.5 * w, 3.5 * w, 3.7 * w, 1.0, 2 * w]
  loss = [4.0, 2.0, 1.0, 5.0, math.nan, 0.5, 3.0]
  bins = cp.curve_bins(progress, loss)
  assert bins.shape == (cp.NUM_BINS,)
  # (0, w] holds 0.5w and w; (w, 2w] holds 1.5w and 2w; the NaN reading is skipped.
  assert bins[0] == 3.0 and bins[1] == 2.0 and bins[3] == 5.0 and bins[-1] == 0.5
  assert np.isnan(bins[2]) and np.isnan(bins[4])


def test_the_encoding_sees_only_the_bins_complete_by_now():
  rng = np.random.default_rng(0)
  trial, ref = rng.uniform(1, 3, cp.NUM_BINS), rng.uniform(1, 3, cp.NUM_BINS)
  x, base = cp.encode(trial, ref, np.array([0.25]))
  assert x.shape == (1, cp.INPUT_DIM)
  done = cp.complete_bins(0.25)
  assert done == 10
  assert base[0] == pytest.approx((trial[done - 1] - ref[done - 1]) / cp.LN2, rel=1e-12)
  later_t, later_r = trial.copy(), ref.copy()
  later_t[done:], later_r[done:] = 9.0, -9.0   # what has not happened yet
  assert np.array_equal(cp.encode(later_t, later_r, np.array([0.25]))[0], x)
  # No shared complete bin: no base (the evaluator falls back to the power law).
  assert np.isnan(cp.encode(np.full(cp.NUM_BINS, np.nan), ref, np.array([0.5]))[1][0])


def _model(seed=0):
  return cp.CurveMLP(cp.PredictorConfig(hidden=16, layers=1), nnx.Rngs(seed))


def test_a_saved_predictor_loads_and_predicts_the_same(tmp_path):
  model, cfg = _model(), cp.PredictorConfig(hidden=16, layers=1)
  folder = str(tmp_path / 'predictor')
  cp.save(folder, model, cfg, {'made_by': 'test'})
  loaded = cp.load(folder)
  assert loaded.about['made_by'] == 'test'
  trial, ref = np.linspace(3, 2, cp.NUM_BINS), np.linspace(3.1, 2.2, cp.NUM_BINS)
  expected = cp.Predictor(model, cfg).predict(trial, ref, 0.4)
  assert loaded.predict(trial, ref, 0.4) == pytest.approx(expected, rel=1e-6)
  assert np.all(np.isfinite(expected)) and expected[1] > 0


def test_a_bad_predictor_folder_is_a_clear_error(tmp_path):
  with pytest.raises(cp.PredictorError, match='not a readable curve predictor'):
    cp.load(str(tmp_path / 'missing'))
  folder = str(tmp_path / 'other')
  cfg = cp.PredictorConfig(hidden=16, layers=1)
  cp.save(folder, _model(), cfg, {})
  with open(os.path.join(folder, 'predictor.json')) as f:
    text = f.read().replace(f'"input_dim": {cp.INPUT_DIM}', '"input_dim": 7')
  with open(os.path.join(folder, 'predictor.json'), 'w') as f:
    f.write(text)
  with pytest.raises(cp.PredictorError, match='input_dim 7'):
    cp.load(folder)


def test_the_shipped_predictor_is_small_and_loads():
  folder = cp.resolve('predictors/curve_mlp')
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
             for f in files)
  assert 0 < size < 1_000_000
  predictor = cp.load('predictors/curve_mlp')
  ref = np.linspace(3.0, 2.0, cp.NUM_BINS)
  worse, _ = predictor.predict(ref + 0.3, ref, 0.5)
  better, _ = predictor.predict(ref - 0.3, ref, 0.5)
  assert worse > 0.1 > -0.1 > better   # a curve far above the best's ends above it


def test_synthetic_searches_cover_the_families():
  rng = np.random.default_rng(1)
  bins, finals = curve_families.synthetic_search(rng, 30)
  assert bins.shape == (30, cp.NUM_BINS) and np.all(np.isfinite(finals))
  p = np.linspace(0.01, 1.0, 200)
  t = dict(c=1.0, a=0.5, b=0.5, p0=0.01, p_flat=1.0, flat_rate=1.0, p_div=1.0, tau=0.1,
           e=0.0, w=0.0, drop=0.0)
  plain = curve_families.clean_curve(p, t)
  assert np.all(np.diff(plain) < 0)
  drop = curve_families.clean_curve(p, dict(t, w=0.3, drop=0.2))
  assert drop[-1] == pytest.approx(plain[-1] - 0.2) and np.allclose(drop[p < 0.7], plain[p < 0.7])
  diverged = curve_families.clean_curve(p, dict(t, p_div=0.5, e=0.3))
  assert diverged[-1] > diverged[len(p) // 2] + 1.0
  flat = curve_families.clean_curve(p, dict(t, p_flat=0.3, flat_rate=0.0))
  assert np.ptp(flat[p > 0.3]) == 0.0


def test_training_lowers_the_held_out_nll():
  rng = np.random.default_rng(0)

  def searches(n):
    out = []
    for _ in range(n):
      bins, finals = curve_families.synthetic_search(rng, 12)
      out.append((bins, finals, train_curve_predictor.pairs(finals, np.arange(12))))
    return out

  held = train_curve_predictor.Sampler(searches(4), rng).batch(512)
  untrained = float(train_curve_predictor.nll(_model(), *held))
  model = train_curve_predictor.train([train_curve_predictor.Sampler(searches(20), rng)],
                                      steps=150, batch=128, seed=0)
  assert float(train_curve_predictor.nll(model, *held)) < untrained - 0.5


def _record(curve, bpb, budget=10.0):
  return TrialRecord(trial=1, agent='random', status='discard', description='edit',
                     genotype_id='g', genotype={}, best_bpb=3.0, sigma=0.01,
                     budget_seconds=budget, val_bpb=bpb, loss_curve=curve)


def test_the_evaluator_uses_the_learned_predictor_when_chosen(tmp_path):
  folder = str(tmp_path / 'predictor')
  cp.save(folder, _model(), cp.PredictorConfig(hidden=16, layers=1), {})
  cfg = dataclasses.replace(EvaluatorConfig.from_config(tiny.get_config()),
                            predictor='learned', predictor_path=folder)
  seconds = np.linspace(0.1, 10.0, 100)
  curve = [[float(s), i + 1, float(2.0 + s ** -0.5)] for i, s in enumerate(seconds)]
  calibration = Calibration.create(cfg)
  reference = calibration.reference([_record(curve, 2.9)], 2.9, 10.0)
  assert reference.bins.shape == (cp.NUM_BINS,)
  watch = evaluator.Evaluator(cfg, calibration, 2.9, 0.0, 10.0, reference=reference)
  evaluator.replay(watch, curve, 10.0)
  learned = cp.load(folder)
  last = watch.predictions[-1]
  delta, std = learned.predict(cp.record_bins(curve, 10.0)[:], reference.bins, last.progress)
  assert (last.mean_bpb, last.std_bpb) == pytest.approx((2.9 + delta, max(std, cfg.min_std)))
  assert all(watch.calibrated)   # learnt offline: no history needed
  # Without the best's curve it is the calibrated power law (prior std before history).
  plain = evaluator.Evaluator(cfg, calibration, 2.9, 0.0, 10.0, reference=None)
  evaluator.replay(plain, curve, 10.0)
  assert plain.predictions[-1].std_bpb == cfg.prior_std and not any(plain.calibrated)


def test_an_unknown_predictor_is_refused():
  with pytest.raises(ValueError, match="evaluator.predictor='lstm'"):
    dataclasses.replace(EvaluatorConfig.from_config(tiny.get_config()),
                        predictor='lstm')

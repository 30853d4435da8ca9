"""The learning-curve fit: a noisy power law is recovered, and it compiles once."""

import math

import numpy as np
import pytest

from autoresearch.early_stop import power_law


@pytest.mark.parametrize('a,b,c', [(0.5, 0.5, 1.5), (1.0, 0.3, 1.0), (0.3, 0.8, 2.0),
                                   (2.0, 0.2, 0.8), (0.2, 1.2, 1.2)])
def test_fit_recovers_a_noisy_power_law(a, b, c):
  rng = np.random.default_rng(1)
  progress = np.linspace(0.02, 1.0, 1000)
  loss = c + a * progress ** -b + rng.normal(0, 0.01, 1000)
  fit = power_law.fit_power_law(progress, loss)
  # Tolerances: a and c trade off against each other when b is small; a + c does not.
  assert fit.a == pytest.approx(a, rel=0.1)
  assert fit.b == pytest.approx(b, abs=0.02)
  assert fit.c == pytest.approx(c, abs=0.1)
  assert fit.final == pytest.approx(a + c, abs=0.01)
  # The fit sees means of ~1000/256 readings: their scatter is smaller by its square root.
  assert fit.residual_scale == pytest.approx(0.01 / math.sqrt(1000 / 256), rel=0.3)
  # From the first 30% of the budget only, the extrapolation to p = 1 still lands close.
  early = progress <= 0.3
  partial = power_law.fit_power_law(progress[early], c + a * progress[early] ** -b
                                    + rng.normal(0, 0.01, early.sum()))
  assert partial.final == pytest.approx(a + c, abs=0.04)


def test_fit_compiles_once_for_any_number_of_readings():
  power_law.fit_power_law(np.linspace(0.1, 1, 5), np.linspace(3, 2, 5))
  traces = power_law._TRACES['fit']
  for n in (7, 100, 256, 257, 5000):
    p = np.linspace(0.05, 1.0, n)
    fit = power_law.fit_power_law(p, 1.0 + 0.5 * p ** -0.5)
    assert fit.final == pytest.approx(1.5, abs=0.01)
  assert power_law._TRACES['fit'] == traces


def test_live_features_equal_the_recorded_curve_features():
  # The evaluator (live, reading by reading) and the calibration (recorded curves) must
  # see the same numbers at the same checkpoint.
  progress = np.linspace(0.01, 1.0, 400)
  loss = 1.2 + 0.6 * progress ** -0.4 + np.random.default_rng(3).normal(0, 0.02, 400)
  curve = [[60.0 * p, i + 1, x] for i, (p, x) in enumerate(zip(progress, loss))]
  checkpoints = np.array([0.25, 0.5])
  recorded = power_law.trial_features(curve, 60.0, checkpoints, fit_start=0.25)
  for k, checkpoint in enumerate(checkpoints):
    end = int(np.searchsorted(progress, checkpoint - 1e-9)) + 1
    live = power_law.features_now(progress[:end], loss[:end], fit_start=0.25)
    # One float32 fit alone against a vmapped batch of them: 1e-4 nats is float32 round-off
    # of 24 Levenberg-Marquardt steps, 100x under the seed noise of a final.
    np.testing.assert_allclose(live, recorded[k], rtol=0, atol=1e-4)
  assert power_law.features_now(progress[:4], loss[:4], fit_start=0.25) is None

"""The learning curve of a trial: a power law fitted in JAX, and the features it gives.

    fit = learning_curve.fit_power_law(progress, loss)       # L(p) = c + a·p^(-b), nats
    feats = learning_curve.trial_features(loss_curve, budget, checkpoints, fit_start)

The readings on [fit_start·p, p] (progress p = training seconds / budget), averaged into
at most `MAX_POINTS` runs of consecutive readings (a smoother without an EMA's lag, which
would bend the curve), are fitted with the learning-curve power law L(p) = c + a·p^(-b)
(Domhan et al., IJCAI 2015; Kaplan et al., 2020) in JAX on the CPU: variable projection
over a grid of b (for a fixed b the model is linear in a and c; Golub & Pereyra, 1973),
then Levenberg-Marquardt steps (Levenberg, 1944; Marquardt, 1963) in an unconstrained
space (a, c > 0; 0 < b < 3). Arrays have one padded shape, so it compiles once. A fit's
features, which the self-evaluator calibrates: its value now and its extrapolation to
p = 1. Live and recorded curves give the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


MAX_POINTS = 256          # points per fit (readings averaged down, padded): one shape
MIN_POINTS = 5            # fewer readings than this: no fit
_B_MAX = 3.0              # upper bound of the exponent b
_B_GRID = np.geomspace(0.02, 2.5, 48).astype(np.float32)   # variable-projection grid of b
_LM_STEPS = 24            # Levenberg-Marquardt iterations (fixed: one compiled loop)
_TRACES = {'fit': 0}      # traces of the single fit (tests check it compiles once)


class PowerLawFit(NamedTuple):
  """L(p) = c + a·p^(-b), fitted in nats; residual_scale: RMS misfit of the fitted points
  (the readings, or their run means beyond MAX_POINTS), nats."""
  a: float
  b: float
  c: float
  residual_scale: float

  @property
  def final(self) -> float:
    """The extrapolated loss at the end of the budget (p = 1)."""
    return self.c + self.a


# --- the fit (JAX) --------------------------------------------------------------------

def _unpack(theta):
  return jnp.exp(theta[0]), _B_MAX * jax.nn.sigmoid(theta[1]), jax.nn.softplus(theta[2])


def _fit_arrays(p_N, y_N, mask_N):
  """Least-squares power law on masked padded arrays -> (a, b, c, residual_scale)."""
  w_N = mask_N.astype(jnp.float32)
  p_N = jnp.where(mask_N, p_N, 1.0)   # padding must not reach 0^(-b)
  y_N = jnp.where(mask_N, y_N, 0.0)
  n = jnp.maximum(jnp.sum(w_N), 1.0)

  # Variable projection: for each b on the grid, the best (a, c) in closed form.
  b_G = jnp.asarray(_B_GRID)
  x_GxN = p_N[None, :] ** (-b_G[:, None])
  x_mean_G = jnp.sum(w_N[None, :] * x_GxN, axis=1) / n
  y_mean = jnp.sum(w_N * y_N) / n
  xc_GxN = x_GxN - x_mean_G[:, None]
  cov_G = jnp.sum(w_N[None, :] * xc_GxN * (y_N - y_mean)[None, :], axis=1)
  var_G = jnp.sum(w_N[None, :] * xc_GxN ** 2, axis=1)
  a_G = jnp.maximum(cov_G / jnp.maximum(var_G, 1e-12), 1e-4)   # a > 0: a falling curve
  c_G = jnp.maximum(y_mean - a_G * x_mean_G, 1e-3)
  sse_G = jnp.sum(w_N[None, :] * (c_G[:, None] + a_G[:, None] * x_GxN - y_N[None, :]) ** 2,
                  axis=1)
  g = jnp.argmin(sse_G)
  b0 = b_G[g] / _B_MAX
  theta = jnp.stack([jnp.log(a_G[g]), jnp.log(b0 / (1.0 - b0)),
                     c_G[g] + jnp.log(-jnp.expm1(-c_G[g]))])   # inverse softplus

  def residuals(theta):
    a, b, c = _unpack(theta)
    return w_N * (c + a * p_N ** (-b) - y_N)

  def lm_step(_, carry):
    theta, damping, cost = carry
    r_N = residuals(theta)
    j_Nx3 = jax.jacfwd(residuals)(theta)
    h_3x3 = j_Nx3.T @ j_Nx3
    scale_3 = jnp.diag(h_3x3) + 1e-6 * jnp.trace(h_3x3) + 1e-12
    step = jnp.linalg.solve(h_3x3 + damping * jnp.diag(scale_3), -(j_Nx3.T @ r_N))
    candidate = theta + step
    candidate_cost = jnp.sum(residuals(candidate) ** 2)
    better = candidate_cost < cost   # False for NaN: a failed solve is just rejected
    return (jnp.where(better, candidate, theta), jnp.where(better, damping * 0.3, damping * 4.0),
            jnp.where(better, candidate_cost, cost))

  cost0 = jnp.sum(residuals(theta) ** 2)
  theta, _, cost = jax.lax.fori_loop(0, _LM_STEPS, lm_step, (theta, jnp.float32(1e-2), cost0))
  a, b, c = _unpack(theta)
  return jnp.stack([a, b, c, jnp.sqrt(cost / jnp.maximum(n - 3.0, 1.0))])


def _fit_traced(p_N, y_N, mask_N):
  _TRACES['fit'] += 1   # runs only while tracing
  return _fit_arrays(p_N, y_N, mask_N)


_fit_one = jax.jit(_fit_traced)
_fit_many = jax.jit(jax.vmap(_fit_arrays))


def _on_cpu(*arrays):
  # The fit runs on the host CPU: on an accelerator it would queue behind the trial's
  # dispatched steps and reading it back would stall the training loop.
  cpu = jax.devices('cpu')[0]
  return [jax.device_put(a, cpu) for a in arrays]


def _pad(progress: np.ndarray, loss: np.ndarray):
  """Averages down to at most MAX_POINTS points and pads: (p, y, mask) float32/bool."""
  n = len(progress)
  if n > MAX_POINTS:
    # Means of MAX_POINTS runs of consecutive readings: a smoother without lag.
    starts = np.linspace(0, n, MAX_POINTS, endpoint=False).astype(np.int64)
    counts = np.diff(np.append(starts, n))
    progress = np.add.reduceat(progress, starts) / counts
    loss = np.add.reduceat(loss, starts) / counts
    n = MAX_POINTS
  p, y = np.ones(MAX_POINTS, np.float32), np.zeros(MAX_POINTS, np.float32)
  p[:n], y[:n] = progress, loss
  return p, y, np.arange(MAX_POINTS) < n


def fit_power_law(progress: Sequence[float], loss: Sequence[float]) -> PowerLawFit:
  """Fits L(p) = c + a·p^(-b) (nats) to readings at progress p in (0, 1], on the CPU.

  Any number of readings (at least 3) uses the same compiled function: more than
  MAX_POINTS are averaged in runs of consecutive readings.
  """
  p, y, mask = _pad(np.asarray(progress, np.float32), np.asarray(loss, np.float32))
  return PowerLawFit(*(float(v) for v in np.asarray(_fit_one(*_on_cpu(p, y, mask)))))


# --- features of a curve --------------------------------------------------------------


def _window(progress: np.ndarray, loss: np.ndarray, end: int, fit_start: float):
  """Readings [start, end] that the fit at reading `end` uses, padded; None if too few."""
  if end + 1 < MIN_POINTS:
    return None
  start = int(np.searchsorted(progress[:end + 1], fit_start * progress[end]))
  start = min(start, end + 1 - MIN_POINTS)
  return _pad(progress[start:end + 1].astype(np.float32), loss[start:end + 1].astype(np.float32))


def _features(fit: np.ndarray, progress: float) -> np.ndarray:
  """[loss extrapolated to p = 1, loss now], both from the fit (a, b, c, scale): its value
  now is less noisy than the EMA and does not lag. A fit cannot extrapolate upwards."""
  a, b, c = (float(v) for v in fit[:3])
  now = c + a * progress ** -b
  return np.array([min(max(c + a, 0.0), now), now])


def features_now(progress: Sequence[float], loss: Sequence[float],
                 fit_start: float) -> Optional[np.ndarray]:
  """Features (2,) nats, [extrapolated final loss, fitted loss now], of the readings so far
  (the last one is now), or None with fewer than MIN_POINTS readings."""
  progress, loss = np.asarray(progress), np.asarray(loss)
  window = _window(progress, loss, len(loss) - 1, fit_start)
  if window is None:
    return None
  fit = np.asarray(_fit_one(*_on_cpu(*window)))
  return _features(fit, float(progress[-1]))


def trial_features(loss_curve, budget_seconds: float, checkpoints: np.ndarray,
                   fit_start: float) -> np.ndarray:
  """Features (K, 2) in nats, [extrapolated final loss, fitted loss now], at each of the
  K checkpoints of a recorded `loss_curve` ([[seconds, step, loss], ...]); NaN where the
  curve does not reach a checkpoint. The live evaluator computes the same numbers."""
  out = np.full((len(checkpoints), 2), np.nan)
  curve = np.asarray(loss_curve, np.float64).reshape(-1, 3)
  if len(curve) < MIN_POINTS:
    return out
  progress = curve[:, 0] / budget_seconds
  ends = np.searchsorted(progress, np.asarray(checkpoints) - 1e-9)  # first reading >= cp
  windows = [_window(progress, curve[:, 2], int(end), fit_start) if end < len(progress)
             else None for end in ends]
  # Every checkpoint gets a window (a dummy where there is none): one compiled batch.
  dummy = _pad(np.linspace(0.5, 1.0, MIN_POINTS), np.ones(MIN_POINTS))
  p, y, m = (np.stack(arrays) for arrays in zip(*(w or dummy for w in windows)))
  fits = np.asarray(_fit_many(*_on_cpu(p, y, m)))
  for k, (window, end) in enumerate(zip(windows, ends)):
    if window is not None:
      out[k] = _features(fits[k], float(progress[end]))
  return out


def warm_up() -> None:
  """Compiles the fit outside any trial's clock (once per process)."""
  if _TRACES['fit'] == 0:
    fit_power_law(np.linspace(0.1, 1.0, MIN_POINTS), np.linspace(2.0, 1.0, MIN_POINTS))

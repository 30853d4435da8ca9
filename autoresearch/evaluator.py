"""The self-evaluator: watch a trial's loss, predict its final val_bpb, stop hopeless ones.

    calibration = evaluator.Calibration.create(cfg)                  # in the search state
    reference = calibration.reference([best_record], best_bpb)        # once per new best
    watch = evaluator.Evaluator(cfg, calibration, best_bpb, keep_margin_bpb, budget_seconds,
                                reference=reference)
    result = trial.run(genotype, corpus, trial_cfg, watch=watch)
    calibration.update(result.to_dict(), reference)                   # completed trials

* **Fit.** At every checkpoint (multiples of `check_every` of the budget) the raw loss
  readings on [fit_start·p, p], averaged into at most `MAX_POINTS` runs of consecutive
  readings (a smoother without an EMA's lag, which would bend the curve), are fitted with
  the learning-curve power law L(p) = c + a·p^(-b) (Domhan et al., IJCAI 2015; Kaplan et
  al., 2020) in JAX on the CPU: variable projection over a grid of b (for a fixed b the
  model is linear in a and c; Golub & Pereyra, 1973), then Levenberg-Marquardt steps
  (Levenberg, 1944; Marquardt, 1963) in an unconstrained space (a, c > 0; 0 < b < 3).
  Arrays have one padded shape, so it compiles once. Features: the fit's value now and
  its extrapolation to p = 1.
* **Calibration.** The extrapolated train loss is not the final val_bpb: the LR warmdown
  drops the loss below the constant-LR power law (Hägele et al., 2024) and train is not
  val. Per checkpoint, a ridge regression of the extrapolation's error learns the map
  from the search's completed trials, and its leave-one-out residuals (Allen's PRESS,
  1974) are the prediction's std; before `min_history` trials the std is `prior_std`.
  The regression is *paired* when the best's curve is given: the trial's final minus the
  best's, from the differences of their features at the same progress. An absolute map
  learnt on the history drifts out of range as the best improves and regresses the
  frontier's predictions toward the mean of the (worse) past; the differences stay
  comparable, and what a child shares with its parent (schedule, train/val gap) cancels.
* **Decisions.** Stop at once on a non-finite loss or divergence (the loss EMA, half-life
  `smoothing` of the budget, above `divergence_factor` x its running minimum). From
  `min_progress` on, stop when P(final < best - margin) < `delta` under the Gaussian
  prediction at `confirm` consecutive checks. A reading that comes more than
  `stall_seconds` after the one before (a step that took that long) stops the trial
  too; `check_stall` says the same for a clock reading between steps. A step that never
  returns cannot be stopped from inside the process: the trial's step-FLOPs cap
  (`trial.max_step_fraction`) refuses the slow genotypes before they compile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoresearch import trial

LN2 = math.log(2.0)
MAX_POINTS = 256          # points per fit (readings averaged down, padded): one shape
MIN_POINTS = 5            # fewer readings than this: no fit
_B_MAX = 3.0              # upper bound of the exponent b
_B_GRID = np.geomspace(0.02, 2.5, 48).astype(np.float32)   # variable-projection grid of b
_LM_STEPS = 24            # Levenberg-Marquardt iterations (fixed: one compiled loop)
_TRACES = {'fit': 0}      # traces of the single fit (tests check it compiles once)


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """When and how the evaluator stops a trial (progress = training seconds / budget)."""
  enabled: bool = True            # False: the watcher never stops a trial
  min_progress: float = 0.2       # fraction of the budget before any predicted-bpb stop
  check_every: float = 0.05       # fraction of the budget between fits (the checkpoint grid)
  delta: float = 0.05             # stop when P(final beats best by the margin) < delta ...
  confirm: int = 2                # ... at this many consecutive checks (not on one wild fit)
  smoothing: float = 0.01         # EMA half-life of the training loss, fraction of the budget
  fit_start: float = 0.25         # the fit at progress p uses readings from fit_start·p to p
  divergence_factor: float = 1.5  # smoothed loss above this x its running minimum: stop now
  stall_seconds: float = 30.0     # seconds; no step finished for this long: stop (0 = off)
  min_history: int = 8            # completed trials before the calibrated std is trusted
  prior_std: float = 0.5          # bits/byte; std of a prediction before min_history trials
  min_std: float = 0.003          # bits/byte; floor of a calibrated prediction's std
  ridge: float = 0.01             # bits^2; ridge penalty of the calibration slopes
  max_history: int = 256          # most recent completed trials the calibration keeps


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


class Prediction(NamedTuple):
  """One prediction of the final val_bpb of the running trial."""
  progress: float     # fraction of the budget when it was made
  mean_bpb: float
  std_bpb: float
  p_beat: float       # P(final < best - margin)


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

class _Ema:
  """Debiased EMA of the loss with a half-life in progress units."""

  def __init__(self, half_life: float):
    self.half_life, self.mean, self.weight, self.progress = half_life, 0.0, 0.0, 0.0

  def update(self, progress: float, loss: float) -> float:
    dt = max(progress - self.progress, 0.0)
    self.progress = progress
    keep = 0.5 ** (dt / self.half_life) if self.half_life > 0 else 0.0
    self.mean = keep * self.mean + (1.0 - keep) * loss
    self.weight = keep * self.weight + (1.0 - keep)
    return self.mean / self.weight if self.weight > 0 else loss


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


# --- calibration from history -----------------------------------------------------------

class Reference(NamedTuple):
  """The incumbent a trial is compared with: its features (K, 2) nats and its val_bpb."""
  features: np.ndarray
  bpb: float


def _ok(record: dict) -> bool:
  bpb = record.get('val_bpb')
  return (record.get('status') in ('ok', 'keep', 'discard') and isinstance(bpb, (int, float))
          and math.isfinite(bpb) and bool(record.get('loss_curve')))


def _ridge_fit(x_Nx2: np.ndarray, z_N: np.ndarray, ridge: float):
  """Ridge regression of z on x with a free (unpenalised) intercept."""
  x_mean, z_mean = x_Nx2.mean(axis=0), z_N.mean()
  xc_Nx2 = x_Nx2 - x_mean
  inv_2x2 = np.linalg.inv(xc_Nx2.T @ xc_Nx2 + ridge * np.eye(2))
  return x_mean, z_mean, inv_2x2 @ xc_Nx2.T @ (z_N - z_mean), inv_2x2


def _ridge(x_Nx2: np.ndarray, z_N: np.ndarray, ridge: float,
           groups_N: Optional[np.ndarray] = None):
  """(n, x_mean, z_mean, slope, inverse Gram matrix, RMS out-of-sample residual) of the
  ridge fit of z on x, or None without rows.

  Without groups the residuals are leave-one-out (closed form through the leverages).
  With groups (trials compared with the same reference) they are leave-one-group-out: a
  reference's own noise is shared by its whole group, which leave-one-out cannot see.
  With fewer than 3 groups that noise is assumed as large as a trial's: variance x 2.
  """
  rows = np.all(np.isfinite(x_Nx2), axis=1) & np.isfinite(z_N)
  x_Nx2, z_N = x_Nx2[rows], z_N[rows]
  n = len(z_N)
  if n == 0:
    return None
  x_mean, z_mean, slope_2, inv_2x2 = _ridge_fit(x_Nx2, z_N, ridge)
  xc_Nx2 = x_Nx2 - x_mean
  leverage_N = 1.0 / n + np.einsum('ni,ij,nj->n', xc_Nx2, inv_2x2, xc_Nx2)
  loo_N = (z_N - z_mean - xc_Nx2 @ slope_2) / np.maximum(1.0 - leverage_N, 0.05)
  mse = float(np.mean(loo_N ** 2))
  if groups_N is not None:
    groups_N = groups_N[rows]
    labels = np.unique(groups_N)
    if len(labels) < 3:
      mse *= 2.0
    else:
      out_N = np.empty(n)
      for label in labels:
        held = groups_N == label
        m, zm, s, _ = _ridge_fit(x_Nx2[~held], z_N[~held], ridge)
        out_N[held] = z_N[held] - zm - (x_Nx2[held] - m) @ s
      mse = max(mse, float(np.mean(out_N ** 2)))
  return n, x_mean, z_mean, slope_2, inv_2x2, math.sqrt(mse)


def _nan_to_none(a: np.ndarray) -> list:
  return np.where(np.isfinite(a), a, None).tolist()


@dataclasses.dataclass
class Calibration:
  """Completed trials' features and finals, and the map from features to final val_bpb.

  Two models per checkpoint, both a ridge regression of the error of the plain
  extrapolation (bits) on the features, with out-of-sample residuals as the std:
  * paired (used when the evaluator has a Reference, i.e. the best's curve): the trial's
    final minus the reference's, from the differences of their features. Quirks a child
    shares with its parent (schedule, train/val gap) cancel, and the map stays valid
    as the best improves.
  * absolute: the final from the trial's own features.

  State (to_dict / from_dict, JSON-ready): the checkpoint grid and the fit window the
  features were taken with (they travel with the features, so a config change never
  mixes incompatible features); per trial its features (N, K, 2) nats and
  val_bpb (N,), and its reference's (NaN without one). Decision settings come from `cfg`.
  """
  checkpoints: np.ndarray
  fit_start: float
  features: np.ndarray
  targets: np.ndarray
  ref_features: np.ndarray
  ref_targets: np.ndarray
  cfg: EvaluatorConfig = dataclasses.field(default_factory=EvaluatorConfig)
  _models: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @classmethod
  def create(cls, cfg: EvaluatorConfig) -> 'Calibration':
    """An empty calibration with checkpoints at multiples of cfg.check_every below 1."""
    count = max(int(math.ceil(1.0 / cfg.check_every - 1e-6)) - 1, 1)
    checkpoints = np.round(np.arange(1, count + 1) * cfg.check_every, 6)
    empty = np.zeros((0, count, 2))
    return cls(checkpoints, cfg.fit_start, empty, np.zeros(0), empty.copy(),
               np.zeros(0), cfg)

  @property
  def num_trials(self) -> int:
    return len(self.targets)

  def features_of(self, record: dict, budget_seconds: Optional[float] = None):
    """Features (K, 2) of a completed record, or None if it has no score or curve.
    Progress is seconds / budget_seconds (default: the record's 'budget_seconds', else
    its train_seconds, which a completed trial ends just past the budget)."""
    budget = budget_seconds or record.get('budget_seconds') or record.get('train_seconds')
    if not _ok(record) or not budget:
      return None
    return trial_features(record['loss_curve'], float(budget), self.checkpoints,
                          self.fit_start)

  def reference(self, records: Sequence[dict], bpb: float,
                budget_seconds: Optional[float] = None) -> Optional[Reference]:
    """The Reference of a best genotype from its completed run(s) (features averaged,
    e.g. over the baseline's noise runs) and its val_bpb (e.g. their mean)."""
    feats = [f for f in (self.features_of(r, budget_seconds) for r in records) if f is not None]
    if not feats or not math.isfinite(bpb):
      return None
    return Reference(np.mean(feats, axis=0), float(bpb))

  def update(self, record: dict, reference: Optional[Reference] = None,
             budget_seconds: Optional[float] = None) -> bool:
    """Adds a ledger record if it completed with a finite val_bpb; returns whether it did.
    `reference`: the one its evaluator compared it with (the best when it ran)."""
    feats = self.features_of(record, budget_seconds)
    if feats is None:
      return False
    self.add(feats, float(record['val_bpb']), reference)
    return True

  def add(self, features: np.ndarray, final_bpb: float,
          reference: Optional[Reference] = None) -> None:
    """Adds one trial's (K, 2) features and final val_bpb; keeps the newest max_history."""
    ref_features = np.full_like(features, np.nan) if reference is None else reference.features
    ref_bpb = math.nan if reference is None else reference.bpb
    keep = self.cfg.max_history - 1

    def append(old, new):
      return np.concatenate([old[len(old) - keep:] if keep else old[:0], np.asarray(new)[None]])

    self.features, self.targets = append(self.features, features), append(self.targets, final_bpb)
    self.ref_features = append(self.ref_features, ref_features)
    self.ref_targets = append(self.ref_targets, ref_bpb)
    self._models.clear()

  def _model(self, k: int, paired: bool):
    """The (cached) regression at checkpoint k; see `_ridge`."""
    if (k, paired) not in self._models:
      x_Nx2 = self.features[:, k] / LN2
      y_N = self.targets
      if paired:
        x_Nx2, y_N = x_Nx2 - self.ref_features[:, k] / LN2, y_N - self.ref_targets
      self._models[k, paired] = _ridge(x_Nx2, y_N - x_Nx2[:, 0], self.cfg.ridge,
                                       self.ref_targets if paired else None)
    return self._models[k, paired]

  def predict(self, features: np.ndarray, progress: float,
              reference: Optional[Reference] = None) -> tuple[float, float]:
    """(mean, std) of the final val_bpb for features (2,) nats taken at `progress`, paired
    with `reference` when given."""
    x_2 = np.asarray(features, np.float64) / LN2
    k = int(np.searchsorted(self.checkpoints, progress + 1e-6, side='right')) - 1
    k = min(max(k, 0), len(self.checkpoints) - 1)
    paired = reference is not None and bool(np.all(np.isfinite(reference.features[k])))
    if paired:
      x_2 = x_2 - reference.features[k] / LN2
    base = x_2[0] + (reference.bpb if paired else 0.0)   # the plain extrapolation
    model = self._model(k, paired) if progress >= self.checkpoints[0] - 1e-6 else None
    if model is None:
      return float(base), self.cfg.prior_std
    n, x_mean, z_mean, slope_2, inv_2x2, out_rms = model
    xc_2 = x_2 - x_mean
    mean = float(base + z_mean + xc_2 @ slope_2)
    if n < self.cfg.min_history:
      return mean, self.cfg.prior_std
    # The leverage of the new point widens predictions away from the history's features.
    std = out_rms * math.sqrt(1.0 + 1.0 / n + float(xc_2 @ inv_2x2 @ xc_2))
    return mean, max(std, self.cfg.min_std)

  def prepare(self, paired: bool) -> None:
    """Fits every checkpoint's model now (before a trial's clock starts)."""
    for k in range(len(self.checkpoints)):
      self._model(k, paired)

  def to_dict(self) -> dict:
    """JSON-ready state (missing values as None; features rounded to micro-nats)."""
    return dict(checkpoints=self.checkpoints.tolist(), fit_start=self.fit_start,
                features=_nan_to_none(np.round(self.features, 6)),
                targets=self.targets.tolist(),
                ref_features=_nan_to_none(np.round(self.ref_features, 6)),
                ref_targets=_nan_to_none(self.ref_targets))

  @classmethod
  def from_dict(cls, state: dict, cfg: EvaluatorConfig) -> 'Calibration':
    """Inverse of to_dict (also accepts arrays, e.g. restored by Orbax)."""
    checkpoints = np.asarray(state['checkpoints'], np.float64).reshape(-1)

    def array(key, shape):
      return np.asarray(state[key], dtype=np.float64).reshape(shape)

    return cls(checkpoints, float(state['fit_start']),
               array('features', (-1, len(checkpoints), 2)), array('targets', (-1,)),
               array('ref_features', (-1, len(checkpoints), 2)), array('ref_targets', (-1,)),
               cfg)


# --- the watcher ------------------------------------------------------------------------

def _warm_up() -> None:
  # Compiles the fit outside any trial's clock (once per process).
  if _TRACES['fit'] == 0:
    fit_power_law(np.linspace(0.1, 1.0, MIN_POINTS), np.linspace(2.0, 1.0, MIN_POINTS))


class Evaluator:
  """The trial's watcher: fed every LossReading, returns a trial.Stop or None.

  Per reading it only updates an EMA and a running minimum; it fits when the progress
  crosses a checkpoint of the calibration's grid. `last_prediction` and `predictions`
  hold what it predicted (for the progress bar and the ledger). `reference`: the best's
  Reference, for paired predictions. `dry_run`: decide but never stop; the first Stop it
  would have returned is kept in `would_stop` (audit trials that keep the calibration
  unbiased and measure false kills).
  """

  def __init__(self, cfg: EvaluatorConfig, calibration: Optional[Calibration],
               best_bpb: Optional[float], keep_margin_bpb: float, budget_seconds: float,
               reference: Optional[Reference] = None, dry_run: bool = False):
    self.cfg = cfg
    self.reference, self.dry_run = reference, dry_run
    self.would_stop: Optional[trial.Stop] = None
    self.calibration = calibration if calibration is not None else Calibration.create(cfg)
    self.best_bpb = math.inf if best_bpb is None else float(best_bpb)
    self.keep_margin_bpb = float(keep_margin_bpb)
    self.budget_seconds = float(budget_seconds)
    if self.budget_seconds <= 0:
      raise ValueError(f'budget_seconds={budget_seconds} must be positive')
    self.last_prediction: Optional[Prediction] = None
    self.predictions: list[Prediction] = []
    self.last_seconds = 0.0
    self._ema = _Ema(cfg.smoothing)
    self._progress: list[float] = []
    self._loss: list[float] = []
    self._running_min = math.inf
    self._next_checkpoint = 0
    self._hopeless_checks = 0   # consecutive checks with P(beats best) < delta
    if cfg.enabled:
      _warm_up()
      self.calibration.prepare(paired=reference is not None)

  def __call__(self, reading: trial.LossReading) -> Optional[trial.Stop]:
    if not self.cfg.enabled:
      return None
    stop = self._watch(reading)
    if stop is not None and self.dry_run:
      self.would_stop, stop = self.would_stop or stop, None
    return stop

  def _watch(self, reading: trial.LossReading) -> Optional[trial.Stop]:
    stalled = self.check_stall(reading.seconds)   # the step just read took too long
    self.last_seconds = reading.seconds
    if stalled is not None:
      return stalled
    if not math.isfinite(reading.loss):
      return trial.Stop(f'training loss is {reading.loss} at step {reading.step}')
    progress = reading.seconds / self.budget_seconds
    smoothed = self._ema.update(progress, reading.loss)
    self._progress.append(progress)
    self._loss.append(reading.loss)
    self._running_min = min(self._running_min, smoothed)
    if smoothed > self.cfg.divergence_factor * self._running_min:
      return trial.Stop(f'diverged: smoothed loss {smoothed:.3f} nats > '
                        f'{self.cfg.divergence_factor:g} x its minimum '
                        f'{self._running_min:.3f} at step {reading.step}')
    checkpoints = self.calibration.checkpoints
    if self._next_checkpoint < len(checkpoints) and \
        progress >= checkpoints[self._next_checkpoint] - 1e-9:
      self._next_checkpoint = int(np.searchsorted(checkpoints, progress + 1e-9, side='right'))
      return self._check(progress)
    return None

  def _check(self, progress: float) -> Optional[trial.Stop]:
    window = _window(np.asarray(self._progress), np.asarray(self._loss), len(self._loss) - 1,
                     self.calibration.fit_start)
    if window is None:
      return None
    fit = np.asarray(_fit_one(*_on_cpu(*window)))
    mean, std = self.calibration.predict(_features(fit, progress), progress,
                                         self.reference)
    threshold = self.best_bpb - self.keep_margin_bpb
    p_beat = 0.5 * math.erfc((mean - threshold) / (std * math.sqrt(2.0))) \
        if math.isfinite(threshold) else 1.0
    self.last_prediction = Prediction(progress, mean, std, p_beat)
    self.predictions.append(self.last_prediction)
    self._hopeless_checks = self._hopeless_checks + 1 if p_beat < self.cfg.delta else 0
    if progress >= self.cfg.min_progress - 1e-9 and self._hopeless_checks >= self.cfg.confirm:
      return trial.Stop(
          f'predicted val_bpb {mean:.4f} ± {std:.4f} at {progress:.0%} of the budget, '
          f'P(beats best {self.best_bpb:.4f} by {self.keep_margin_bpb:.4f}) = {p_beat:.3g} '
          f'< {self.cfg.delta:g}', predicted_bpb=mean)
    return None

  def check_stall(self, now_seconds: float) -> Optional[trial.Stop]:
    """A Stop when no reading arrived for stall_seconds up to `now_seconds` (training
    seconds, the clock of LossReading.seconds), else None. Every reading is checked."""
    waited = now_seconds - self.last_seconds
    if self.cfg.enabled and self.cfg.stall_seconds > 0 and waited > self.cfg.stall_seconds:
      return trial.Stop(f'stalled: no step finished in {waited:.1f} s '
                        f'(limit {self.cfg.stall_seconds:g} s)')
    return None


def replay(watch: Evaluator, loss_curve, budget_seconds: float):
  """Feeds a recorded loss_curve to `watch` as the trial would; (Stop or None, progress at
  the stop or at the end). For benchmarks and tests."""
  progress = 0.0
  for seconds, step, loss in loss_curve:
    progress = seconds / budget_seconds
    stop = watch(trial.LossReading(seconds, min(progress, 1.0), int(step), loss))
    if stop is not None:
      return stop, progress
  return None, progress

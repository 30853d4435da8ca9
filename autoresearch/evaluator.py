"""The self-evaluator: watch a trial's loss, predict its final val_bpb, stop hopeless ones.

    cfg = evaluator.EvaluatorConfig.from_config(config)              # config.evaluator
    calibration = evaluator.Calibration.create(cfg)                  # in the search state
    reference = calibration.reference([best_record], best_bpb)        # once per new best
    watch = evaluator.Evaluator(cfg, calibration, best_bpb, keep_margin_bpb, budget_seconds,
                                reference=reference)
    result = trial.run(genotype, corpus, trial_cfg, watch=watch)
    calibration.update(result.to_dict(), reference)                   # completed trials

* **Fit.** At every checkpoint (multiples of `check_every` of the budget) the readings so
  far are fitted with a power law (learning_curve.py); its features are its value now
  and its extrapolation to the end of the budget.
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

import numpy as np

from autoresearch import learning_curve
from autoresearch.records import TrialRecord
from autoresearch.trial_types import LossReading, Stop

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """When and how the evaluator stops a trial (progress = training seconds / budget).
  Defaults live in configs/default.py only."""
  enabled: bool              # False: the watcher never stops a trial
  min_progress: float        # fraction of the budget before any predicted-bpb stop
  check_every: float         # fraction of the budget between fits (the checkpoint grid)
  delta: float               # stop when P(final beats best by the margin) < delta ...
  confirm: int               # ... at this many consecutive checks (not on one wild fit)
  smoothing: float           # EMA half-life of the training loss, fraction of the budget
  fit_start: float           # the fit at progress p uses readings from fit_start·p to p
  divergence_factor: float   # smoothed loss above this x its running minimum: stop now
  stall_seconds: float       # seconds; no step finished for this long: stop (0 = off)
  min_history: int           # completed trials before the calibrated std is trusted
  prior_std: float           # bits/byte; std of a prediction before min_history trials
  min_std: float             # bits/byte; floor of a calibrated prediction's std
  ridge: float               # bits^2; ridge penalty of the calibration slopes
  max_history: int           # most recent completed trials the calibration keeps

  @classmethod
  def from_config(cls, config) -> 'EvaluatorConfig':
    """From the `evaluator` part of an ml_collections config (e.g. configs/default.py)."""
    return cls(**config.evaluator.to_dict())


class Prediction(NamedTuple):
  """One prediction of the final val_bpb of the running trial."""
  progress: float     # fraction of the budget when it was made
  mean_bpb: float
  std_bpb: float
  p_beat: float       # P(final < best - margin)


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


# --- calibration from history -----------------------------------------------------------

class Reference(NamedTuple):
  """The incumbent a trial is compared with: its features (K, 2) nats and its val_bpb."""
  features: np.ndarray
  bpb: float


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
  cfg: EvaluatorConfig
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

  def features_of(self, record: TrialRecord, budget_seconds: Optional[float] = None):
    """Features (K, 2) of a completed ledger row, or None if it has no score or curve.
    Progress is seconds / budget_seconds (default: the row's own budget)."""
    budget = budget_seconds or record.budget_seconds
    if not (record.scored and record.loss_curve and budget):
      return None
    return learning_curve.trial_features(record.loss_curve, float(budget),
                                         self.checkpoints, self.fit_start)

  def reference(self, records: Sequence[TrialRecord], bpb: float,
                budget_seconds: Optional[float] = None) -> Optional[Reference]:
    """The Reference of a best genotype from its completed run(s) (features averaged,
    e.g. over the baseline's noise runs) and its val_bpb (e.g. their mean)."""
    feats = [f for f in (self.features_of(r, budget_seconds) for r in records) if f is not None]
    if not feats or not math.isfinite(bpb):
      return None
    return Reference(np.mean(feats, axis=0), float(bpb))

  def update(self, record: TrialRecord, reference: Optional[Reference] = None,
             budget_seconds: Optional[float] = None) -> bool:
    """Adds a ledger record if it completed with a finite val_bpb; returns whether it did.
    `reference`: the one its evaluator compared it with (the best when it ran)."""
    feats = self.features_of(record, budget_seconds)
    if feats is None:
      return False
    self.add(feats, float(record.val_bpb), reference)
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

  def _checkpoint(self, progress: float, reference: Optional[Reference]):
    """(k, paired): the checkpoint a prediction at `progress` uses, and whether it can be
    paired with `reference` there."""
    k = int(np.searchsorted(self.checkpoints, progress + 1e-6, side='right')) - 1
    k = min(max(k, 0), len(self.checkpoints) - 1)
    paired = reference is not None and bool(np.all(np.isfinite(reference.features[k])))
    return k, paired

  def calibrated(self, progress: float, reference: Optional[Reference] = None) -> bool:
    """Whether a prediction at `progress` has a learnt std (else it is prior_std)."""
    k, paired = self._checkpoint(progress, reference)
    model = self._model(k, paired) if progress >= self.checkpoints[0] - 1e-6 else None
    return model is not None and model[0] >= self.cfg.min_history

  def predict(self, features: np.ndarray, progress: float,
              reference: Optional[Reference] = None) -> tuple[float, float]:
    """(mean, std) of the final val_bpb for features (2,) nats taken at `progress`, paired
    with `reference` when given."""
    x_2 = np.asarray(features, np.float64) / LN2
    k, paired = self._checkpoint(progress, reference)
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

def _wall(reading: LossReading) -> float:
  """The reading's wall seconds (a stall is a wall-clock matter, whatever the budget's clock)."""
  return reading.wall_seconds if reading.wall_seconds is not None else reading.seconds


class Evaluator:
  """The trial's watcher: fed every LossReading, returns a Stop or None.

  Per reading it only updates an EMA and a running minimum; it fits when the progress
  crosses a checkpoint of the calibration's grid. `last_prediction` and `predictions`
  hold what it predicted (for the progress bar and the ledger). `reference`: the best's
  Reference, for paired predictions.
  """

  def __init__(self, cfg: EvaluatorConfig, calibration: Optional[Calibration],
               best_bpb: Optional[float], keep_margin_bpb: float, budget_seconds: float,
               reference: Optional[Reference] = None):
    self.cfg = cfg
    self.reference = reference
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
      learning_curve.warm_up()
      self.calibration.prepare(paired=reference is not None)

  def __call__(self, reading: LossReading) -> Optional[Stop]:
    if not self.cfg.enabled:
      return None
    stalled = self.check_stall(_wall(reading))   # the step just read took too long
    self.last_seconds = _wall(reading)
    if stalled is not None:
      return stalled
    if not math.isfinite(reading.loss):
      return Stop(f'training loss is {reading.loss} at step {reading.step}')
    progress = reading.seconds / self.budget_seconds
    smoothed = self._ema.update(progress, reading.loss)
    self._progress.append(progress)
    self._loss.append(reading.loss)
    self._running_min = min(self._running_min, smoothed)
    if smoothed > self.cfg.divergence_factor * self._running_min:
      return Stop(f'diverged: smoothed loss {smoothed:.3f} nats > '
                  f'{self.cfg.divergence_factor:g} x its minimum '
                  f'{self._running_min:.3f} at step {reading.step}')
    checkpoints = self.calibration.checkpoints
    if self._next_checkpoint < len(checkpoints) and \
        progress >= checkpoints[self._next_checkpoint] - 1e-9:
      self._next_checkpoint = int(np.searchsorted(checkpoints, progress + 1e-9, side='right'))
      return self._check(progress)
    return None

  def _check(self, progress: float) -> Optional[Stop]:
    features = learning_curve.features_now(self._progress, self._loss,
                                           self.calibration.fit_start)
    if features is None:
      return None
    mean, std = self.calibration.predict(features, progress, self.reference)
    threshold = self.best_bpb - self.keep_margin_bpb
    p_beat = 0.5 * math.erfc((mean - threshold) / (std * math.sqrt(2.0))) \
        if math.isfinite(threshold) else 1.0
    self.last_prediction = Prediction(progress, mean, std, p_beat)
    self.predictions.append(self.last_prediction)
    self._hopeless_checks = self._hopeless_checks + 1 if p_beat < self.cfg.delta else 0
    if progress >= self.cfg.min_progress - 1e-9 and self._hopeless_checks >= self.cfg.confirm:
      return Stop(
          f'predicted val_bpb {mean:.4f} ± {std:.4f} at {progress:.0%} of the budget, '
          f'P(beats best {self.best_bpb:.4f} by {self.keep_margin_bpb:.4f}) = {p_beat:.3g} '
          f'< {self.cfg.delta:g}', predicted_bpb=mean)
    return None

  def check_stall(self, now_seconds: float) -> Optional[Stop]:
    """A Stop when no reading arrived for stall_seconds up to `now_seconds` (training
    seconds, the clock of LossReading.seconds), else None. Every reading is checked."""
    waited = now_seconds - self.last_seconds
    if self.cfg.enabled and self.cfg.stall_seconds > 0 and waited > self.cfg.stall_seconds:
      return Stop(f'stalled: no step finished in {waited:.1f} s '
                  f'(limit {self.cfg.stall_seconds:g} s)')
    return None


def replay(watch: Evaluator, loss_curve, budget_seconds: float):
  """Feeds a recorded loss_curve to `watch` as the trial would; (Stop or None, progress at
  the stop or at the end). For benchmarks and tests."""
  progress = 0.0
  for seconds, step, loss in loss_curve:
    progress = seconds / budget_seconds
    stop = watch(LossReading(seconds, min(progress, 1.0), int(step), loss))
    if stop is not None:
      return stop, progress
  return None, progress

"""The self-evaluator: watch a trial's loss, predict its final val_bpb, stop hopeless ones.

    cfg = EvaluatorConfig.from_config(config)              # config.evaluator
    calibration = Calibration.create(cfg)                  # in the search state
    reference = calibration.reference(best_rows, best_bpb, budget_seconds)  # per new best
    watch = evaluator.Evaluator(cfg, calibration, best_bpb, keep_margin_bpb, budget_seconds,
                                reference=reference)
    result = runner.run(genotype, corpus, trial_cfg, watch=watch)
    calibration.update(row, reference, budget_seconds)   # row: the trial's ledger TrialRecord

* **Fit.** At every checkpoint (multiples of `check_every` of the budget) the readings so
  far are fitted with a power law (power_law.py); its features are its value now
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
* **Learned predictor** (`predictor='learned'`, autoresearch/early_stop/curve_predictor.py): a
  small network trained offline on synthetic and recorded curves gives the Gaussian of
  the trial's final minus the best's from the two binned curves at the same progress,
  with no history needed; where it has no prediction yet (no common complete bin, or no
  best's curve, e.g. after a resume) the calibrated power law stands in.
* **Decisions.** Stop at once on a non-finite loss or divergence (the loss EMA, half-life
  `smoothing` of the budget, above `divergence_factor` x its running minimum). From
  `min_progress` on, stop when P(final < best - margin) < `delta` under the Gaussian
  prediction at `confirm` consecutive checks. A reading whose wall seconds come more
  than `stall_seconds` after the one before (a step that took that long on the
  machine's clock, whatever the budget's clock) stops the trial too. The check runs
  when a reading arrives: a step that never returns cannot be stopped from inside the
  process, so the trial's step-FLOPs cap (`trial.max_step_fraction`) refuses the slow
  genotypes before they compile.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from autoresearch.early_stop import curve_predictor, power_law
from autoresearch.early_stop.calibration import Calibration, Reference
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.trial.results import LossReading, Stop


LN2 = math.log(2.0)


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
    self.calibrated: list[bool] = []   # per prediction: a learnt std (not the prior's)
    self._learned = None
    if cfg.enabled:
      power_law.warm_up()
      self.calibration.prepare(paired=reference is not None)
      if cfg.predictor == 'learned' and reference is not None and reference.bins is not None:
        self._learned = curve_predictor.load(cfg.predictor_path)   # cached, compiled

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

  def _predict(self, progress: float) -> Optional[tuple[float, float, bool]]:
    """(mean, std, calibrated) of the final val_bpb now, or None without a prediction:
    the learned predictor's when it has one (the curves share a complete bin), else the
    calibrated power law's."""
    if self._learned is not None:
      bins = curve_predictor.curve_bins(self._progress, self._loss)
      delta, std = self._learned.predict(bins, self.reference.bins, progress)
      if math.isfinite(delta):
        return self.reference.bpb + delta, max(std, self.cfg.min_std), True
    features = power_law.features_now(self._progress, self._loss,
                                      self.calibration.fit_start)
    if features is None:
      return None
    mean, std = self.calibration.predict(features, progress, self.reference)
    return mean, std, self.calibration.calibrated(progress, self.reference)

  def _check(self, progress: float) -> Optional[Stop]:
    predicted = self._predict(progress)
    if predicted is None:
      return None
    mean, std, calibrated = predicted
    self.calibrated.append(calibrated)
    threshold = self.best_bpb - self.keep_margin_bpb
    p_beat = (0.5 * math.erfc((mean - threshold) / (std * math.sqrt(2.0)))
              if math.isfinite(threshold) else 1.0)
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
    """A Stop when no reading arrived for stall_seconds up to `now_seconds`, wall seconds
    of training (`LossReading.wall_seconds`; the clock's seconds where a reading has
    none), else None. Called with each reading's wall seconds."""
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

"""The stopping methods that benchmarks/evaluator_replay.py replays on recorded trials.

Each method has the same five calls, made by `evaluator_replay.replay_search` in the
order a search makes them: `start(search)` once per recorded search, `watch(record,
best_bpb)` -> Outcome for each searched trial (where to stop it, if anywhere), then
`finish(record, outcome)`; `unwatched(record)` for a re-run (never stopped), and
`new_best(records, bpb)` when the keep rule takes a new best.

* EvaluatorMethod: the self-evaluator (autoresearch/early_stop/evaluator.py), fed as the search
  feeds it.
* NeverStop: the unstopped search (it defines the winners every method is scored on).
* OracleMethod: knows every recorded final and stops each loser at `min_progress`.
* OptunaMethod: an Optuna pruner fed the training loss at the evaluator's checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from autoresearch.early_stop import evaluator
from autoresearch.early_stop.calibration import Calibration
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.workdir.records import TrialRecord
from benchmarks.replay_metrics import PREDICTION_POINTS
from configs import default


EVALUATOR_DEFAULTS = EvaluatorConfig.from_config(default.get_config())


@dataclasses.dataclass
class Outcome:
  """What a method did with one watched trial."""
  stop_seconds: Optional[float]                 # training seconds at the stop; None: ran on
  predictions: dict = dataclasses.field(default_factory=dict)   # {point: predicted bpb}
  z_scores: list = dataclasses.field(default_factory=list)  # (final - mean) / std, calibrated
  stop_z: Optional[float] = None   # the z of the prediction the stop was made on


class EvaluatorMethod:
  """The self-evaluator with one EvaluatorConfig, fed as the search feeds it."""

  def __init__(self, cfg: EvaluatorConfig, margin_sigmas: float):
    self.cfg, self.margin_sigmas = cfg, margin_sigmas

  def start(self, search) -> None:
    self.budget, self.sigma = search.budget_seconds, search.sigma
    self.calibration = Calibration.create(self.cfg)
    for record in search.baseline:   # as the search: no reference while they run
      self.calibration.update(record, None, self.budget)
    self.reference = self.calibration.reference(search.baseline, search.baseline_bpb,
                                                self.budget)

  def watch(self, record: TrialRecord, best_bpb: float) -> Outcome:
    watch = evaluator.Evaluator(self.cfg, self.calibration, best_bpb,
                                self.margin_sigmas * self.sigma, self.budget,
                                reference=self.reference)
    stop, progress = evaluator.replay(watch, record.loss_curve, self.budget)
    # Only a calibrated std is a claim to check (before min_history it is the prior's).
    z_scores = [(record.val_bpb - p.mean_bpb) / p.std_bpb
                for p, calibrated in zip(watch.predictions, watch.calibrated)
                if record.scored and calibrated]
    predictions = {}
    for point in PREDICTION_POINTS:
      # The prediction made at that checkpoint: the first at or past it, within a step.
      made = [p for p in watch.predictions
              if point - 1e-9 <= p.progress < point + self.cfg.check_every]
      if made:
        predictions[point] = made[0].mean_bpb
    stop_z = None
    if stop is not None and stop.predicted_bpb is not None and record.scored and \
        watch.calibrated and watch.calibrated[-1]:
      stop_z = (record.val_bpb - watch.predictions[-1].mean_bpb) / watch.predictions[-1].std_bpb
    return Outcome(progress * self.budget if stop is not None else None, predictions,
                   z_scores, stop_z)

  def finish(self, record: TrialRecord, outcome: Outcome) -> None:
    if outcome.stop_seconds is None:   # a stopped trial teaches nothing, as online
      self.calibration.update(record, self.reference, self.budget)

  def unwatched(self, record: TrialRecord) -> None:
    self.calibration.update(record, self.reference, self.budget)

  def new_best(self, records: list[TrialRecord], bpb: float) -> None:
    self.reference = self.calibration.reference(records, bpb, self.budget)


class NeverStop:
  """The search without any stopping method."""

  def start(self, search) -> None:
    pass

  def watch(self, record: TrialRecord, best_bpb: float) -> Outcome:
    return Outcome(None)

  def finish(self, record: TrialRecord, outcome: Outcome) -> None:
    pass

  def unwatched(self, record: TrialRecord) -> None:
    pass

  def new_best(self, records: list[TrialRecord], bpb: float) -> None:
    pass


class OracleMethod(NeverStop):
  """The bound of any method that cannot stop before `min_progress`: it knows each
  recorded final and stops, at `min_progress`, every trial that will not beat the best
  (crashes included), with no false kill."""

  def __init__(self, min_progress: float):
    self.min_progress = min_progress

  def start(self, search) -> None:
    self.budget = search.budget_seconds

  def watch(self, record: TrialRecord, best_bpb: float) -> Outcome:
    wins = record.scored and record.val_bpb < best_bpb
    return Outcome(None if wins else self.min_progress * self.budget)


def checkpoint_losses(record: TrialRecord, budget: float, checkpoints: np.ndarray, window: float):
  """[(training seconds when checkpoint k is reached, mean loss over the readings of
  progress in (p_k - window, that reading])] for the checkpoints the curve reaches."""
  curve = np.asarray(record.loss_curve, np.float64).reshape(-1, 3)
  progress = curve[:, 0] / budget
  out = []
  for p in checkpoints:
    end = int(np.searchsorted(progress, p - 1e-9))   # the first reading at or past p
    if end >= len(progress):
      break
    start = int(np.searchsorted(progress, p - window, side='right'))
    out.append((float(curve[end, 0]), float(np.mean(curve[min(start, end):end + 1, 2]))))
  return out


class OptunaMethod:
  """An Optuna pruner fed the recorded training loss at the evaluator's checkpoints."""

  def __init__(self, make_pruner: Callable, check_every: float):
    self.make_pruner, self.check_every = make_pruner, check_every

  def start(self, search) -> None:
    import optuna  # only the pruner rows need it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    self.states, self.budget = optuna.trial.TrialState, search.budget_seconds
    self.study = optuna.create_study(direction='minimize', pruner=self.make_pruner())
    self.checkpoints = Calibration.create(
        dataclasses.replace(EVALUATOR_DEFAULTS, check_every=self.check_every)).checkpoints
    for record in search.baseline:
      self.unwatched(record)
    self._trial = None

  def _losses(self, record: TrialRecord):
    return checkpoint_losses(record, self.budget, self.checkpoints, self.check_every / 2)

  def watch(self, record: TrialRecord, best_bpb: float) -> Outcome:
    self._trial = self.study.ask()
    for k, (seconds, loss) in enumerate(self._losses(record), start=1):
      self._trial.report(loss, k)
      if self._trial.should_prune():
        return Outcome(seconds)
    return Outcome(None)

  def _tell(self, trial, record: TrialRecord) -> None:
    if record.scored:
      self.study.tell(trial, record.val_bpb)
    else:
      self.study.tell(trial, state=self.states.FAIL)   # a crash (or a recorded abort)

  def finish(self, record: TrialRecord, outcome: Outcome) -> None:
    if outcome.stop_seconds is not None:
      self.study.tell(self._trial, state=self.states.PRUNED)
    else:
      self._tell(self._trial, record)

  def unwatched(self, record: TrialRecord) -> None:
    """A trial the pruner may not stop (baseline, re-run): its history, never pruned."""
    trial = self.study.ask()
    for k, (_, loss) in enumerate(self._losses(record), start=1):
      trial.report(loss, k)
    self._tell(trial, record)

  def new_best(self, records: list[TrialRecord], bpb: float) -> None:
    pass   # the study tracks its own best

"""The self-evaluator's settings (`config.evaluator`). No JAX here."""

from __future__ import annotations

import dataclasses


PREDICTORS = ('power_law', 'learned')   # EvaluatorConfig.predictor


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
  predictor: str             # 'power_law' (fit + calibration) | 'learned' (curve_predictor)
  predictor_path: str        # folder of the learned predictor (relative: to the project)

  def __post_init__(self):
    if self.predictor not in PREDICTORS:
      raise ValueError(f'evaluator.predictor={self.predictor!r} must be one of {PREDICTORS}')

  @classmethod
  def from_config(cls, config) -> 'EvaluatorConfig':
    """From the `evaluator` part of an ml_collections config (e.g. configs/default.py)."""
    return cls(**config.evaluator.to_dict())

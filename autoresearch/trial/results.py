"""The light types of a trial: what its watcher is fed and may answer, what it
measured, and what its stages (`runner.build`, `training.train`, `scoring.evaluate`) hand
on. No JAX here, so that the evaluator and other light modules can use them without
loading the training stack."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

from autoresearch.trial.config import TrialConfig


@dataclasses.dataclass(frozen=True)
class LossReading:
  """One training-loss reading, given to the watcher after the step finished."""
  seconds: float    # training seconds (on the trial's clock) when the step finished
  progress: float   # seconds / budget
  step: int         # 1-based index of the finished step
  loss: float       # mean training cross-entropy of that step, nats per byte
  wall_seconds: Optional[float] = None  # the machine's seconds of training by then


@dataclasses.dataclass(frozen=True)
class Stop:
  """What a watcher returns to end a trial early."""
  reason: str
  predicted_bpb: Optional[float] = None
  status: str = 'aborted'


@dataclasses.dataclass
class TrialResult:
  """Everything one trial measured. status: 'ok' (trained and scored; the search turns
  it into 'keep' or 'discard'), 'aborted' (stopped by its watcher) or 'crash'."""
  genotype_id: str
  genotype: dict
  status: str
  reason: str = ''
  val_bpb: Optional[float] = None
  predicted_bpb: Optional[float] = None
  train_seconds: float = 0.0        # training seconds on the trial's clock
  wall_train_seconds: float = 0.0   # the machine's seconds of training (= train_seconds, 'wall')
  clock: str = 'wall'               # the clock of train_seconds and loss_curve (TrialConfig)
  compile_seconds: float = 0.0
  eval_seconds: float = 0.0
  total_seconds: float = 0.0
  steps: int = 0
  tokens: int = 0
  params: int = 0
  mfu_percent: float = 0.0
  # GB per device: XLA's memory analysis of the compiled train step (arguments + outputs
  # + temporaries - donated aliases), the same for a genotype whatever ran before; 0.0
  # where the backend has no analysis.
  peak_memory_gb: float = 0.0
  final_train_loss: Optional[float] = None
  loss_curve: list = dataclasses.field(default_factory=list)  # [seconds, step, loss]
  device_kind: str = ''
  data_fingerprint: str = ''
  val_bytes_scored: int = 0
  test_bpb: Optional[float] = None  # only when asked for (score_test=True)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


Watcher = Callable[[LossReading], Optional[Stop]]


class Built(NamedTuple):
  """A genotype compiled for a placement, before its clock starts. `training.train` donates
  `params` and `opt_state`: they are unusable once it has run."""
  train_step: Any              # compiled (param leaves, opt_state leaves, batch, progress,
                               # values) -> (param leaves, opt_state leaves, loss)
  eval_step: Any               # compiled (params, inputs, targets, mask) -> nats per batch
  params: Any                  # initial parameters (float32 master weights, placed)
  opt_state: Any               # initial optimizer state (placed)
  eval_sets: dict              # split name -> (inputs, targets, mask), each (batches, N, T)
  model_cfg: Any               # models.gpt.GPTConfig
  optim_cfg: Any               # autoresearch.optim.OptimConfig
  batch_size: int              # sequences per optimizer step
  seq_len: int                 # tokens per sequence
  compile_seconds: float       # seconds getting the compiled programs (about 0 when cached)
  num_params: int              # parameters of the model
  memory_gb: float             # GB per device the train step needs (XLA's memory analysis)
  values: Any = None           # the recipe's numbers the steps take (optim.runtime_values), placed
  warmup_step: Any = None      # compiled half-batch step of a batch-size warmup, or None
  warmup_until: float = 0.0    # progress before which `warmup_step` trains (0: never)


class Trained(NamedTuple):
  """What the budgeted loop returns."""
  params: Any                  # the trained parameters
  steps: int                   # finished optimizer steps
  loss_curve: list             # [seconds, step, loss] per reading
  final_train_loss: Optional[float]  # nats; the last reading's loss
  train_seconds: float         # seconds on the training clock
  stop: Optional[Stop]         # why training ended early, or None at the budget
  wall_seconds: float          # the machine's seconds of training
  tokens: int                  # tokens trained (fewer per step in a batch-size warmup)


class Scores(NamedTuple):
  """What `evaluate` measured."""
  bpb: dict                    # split name -> bits per byte
  eval_seconds: float          # seconds of the whole evaluation


def bits_per_byte(total_nats: float, num_bytes: int) -> float:
  """Bits per byte from summed nats over `num_bytes` one-byte tokens."""
  return total_nats / (math.log(2) * num_bytes)


def check_loss(loss: float, step: int, cfg: TrialConfig) -> Optional[Stop]:
  """A crash for a non-finite or exploded training loss, else None."""
  if not math.isfinite(loss):
    return Stop(f'training loss is {loss} at step {step}', status='crash')
  if loss > cfg.max_loss:
    return Stop(f'training loss exploded to {loss:.2f} nats at step {step} '
                f'(limit {cfg.max_loss:.2f})', status='crash')
  return None

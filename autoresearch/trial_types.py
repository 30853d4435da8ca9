"""The light types of a trial: its config, what its watcher is fed and may answer, what
it measured, and what its stages (`trial.build`, `trial.train`, `trial.evaluate`) hand
on. No JAX here, so that the evaluator and other light modules can use them without
loading the training stack; `autoresearch.trial` re-exports them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional


@dataclasses.dataclass(frozen=True)
class TrialConfig:
  """How every trial of a search is run. Defaults live in configs/default.py only."""
  budget_seconds: float      # training seconds per trial (compile and eval excluded)
  val_bytes: int             # bytes of the val split scored, same for every genotype
  eval_batch_tokens: int     # tokens per evaluation batch (memory, not results)
  max_params: int            # parameter cap of a genotype; 0: none
  max_step_fraction: float   # refuse a step slower than this x budget at the ceiling; 0: none
  max_loss: float            # nats; a training loss above this is an explosion
  micro_batch_size: int      # sequences per forward/backward; 0: the whole batch
  compute_dtype: str         # activations dtype ('float32' or 'bfloat16')
  fsdp: bool                 # shard parameters and optimizer state over the devices
  max_steps: int             # stop after this many steps even within the budget; 0: none
  seed: int                  # parameter init and batch sampling

  @classmethod
  def from_config(cls, config) -> 'TrialConfig':
    """From the `trial` part of an ml_collections config (e.g. configs/default.py)."""
    return cls(**config.trial.to_dict())


@dataclasses.dataclass(frozen=True)
class LossReading:
  """One training-loss reading, given to the watcher after the step finished."""
  seconds: float    # training seconds when the step finished
  progress: float   # seconds / budget
  step: int         # 1-based index of the finished step
  loss: float       # mean training cross-entropy of that step, nats per byte


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
  train_seconds: float = 0.0
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
  """A genotype compiled for a placement, before its clock starts. `trial.train` donates
  `params` and `opt_state`: they are unusable once it has run."""
  train_step: Any              # compiled (params, opt_state, batch, progress) -> (.., .., loss)
  eval_step: Any               # compiled (params, inputs, targets, mask) -> summed nats
  params: Any                  # initial parameters (float32 master weights, placed)
  opt_state: Any               # initial optimizer state (placed)
  eval_sets: dict              # split name -> (inputs, targets, mask), each (batches, N, T)
  model_cfg: Any               # models.gpt.GPTConfig
  optim_cfg: Any               # autoresearch.optim.OptimConfig
  batch_size: int              # sequences per optimizer step
  seq_len: int                 # tokens per sequence
  compile_seconds: float       # seconds from abstract shapes to both steps compiled
  num_params: int              # parameters of the model
  memory_gb: float             # GB per device the train step needs (XLA's memory analysis)


class Trained(NamedTuple):
  """What the budgeted loop returns."""
  params: Any                  # the trained parameters
  steps: int                   # finished optimizer steps
  loss_curve: list             # [seconds, step, loss] per reading
  final_train_loss: Optional[float]  # nats; the last reading's loss
  train_seconds: float         # seconds on the training clock
  stop: Optional[Stop]         # why training ended early, or None at the budget


class Scores(NamedTuple):
  """What `evaluate` measured."""
  bpb: dict                    # split name -> bits per byte
  eval_seconds: float          # seconds of the whole evaluation

"""The light types of a trial: its config, its clocks, what its watcher is fed and may
answer, what it measured, and what its stages (`trial.build`, `trial.train`,
`trial.evaluate`) hand on. No JAX here, so that the evaluator and other light modules
can use them without loading the training stack; `autoresearch.trial` re-exports them.

Clocks (`trial.clock`): a trial trains until its clock reads `budget_seconds`.
* 'wall' (the default): training seconds are the machine's seconds. A step is
  dispatched only if, started when the step in flight ends, it would end within the
  budget by the median duration of the recent steps, so a trial ends within about one
  step of its budget (never a step or two past it).
* 'flops': training seconds are the model FLOPs trained so far
  (`models.gpt.flops_per_token` x tokens) / `reference_flops_per_second`, so a genotype
  and seed train the same steps at the same learning rates, to the same val_bpb,
  whether the machine is idle or busy. The budget then holds a whole number of steps.
Both keep the machine's seconds of training beside (`TrialResult.wall_train_seconds`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
import statistics
import time
from typing import Any, Callable, NamedTuple, Optional

CLOCKS = ('wall', 'flops')
COMPUTE_DTYPES = ('float32', 'bfloat16')
ATTENTIONS = ('auto', 'explicit', 'xla', 'cudnn')  # models.attention.ATTENTIONS (no JAX here)


class ConfigError(ValueError):
  """Trial settings no trial can run with; the message names each field and why."""


def _finite(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _nonnegative_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0


# field -> (rule, what the field must be). budget_seconds 0 (in code only: the initial
# parameters scored) passes here; `from_config` asks for > 0.
_RULES = {
    'budget_seconds': (lambda x: _finite(x) and x >= 0, 'a finite number of seconds > 0'),
    'val_bytes': (lambda x: _nonnegative_int(x) and x > 0, 'a whole number of bytes > 0'),
    'eval_batch_tokens': (lambda x: _nonnegative_int(x) and x > 0,
                          'a whole number of tokens > 0'),
    'max_params': (_nonnegative_int, 'a whole number >= 0 (0: no cap)'),
    'max_step_fraction': (lambda x: _finite(x) and x >= 0, 'a finite fraction >= 0 (0: no cap)'),
    'max_loss': (lambda x: isinstance(x, numbers.Real) and x > 0, 'a number of nats > 0'),
    'micro_batch_size': (_nonnegative_int, 'a whole number >= 0 (0: the whole batch)'),
    'compute_dtype': (lambda x: x in COMPUTE_DTYPES, f'one of {COMPUTE_DTYPES}'),
    'max_steps': (_nonnegative_int, 'a whole number >= 0 (0: no cap)'),
    'clock': (lambda x: x in CLOCKS, f'one of {CLOCKS}'),
    'reference_flops_per_second': (lambda x: _finite(x) and x > 0, 'a finite FLOP/s > 0'),
    'attention': (lambda x: x in ATTENTIONS, f'one of {ATTENTIONS}'),
    'sync_steps': (lambda x: _nonnegative_int(x) and x > 0, 'a whole number of steps > 0'),
}


@dataclasses.dataclass(frozen=True)
class TrialConfig:
  """How every trial of a search is run. Defaults live in configs/default.py only.
  Nonsense settings raise ConfigError when the config is made."""
  budget_seconds: float      # training seconds per trial on `clock` (compile and eval excluded)
  val_bytes: int             # bytes of the val split scored, same for every genotype
  eval_batch_tokens: int     # tokens per evaluation batch (memory, not results)
  max_params: int            # parameter cap of a genotype; 0: none
  max_step_fraction: float   # refuse a step over this x budget at the ceiling (or rate); 0: none
  max_loss: float            # nats; a training loss above this is an explosion
  micro_batch_size: int      # sequences per forward/backward; 0: the whole batch
  compute_dtype: str         # activations dtype ('float32' or 'bfloat16')
  fsdp: bool                 # shard parameters and optimizer state over the devices
  max_steps: int             # stop after this many steps even within the budget; 0: none
  seed: int                  # parameter init and batch sampling
  clock: str                 # what a training second is: 'wall' | 'flops' (module docstring)
  reference_flops_per_second: float  # FLOP/s; under clock='flops' a second is this many FLOPs
  attention: str             # attention kernel: 'auto' (the backend's faster) | explicit | xla | cudnn
  sync_steps: int            # steps; on several hosts process 0's plan is shared once per this many

  def __post_init__(self):
    problems = [f'trial.{name}={getattr(self, name)!r} must be {what}'
                for name, (rule, what) in _RULES.items() if not _holds(rule, getattr(self, name))]
    if problems:
      raise ConfigError('; '.join(problems))

  @classmethod
  def from_config(cls, config) -> 'TrialConfig':
    """From the `trial` part of an ml_collections config (e.g. configs/default.py);
    ConfigError, naming the fields, for nonsense settings (a budget of 0 too)."""
    settings = config.trial.to_dict()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
      raise ConfigError(f'unknown trial settings: {", ".join(unknown)}')
    try:
      cfg = cls(**settings)
    except TypeError as e:  # a field missing
      raise ConfigError(f'trial settings: {e}') from None
    if not cfg.budget_seconds > 0:
      raise ConfigError(f'trial.budget_seconds={cfg.budget_seconds!r} must be '
                        f'{_RULES["budget_seconds"][1]}')
    return cfg


def _holds(rule, value) -> bool:
  try:
    return bool(rule(value))
  except TypeError:  # e.g. a string where a number belongs
    return False


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
  """A genotype compiled for a placement, before its clock starts. `trial.train` donates
  `params` and `opt_state`: they are unusable once it has run."""
  train_step: Any              # compiled (params, opt_state, batch, progress) -> (.., .., loss)
  eval_step: Any               # compiled (params, inputs, targets, mask) -> nats per batch
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
  wall_seconds: float          # the machine's seconds of training


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


class _Clock:
  """What both clocks share: the machine's seconds since the clock was made."""

  def __init__(self, budget_seconds: float, now: Callable[[], float]):
    self.budget, self._now = budget_seconds, now
    self._start = now()

  def wall_seconds(self) -> float:
    return self._now() - self._start

  def progress(self, seconds: float) -> float:
    """`seconds` / budget, at most 1 (1 for a budget of 0)."""
    return min(seconds / self.budget, 1.0) if self.budget > 0 else 1.0


class WallClock(_Clock):
  """Training seconds are the machine's seconds. A step's duration runs from when it
  could start (dispatched, and the step before it read) to when its loss was read;
  `plan` predicts the next step's with the median of the last `window`."""

  window = 32   # recent steps whose median duration predicts the next step's

  def __init__(self, budget_seconds: float, now: Callable[[], float] = time.perf_counter):
    super().__init__(budget_seconds, now)
    self._unread = collections.deque()   # dispatch times of the steps not read yet
    self._durations = collections.deque(maxlen=self.window)
    self._last_read = 0.0

  def seconds(self) -> float:
    """Training seconds so far."""
    return self.wall_seconds()

  def plan(self, in_flight: bool) -> tuple[bool, float]:
    """(whether one more step fits the budget, the progress at which it would start).
    The first step fits any budget > 0; the second waits for the first's duration
    (no fit while the first is in flight)."""
    now = self.wall_seconds()
    if not self._durations:
      return not in_flight and now < self.budget, self.progress(now)
    start, step = self._next_start(now, in_flight)
    return start + step <= self.budget, self.progress(start)

  def plan_ahead(self, in_flight: bool, steps: int) -> list[float]:
    """The progress at which each of the next `steps` steps would start, dispatched back
    to back, for those that fit the budget: the first as `plan` has it, each later one
    a median step after the one before (several hosts run such a plan between syncs).
    With no duration known yet, at most the one step `plan` allows."""
    now = self.wall_seconds()
    if not self._durations:
      return [self.progress(now)] if steps >= 1 and self.plan(in_flight)[0] else []
    start, step = self._next_start(now, in_flight)
    return [self.progress(start + k * step) for k in range(steps)
            if start + (k + 1) * step <= self.budget]

  def _next_start(self, now: float, in_flight: bool) -> tuple[float, float]:
    """(when the next step could start, the median recent step duration)."""
    step = statistics.median(self._durations)
    start = max(now, max(self._unread[-1], self._last_read) + step) if in_flight else now
    return start, step

  def dispatched(self) -> None:
    """A step is about to be handed to the device."""
    self._unread.append(self.wall_seconds())

  def finished(self) -> float:
    """The oldest unread step's loss was just read: the training seconds it ended at."""
    end = self.wall_seconds()
    self._durations.append(end - max(self._unread.popleft(), self._last_read))
    self._last_read = end
    return end


class FlopsClock(_Clock):
  """Training seconds are model FLOPs / the reference rate: every step takes exactly
  `step_seconds`, so a budget holds floor(budget / step_seconds) steps on any machine
  under any load."""

  def __init__(self, budget_seconds: float, step_seconds: float,
               now: Callable[[], float] = time.perf_counter):
    super().__init__(budget_seconds, now)
    self.step_seconds = step_seconds
    self._dispatched = self._read = 0

  def seconds(self) -> float:
    return self._dispatched * self.step_seconds

  def plan(self, in_flight: bool) -> tuple[bool, float]:
    return self._fits(self._dispatched + 1), self.progress(self.seconds())

  def plan_ahead(self, in_flight: bool, steps: int) -> list[float]:
    """The progress at which each of the next `steps` steps starts, for those that fit
    the budget: exact, as every step takes `step_seconds`."""
    return [self.progress((self._dispatched + k) * self.step_seconds) for k in range(steps)
            if self._fits(self._dispatched + k + 1)]

  def _fits(self, steps: int) -> bool:
    # The relative slack absorbs the rounding of a budget that holds n steps exactly.
    return steps * self.step_seconds <= self.budget * (1 + 1e-9)

  def dispatched(self) -> None:
    self._dispatched += 1

  def finished(self) -> float:
    self._read += 1
    return self._read * self.step_seconds


def make_clock(cfg: TrialConfig, step_flops: float) -> _Clock:
  """The clock `cfg.clock` names, for steps of `step_flops` model FLOPs each."""
  if cfg.clock == 'flops':
    return FlopsClock(cfg.budget_seconds, step_flops / cfg.reference_flops_per_second)
  return WallClock(cfg.budget_seconds)

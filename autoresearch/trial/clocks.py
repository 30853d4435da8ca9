"""The clocks a trial trains under (`trial.clock`): a trial trains until its clock
reads `budget_seconds`.

* 'wall' (the default): training seconds are the machine's seconds. A step is
  dispatched only if, started when the step in flight ends, it would end within the
  budget by the median duration of the recent steps, so a trial ends within about one
  step of its budget (never a step or two past it).
* 'modelled': every step is charged the seconds `trial.step_cost` models for it
  (`step_cost.py`: per FLOP, per attention score, per parameter, ..., fitted to idle
  steps of the reference machine by benchmarks/clock_fidelity.py), so a
  genotype and seed train the same steps at the same learning rates, to the same
  val_bpb, whether the machine is idle or busy, and a small model is charged its
  fixed costs too. The budget holds a whole number of steps (a batch-size warmup's
  half-batch steps are charged as the steps they are: half the tokens, all the rest).
* 'flops': the same with a step charged its model matmul FLOPs only
  (`models.gpt.flops_per_token` x tokens) / `reference_flops_per_second`, which
  over-credits small models (their per-step costs are free).
All keep the machine's seconds of training beside (`TrialResult.wall_train_seconds`).
"""

from __future__ import annotations

import collections
import statistics
import time
from typing import Callable

from autoresearch.trial.config import TrialConfig


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

  def step_changed(self) -> None:
    """The steps from now on are of another kind (the full batch after a batch-size
    warmup's half batches): what the clock learned of the old ones no longer holds."""


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
    self._stale = 0   # unread steps of a kind no longer run: their durations are not kept

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

  def step_changed(self) -> None:
    # The next plan waits for a step of the new kind; the steps in flight are of the old.
    self._durations.clear()
    self._stale = len(self._unread)

  def dispatched(self) -> None:
    """A step is about to be handed to the device."""
    self._unread.append(self.wall_seconds())

  def finished(self) -> float:
    """The oldest unread step's loss was just read: the training seconds it ended at."""
    end = self.wall_seconds()
    duration = end - max(self._unread.popleft(), self._last_read)
    if self._stale:
      self._stale -= 1
    else:
      self._durations.append(duration)
    self._last_read = end
    return end


class FixedStepClock(_Clock):
  """The 'modelled' and 'flops' clocks: every step takes exactly `step_seconds`, or
  `warmup_step_seconds` when it starts at a progress below `warmup_until` (the
  half-batch steps of a batch-size warmup), so a budget holds the same whole number of
  steps on any machine under any load."""

  def __init__(self, budget_seconds: float, step_seconds: float,
               now: Callable[[], float] = time.perf_counter,
               warmup_step_seconds: float = 0.0, warmup_until: float = 0.0):
    super().__init__(budget_seconds, now)
    self.step_seconds = step_seconds
    self._warmup_step_seconds, self._warmup_until = warmup_step_seconds, warmup_until
    self._spent = 0.0                       # training seconds of the dispatched steps
    self._ends = collections.deque()        # the seconds each unread step ends at

  def seconds(self) -> float:
    return self._spent

  def _cost(self, start: float) -> float:
    """The training seconds of a step that starts at `start`."""
    if self.progress(start) < self._warmup_until:
      return self._warmup_step_seconds
    return self.step_seconds

  def plan(self, in_flight: bool) -> tuple[bool, float]:
    return self._fits(self._spent + self._cost(self._spent)), self.progress(self._spent)

  def plan_ahead(self, in_flight: bool, steps: int) -> list[float]:
    """The progress at which each of the next `steps` steps starts, for those that fit
    the budget: exact, as every step's cost is known in advance."""
    planned, start = [], self._spent
    for _ in range(steps):
      end = start + self._cost(start)
      if not self._fits(end):
        break
      planned.append(self.progress(start))
      start = end
    return planned

  def _fits(self, end: float) -> bool:
    # The relative slack absorbs the rounding of a budget that holds n steps exactly.
    return end <= self.budget * (1 + 1e-9)

  def dispatched(self) -> None:
    self._spent += self._cost(self._spent)
    self._ends.append(self._spent)

  def finished(self) -> float:
    return self._ends.popleft()


def make_clock(cfg: TrialConfig, step_seconds: float, warmup_step_seconds: float = 0.0,
               warmup_until: float = 0.0) -> _Clock:
  """The clock `cfg.clock` names. Under 'flops' and 'modelled' a step is charged
  `step_seconds`, or `warmup_step_seconds` before progress `warmup_until` (a batch-size
  warmup), as `step_cost.clock_seconds` has them; the wall clock reads the machine."""
  if cfg.clock in ('flops', 'modelled'):
    return FixedStepClock(cfg.budget_seconds, step_seconds,
                          warmup_step_seconds=warmup_step_seconds, warmup_until=warmup_until)
  return WallClock(cfg.budget_seconds)

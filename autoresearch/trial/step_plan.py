"""Which training step runs next, at which progress, and when a trial stops: the one
decision every process of a trial must take alike.

On one process the trial's clock decides before every step (`StepPlan.next`): a step
is dispatched if it fits the budget (and `max_steps`), and the watcher's or the loss
check's stop ends the trial at once.

On several hosts every step cannot ask process 0: that is a blocking cross-host round
trip before each dispatch. Instead process 0 plans up to `sync_steps` steps at a time
(`clock.plan_ahead`: the progress at which each would start) and shares the plan with
its stop, if any, in one collective (`distributed.share_plan`); every process then runs
exactly those steps at exactly those progresses before the next sync. A stop process 0
decides in between takes effect at the next sync, so up to `sync_steps` - 1 steps more
are trained (and read) than on one process; another process's own stop counts for
nothing. Under the modelled and FLOPs clocks the plan is exact; under the wall clock
the steps after the first of a plan run at progresses a median step apart, a
prediction, the same on every process.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional

from autoresearch.trial.results import Stop


# (stop record or None, progresses, capacity) -> process 0's (stop record, progresses)
Share = Callable[[Optional[dict], list, int], tuple]


class StepPlan:
  """The next step's progress, or the stop that ends the trial, on every process alike.
  `share`: None on one process (the clock decides each step), else the function that
  hands process 0's plan to every process (`distributed.share_plan`)."""

  def __init__(self, clock, max_steps: int, sync_steps: int, share: Optional[Share] = None):
    self._clock, self._max_steps, self._sync_steps = clock, max_steps, sync_steps
    self._share = share
    self._ahead = collections.deque()   # shared progresses of the steps not dispatched yet
    self.syncs = 0                      # times the plan was shared

  def next(self, stop: Optional[Stop], in_flight: bool,
           dispatched: int) -> tuple[Optional[Stop], Optional[float]]:
    """(the stop that ends the trial now, or None; the progress of the step to dispatch
    now, or None for no step now). `stop`: this process's own stop so far, or None;
    `in_flight`: a dispatched step is not read yet; `dispatched`: steps so far."""
    room = self._max_steps - dispatched if self._max_steps else self._sync_steps
    if self._share is None:
      if stop is not None:
        return stop, None
      fits, progress = self._clock.plan(in_flight)
      return None, progress if fits and room > 0 else None
    if self._ahead:
      return None, self._ahead.popleft()
    planned = ([] if stop is not None else
               self._clock.plan_ahead(in_flight, min(self._sync_steps, room)))
    record = dataclasses.asdict(stop) if stop is not None else None
    record, planned = self._share(record, planned, self._sync_steps)
    self.syncs += 1
    if record is not None:
      return Stop(**record), None
    self._ahead.extend(planned)
    return None, self._ahead.popleft() if self._ahead else None

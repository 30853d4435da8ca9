"""Crash-test hooks for the search's fault points (`store.FaultHook`)."""

import os
import signal
import threading


def kill_at(spec: str):
  """A fault hook that kills this process (SIGKILL, as a preemption without notice
  would) the N-th time it reaches point `name`, for spec 'name:N'; '' never kills.
  `mid-...` points kill from a timer 5 ms later, inside the work that follows."""
  if not spec:
    return lambda point: None
  name, nth = spec.rsplit(':', 1)
  seen = {'count': 0}

  def hook(point: str) -> None:
    if point != name:
      return
    seen['count'] += 1
    if seen['count'] != int(nth):
      return
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if name.startswith('mid-'):
      threading.Timer(0.005, kill).start()
    else:
      kill()
  return hook

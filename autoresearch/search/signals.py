"""Preemption signals: SIGTERM or SIGINT asks the process to stop within a grace period.

    with signals.GracefulStop(grace_seconds=30, what='stopping the trial in flight') as stop:
      while not stop.requested: ...

The first signal sets `requested` and starts a watchdog that exits the process (status
0: whatever was saved is whole) after `grace_seconds`; a second SIGINT raises
KeyboardInterrupt at once. Leaving the context restores the old handlers and cancels
the watchdog.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Optional

from absl import logging


SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
  """The handler of SIGTERM/SIGINT for the duration of a `with` block."""

  def __init__(self, grace_seconds: float, what: str):
    self.grace_seconds, self.what = grace_seconds, what
    self.requested_at: Optional[float] = None   # time.monotonic() of the first signal
    self._watchdog: Optional[threading.Timer] = None
    self._previous: dict = {}

  @property
  def requested(self) -> bool:
    return self.requested_at is not None

  def _on_signal(self, signum, frame) -> None:
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: now
    if self.requested:
      return
    self.requested_at = time.monotonic()
    logging.warning('signal %d: %s (exit within %.0f s)', signum, self.what, self.grace_seconds)
    self._watchdog = threading.Timer(self.grace_seconds, lambda: os._exit(0))
    self._watchdog.daemon = True
    self._watchdog.start()

  def __enter__(self) -> 'GracefulStop':
    self._previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    if self._watchdog is not None:
      self._watchdog.cancel()  # exiting in time by ourselves

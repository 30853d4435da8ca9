"""Training batches prepared ahead of the step that takes them, on a background thread.

    with Prefetcher(make_batch, seed=cfg.seed, depth=2) as batches:
      batch = batches.next()      # already sampled and placed on the devices

`make_batch(rng)` samples one batch from a `numpy.random.Generator` and places it on the
devices (a host gather and a host-to-device copy). The thread calls it in order with
one generator seeded with `seed`, so the k-th batch taken is exactly the k-th batch a
loop sampling inline with `np.random.default_rng(seed)` would have drawn: the trial's
batches, losses and val_bpb do not change. It keeps `depth` batches ready, so the
host's sampling and copying overlap the device's step instead of preceding it. numpy's
gathers and JAX's transfers release the GIL, so the thread runs beside the loop.

An exception in `make_batch` (say, a split too short for the sequence) is raised by the
`next()` that would have returned that batch; closing stops the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import numpy as np


_POLL_SECONDS = 0.05  # how often a producer blocked on a full queue checks for close


class _Failure:
  """An exception of the producer, handed to the consumer in the batch's place."""

  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """Batches from `make_batch(rng)` kept `depth` ahead on a daemon thread."""

  def __init__(self, make_batch: Callable[[np.random.Generator], Any], seed: int,
               depth: int = 2):
    if depth < 1:
      raise ValueError(f'depth={depth}: batches ahead, at least 1')
    self._make_batch = make_batch
    self._rng = np.random.default_rng(seed)
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._produce, name='batch-prefetch', daemon=True)
    self._thread.start()

  def _produce(self) -> None:
    while not self._closed.is_set():
      try:
        item = self._make_batch(self._rng)
      except BaseException as e:  # handed on: the consumer raises it
        item = _Failure(e)
      while not self._closed.is_set():
        try:
          self._queue.put(item, timeout=_POLL_SECONDS)
          break
        except queue.Full:
          continue
      if isinstance(item, _Failure):
        return

  def next(self) -> Any:
    """The next batch, in order; waits only if the thread has not made it yet."""
    if self._closed.is_set():
      raise RuntimeError('Prefetcher is closed')
    item = self._queue.get()
    if isinstance(item, _Failure):
      self.close()
      raise item.error
    return item

  def close(self) -> None:
    """Stops the thread and drops the batches it made ahead."""
    self._closed.set()
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join()

  def __enter__(self) -> 'Prefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

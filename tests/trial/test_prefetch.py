"""The batch prefetcher: the batches an inline loop would draw, in order; errors reach
the consumer; closing stops the thread."""

import threading
import time

import numpy as np
import pytest

from autoresearch.data import windows
from autoresearch.data.errors import DataError
from autoresearch.trial import prefetch


def test_prefetched_batches_are_the_inline_loop_s_batches(stdlib_corpus):
  split = stdlib_corpus.train
  inline_rng = np.random.default_rng(11)
  inline = [windows.sample_batch(inline_rng, split, 4, 32) for _ in range(20)]
  with prefetch.Prefetcher(lambda rng: windows.sample_batch(rng, split, 4, 32), seed=11,
                           depth=3) as batches:
    ahead = [batches.next() for _ in range(20)]
  for a, b in zip(ahead, inline):
    np.testing.assert_array_equal(a, b)


def test_batches_are_made_ahead_of_the_consumer():
  made = []

  def make(rng):
    made.append(time.perf_counter())
    return len(made)

  with prefetch.Prefetcher(make, seed=0, depth=2) as batches:
    deadline = time.perf_counter() + 5.0
    while len(made) < 3 and time.perf_counter() < deadline:
      time.sleep(0.01)
    # depth 2 queued and a third made, waiting for room: none taken yet.
    assert len(made) == 3
    time.sleep(0.1)
    assert len(made) == 3  # the queue is full: the thread waits, it does not run ahead
    assert [batches.next() for _ in range(4)] == [1, 2, 3, 4]


def test_an_error_in_sampling_reaches_the_consumer_at_that_batch():
  def make(rng):
    make.calls += 1
    if make.calls == 3:
      raise DataError('split too short')
    return make.calls
  make.calls = 0

  batches = prefetch.Prefetcher(make, seed=0)
  assert [batches.next(), batches.next()] == [1, 2]
  with pytest.raises(DataError, match='split too short'):
    batches.next()
  with pytest.raises(RuntimeError, match='closed'):
    batches.next()


def test_close_stops_the_thread_and_rejects_a_bad_depth():
  before = threading.active_count()
  batches = prefetch.Prefetcher(lambda rng: rng.integers(10), seed=0, depth=1)
  batches.next()
  batches.close()
  assert threading.active_count() == before
  with pytest.raises(ValueError, match='depth=0'):
    prefetch.Prefetcher(lambda rng: 0, seed=0, depth=0)

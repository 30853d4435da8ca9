"""A genotype's compiled programs, and the in-process cache that lets genotypes share them.

    programs, compile_seconds, hit = programs.compiled(key, compile_all, capacity)

A trial runs five programs: parameter init, optimizer-state init, the train step (and
a batch-size warmup's half-batch step) and the eval step. What they compute depends on
the model's config, the optimizer's branches (`optim.program_config`), the batch and
evaluation shapes and the devices, not on the recipe's numbers (learning rates,
momenta, decay, clip, schedule fractions), which the train step takes as inputs
(`optim.runtime_values`). So an edit of a number reuses the programs of the genotype
it edits: `ProgramKey` is what decides, and a hit costs no compile (`compile_seconds`
is then the lookup's). The cache keeps the `capacity` most recently used keys (least
recently used out first), beside JAX's persistent compilation cache on disk, which
still spares a miss the backend compile of a program seen in an earlier process.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, NamedTuple


class ProgramKey(NamedTuple):
  """Everything a trial's compiled programs depend on."""
  model_cfg: Any               # models.gpt.GPTConfig (frozen, hashable)
  optim_program: Any           # optim.program_config(...): the optimizer's branches
  batch_shape: tuple           # (batch_size, seq_len)
  micro_batches: int           # gradient-accumulation slices per step
  half_batch_step: bool        # a batch-size warmup's step is compiled too
  eval_specs: tuple            # ((shape, dtype) of the inputs, targets and mask of an eval split)
  devices: tuple               # (device ids, mesh shape)


class Programs(NamedTuple):
  """Compiled programs of one `ProgramKey`."""
  graphdef: Any                # the model's nnx graph definition
  init_params: Any             # compiled: seed (int32, placed) -> placed parameters
  init_opt_state: Any          # compiled: parameters -> placed optimizer state
  train_step: Any              # compiled (param leaves, opt_state leaves, batch, progress,
                               # values) -> (param leaves, opt_state leaves, loss)
  warmup_step: Any             # the half-batch step, or None
  eval_step: Any               # compiled (params, inputs, targets, mask) -> nats per batch
  memory_gb: float             # GB per device the train step needs (XLA's memory analysis)


class ProgramCache:
  """The `capacity` most recently used keys' programs (0: none kept)."""

  def __init__(self):
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()
    self.hits = self.misses = 0

  def get(self, key: ProgramKey, compile_all: Callable[[], Programs],
          capacity: int) -> tuple[Programs, bool]:
    """(the programs of `key`, whether they were cached), compiling them on a miss;
    with `capacity` 0 always compiled afresh."""
    if capacity == 0:
      return compile_all(), False
    with self._lock:
      programs = self._entries.get(key)
      if programs is not None:
        self._entries.move_to_end(key)
        self.hits += 1
        return programs, True
    programs = compile_all()
    with self._lock:
      self.misses += 1
      self._entries[key] = programs
      while len(self._entries) > capacity:
        self._entries.popitem(last=False)
    return programs, False

  def clear(self) -> None:
    with self._lock:
      self._entries.clear()

  def __len__(self) -> int:
    return len(self._entries)


CACHE = ProgramCache()


def compiled(key: ProgramKey, compile_all: Callable[[], Programs],
             capacity: int) -> tuple[Programs, float, bool]:
  """(programs, seconds spent getting them, whether the cache had them)."""
  start = time.perf_counter()
  programs, hit = CACHE.get(key, compile_all, capacity)
  return programs, time.perf_counter() - start, hit

"""The only Orbax code: save and restore the whole search state.

A checkpoint has two items: `arrays` (a pytree of arrays: policy parameters, optimizer
state, rollout buffer, RNG key data) and `meta` (JSON: counters, best genotype, noise
estimate, history, calibration, RNG states of numpy generators, the config fingerprint,
and the ledger rows of the step that produced it). Orbax writes each step into a
temporary folder and renames it when complete, so a kill mid-save leaves the previous
step intact; the last `keep` steps are kept. Restores go into an abstract target
(shapes and dtypes from `jax.eval_shape`), and a step that fails to restore falls back
to the one before it, with a warning (`unreadable` lists the steps skipped). The
folder may be local or in a bucket (gs://...): Orbax reads and writes either.
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from autoresearch.workdir import io as workdir_io


class _QuietEmptyMerge(std_logging.Filter):
  """Drops Orbax's warning that a save has no per-process OCDBT files to merge: a state
  without arrays (agents that keep everything in JSON meta) writes none, every trial."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return 'Skipping merge of OCDBT checkpoints' not in str(record.msg)


class _OneLineSaveErrors(std_logging.Filter):
  """Drops, below --verbosity=1, the error (with its traceback) that Orbax logs from each
  of its worker threads when a write fails: the failure reaches `Checkpointer.save`,
  which raises it as one CheckpointError line (a full disk printed three tracebacks)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    orbax_thread = 'orbax' in record.pathname and 'raised an exception' in str(record.msg)
    return not orbax_thread or logging.level_debug()


std_logging.getLogger('absl').addFilter(_QuietEmptyMerge())   # Orbax logs through absl
std_logging.getLogger('absl').addFilter(_OneLineSaveErrors())


class CheckpointError(workdir_io.WorkdirError):
  """No usable checkpoint, or the workdir cannot hold one."""


def _multi_process() -> bool:
  return jax.process_count() > 1


def _abstract(tree):
  if _multi_process():  # restored as host arrays: process 0's state is its own
    return jax.tree_util.tree_map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), tree)
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores (arrays, meta) steps under `directory`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = workdir_io.path(directory)
    self.unreadable: list[int] = []   # steps the last `restore` skipped, newest first
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise CheckpointError(f'cannot create the checkpoint folder {self.directory}: '
                            f'{workdir_io.reason(e)}') from e
    # On several processes only process 0 holds the search state and checkpoints it:
    # Orbax must not wait for the others.
    multiprocessing = ocp.options.MultiprocessingOptions(
        primary_host=0, active_processes={0} if jax.process_count() > 1 else None)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=False, create=False,  # made above
        cleanup_tmp_directories=True, multiprocessing_options=multiprocessing)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('arrays', 'meta'))

  def save(self, step: int, arrays: Any, meta: dict) -> None:
    """Writes step `step` completely, or raises CheckpointError and leaves the previous
    steps as they were (Orbax's temporary folder is never renamed into place)."""
    if _multi_process():  # Orbax saves only global arrays across processes: host copies
      arrays = jax.tree_util.tree_map(np.asarray, arrays)
    try:
      self.manager.save(step, args=ocp.args.Composite(
          arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()
    except Exception as e:  # OSError (disk full, read-only) or Orbax's own errors
      raise CheckpointError(f'could not save checkpoint {step} in {self.directory}: '
                            f'{workdir_io.reason(e)}') from e

  def steps(self) -> list[int]:
    self.manager.reload()  # steps written by an earlier process
    return sorted(self.manager.all_steps())

  def restore(self, abstract_arrays: Any) -> Optional[tuple[int, Any, dict]]:
    """(step, arrays, meta) of the newest step that restores, or None without steps.
    `abstract_arrays` gives the structure, shapes and dtypes to restore into."""
    target = _abstract(abstract_arrays)
    steps = self.steps()
    self.unreadable = []
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return step, restored['arrays'], dict(restored['meta'])
      except Exception as e:  # a corrupt or half-written step
        logging.warning('checkpoint step %d in %s is unreadable (%s: %s); trying the one '
                        'before it', step, self.directory, type(e).__name__, str(e)[:200])
        self.unreadable.append(step)
    if steps:
      raise CheckpointError(f'no readable checkpoint among steps {steps} in {self.directory}')
    return None

  def set_aside(self, step: int, folder: str) -> str:
    """Moves unreadable step `step` out of the checkpoint folder into `folder` (deletes
    it in a bucket, which cannot rename a folder), so the search can write that step
    again; returns what was done, in words."""
    source = self.directory / str(step)
    if workdir_io.is_local(self.directory) and source.exists():
      target = workdir_io.path(folder, str(step))
      workdir_io.makedirs(target.parent)
      if target.exists():
        target = target.with_name(f'{step}.{os.getpid()}')
      source.rename(target)
      done = f'moved to {target}'
    else:
      self.manager.delete(step)
      done = 'deleted'
    self.manager.reload()
    return done

  def close(self) -> None:
    self.manager.close()


def _single_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer that this process uses alone: on several processes only process 0
  reads or writes a policy, so no barrier may wait for the others."""
  if not _multi_process():
    return ocp.StandardCheckpointer()
  index = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=index, active_processes={index}, barrier_sync_key_prefix=f'tree{index}'))


def save_tree(path: str, tree: Any) -> None:
  """Writes one pytree of arrays to `path` (a folder, replaced if there): a shipped
  policy's parameters. CheckpointError when it cannot."""
  try:
    with _single_checkpointer() as checkpointer:
      checkpointer.save(workdir_io.path(path), tree, force=True)
  except Exception as e:
    raise CheckpointError(f'could not write {path}: {e}') from e


def restore_tree(path: str, like: Any) -> Any:
  """The pytree saved at `path`, restored into the structure, shapes and dtypes of
  `like`. CheckpointError when it cannot."""
  try:
    with _single_checkpointer() as checkpointer:
      return checkpointer.restore(workdir_io.path(path), _abstract(like))
  except Exception as e:
    raise CheckpointError(f'could not read {path}: {e}') from e

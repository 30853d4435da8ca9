"""Crash-test hooks for the fault points of a trial and a search
(`autoresearch.runtime.faults`): a test puts one in place of `faults.point`."""

import errno
import os
import signal
import threading

from etils.epath import testing as epath_testing


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


def _no_space(*_, **__):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk() -> None:
  """From now on, every write through etils.epath (the ledger, best_genotype.json, the
  report, Orbax's checkpoint metadata) fails with ENOSPC, as on a full disk; reads
  still work."""
  def open_(original, path, mode='r', *args, **kwargs):
    if any(c in mode for c in 'wax+'):
      _no_space()
    return original(path, mode, *args, **kwargs)
  def mkdir(original, path, *args, **kwargs):
    if not os.path.isdir(path):   # an existing folder needs no space
      _no_space()
    return original(path, *args, **kwargs)
  mock = epath_testing.mock_epath(open=open_, mkdir=mkdir, makedirs=mkdir, copy=_no_space,
                                  rename=_no_space, replace=_no_space)
  mock.__enter__()   # until `empty_disk` (a full disk does not empty itself)
  _FULL.append(mock)  # held: a collected generator would undo the patch


_FULL = []


def empty_disk() -> None:
  """Undoes `fill_disk` (for tests that go on in the same process)."""
  while _FULL:
    _FULL.pop().__exit__(None, None, None)


def disk_full_at(spec: str):
  """A fault hook that fills the disk (`fill_disk`) the N-th time the search reaches
  point `name`, for spec 'name:N'; '' never does."""
  if not spec:
    return lambda point: None
  name, nth = spec.rsplit(':', 1)
  seen = {'count': 0}

  def hook(point: str) -> None:
    if point == name:
      seen['count'] += 1
      if seen['count'] == int(nth):
        fill_disk()
  return hook


def both(*hooks):
  """One fault hook that calls each of `hooks`."""
  def hook(point: str) -> None:
    for h in hooks:
      h(point)
  return hook

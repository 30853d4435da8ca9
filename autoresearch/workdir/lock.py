"""One writer per workdir.

    lock = workdir_lock.acquire(workdir)   # WorkdirLocked if another search holds it
    ...
    lock.release()                         # or the process dies: the kernel releases it

A local workdir is locked with `flock` on workdir/search.lock, held for the life of the
process: the kernel drops the lock when the process ends, however it ends (kill -9
included), so a restarted search never waits for a stale lock. The file also holds the
holder's pid, host and start time, which a refused search names. (On NFS, Linux maps
flock to NFS byte-range locks; a file system without locks gets a warning and no lock.)

A bucket (gs://...) has no lock the kernel releases. There the lock is twofold and
weaker, and says so: a local flock keyed by the workdir's URI (two searches on one
host), and an object workdir/search.lock with the holder's information. A search that
finds that object written by another holder cannot tell whether it still runs (a
preempted VM never removes it), so it warns, naming the holder, and starts; the
reconciliation at start-up (store.py) then refuses a ledger that two writers mixed.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from typing import Optional

from absl import logging

from autoresearch.workdir import io as workdir_io


LOCK_NAME = 'search.lock'


class WorkdirLocked(workdir_io.WorkdirError):
  """Another search holds the workdir."""


def _holder() -> dict:
  return {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)[:300]}


def _describe(info: str) -> str:
  try:
    holder = json.loads(info)
    return f'pid {holder["pid"]} on host {holder["host"]}, started {holder["started"]}'
  except (ValueError, KeyError, TypeError):
    return 'a process that has not yet written its pid, host and start time'


class WorkdirLock:
  """A held lock on one workdir (see the module docstring); `release` is idempotent."""

  def __init__(self, workdir: str, fd: Optional[int], remote_object=None, holder=None):
    self.workdir, self._fd, self._object, self._holder = workdir, fd, remote_object, holder

  def release(self) -> None:
    """Gives the workdir up (a remote lock object is removed if it still names us)."""
    if self._object is not None:
      try:
        if json.loads(workdir_io.read_text(self._object) or '{}') == self._holder:
          self._object.unlink()
      except (OSError, ValueError) as e:
        logging.warning('could not remove the lock object %s: %s', self._object,
                        workdir_io.reason(e))
      self._object = None
    if self._fd is not None:
      os.close(self._fd)   # closing the last descriptor drops the flock
      self._fd = None


def _flock(file: str, workdir: str, holder: dict) -> Optional[int]:
  """The descriptor of `file`, flocked and holding `holder`'s information; None where
  the file system has no locks. WorkdirLocked when another process holds it."""
  fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by exec'd children
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    info = os.pread(fd, 4096, 0).decode(errors='replace')
    os.close(fd)
    raise WorkdirLocked(
        f'the workdir {workdir} is in use by another search: {_describe(info)}. Stop '
        'that search first, or use another --workdir (--mode=report reads a workdir in '
        'use)') from None
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      raise
    logging.warning('the file system of %s has no file locks (%s): nothing stops a second '
                    'search on this workdir', workdir, workdir_io.reason(e))
    return None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    os.fsync(fd)
  except OSError:
    os.close(fd)
    raise
  return fd


def acquire(workdir: str) -> WorkdirLock:
  """Locks `workdir` (which must exist) for this process, or raises WorkdirLocked
  naming the search that holds it; WorkdirError when the lock cannot be written."""
  holder = _holder()
  try:
    if workdir_io.is_local(workdir):
      file = os.fspath(workdir_io.path(workdir, LOCK_NAME))
      return WorkdirLock(workdir, _flock(file, workdir, holder))
    return _acquire_remote(workdir, holder)
  except WorkdirLocked:
    raise
  except OSError as e:
    raise workdir_io.WorkdirError(
        f'cannot lock the workdir {workdir}: {workdir_io.reason(e)}') from e


def _acquire_remote(workdir: str, holder: dict) -> WorkdirLock:
  key = hashlib.sha256(os.fspath(workdir_io.path(workdir)).encode()).hexdigest()[:20]
  folder = workdir_io.local_cache_dir('locks')
  os.makedirs(folder, exist_ok=True)
  fd = _flock(os.path.join(folder, f'{key}.lock'), workdir, holder)
  remote_object = workdir_io.path(workdir, LOCK_NAME)
  try:
    earlier = workdir_io.read_text(remote_object)
    if earlier:
      logging.warning(
          'the lock object %s names another search: %s. A lock in a bucket cannot tell '
          'whether that search still runs (one on a preempted VM never removes it); this '
          'search starts, and if the other one runs, stop one of them: two searches on '
          'one workdir mix their ledgers', remote_object, _describe(earlier))
    remote_object.write_text(json.dumps(holder))
  except BaseException:
    if fd is not None:
      os.close(fd)
    raise
  return WorkdirLock(workdir, fd, remote_object, holder)

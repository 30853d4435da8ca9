"""Reads and writes of a search's workdir, through `etils.epath` (what Orbax uses), so
a workdir may be a local folder or a bucket (gs://...) alike.

What differs between the two is durability, not the calls:
- a local file is appended to, flushed and fsynced; a whole file is written to a
  temporary file next to it, fsynced and renamed into place (then the folder fsynced),
  so a reader or a kill never sees half a file;
- an object store cannot append or rename atomically, but one object write is atomic
  (a reader sees the old object or the new one): an append rewrites the whole object,
  and a whole-file write goes straight to its name.
"""

from __future__ import annotations

import os
from typing import Union

from etils import epath


LOCAL_SCHEMES = ('', 'file')


class WorkdirError(RuntimeError):
  """The workdir cannot be read or written as the search needs (full, read-only,
  in use by another search, or holding what no checkpoint explains)."""


def path(location: Union[str, os.PathLike], *parts: str) -> epath.Path:
  """`location`/`parts` as an epath.Path (a local path is made absolute)."""
  location = os.fspath(location)
  if is_local(location):
    location = os.path.abspath(location.removeprefix('file://'))
  return epath.Path(location).joinpath(*parts)


def is_local(location: Union[str, os.PathLike]) -> bool:
  """Whether `location` is on this machine's file system (no URI scheme, or file://)."""
  text = os.fspath(location)
  return '://' not in text or text.split('://', 1)[0] in LOCAL_SCHEMES


def reason(error: BaseException) -> str:
  """The short cause of an I/O error ('No space left on device'), for one-line messages."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return f'{type(error).__name__}: {error}'


def makedirs(folder: epath.Path) -> None:
  """Creates `folder` and its parents; WorkdirError when it cannot."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create the folder {folder}: {reason(e)}') from e


def read_text(file: epath.Path) -> str:
  """The text of `file`, or '' when there is none."""
  return file.read_text() if file.exists() else ''


def append_line(file: epath.Path, line: str) -> None:
  """Appends `line` and a newline to `file`, durably (see the module docstring)."""
  if not is_local(file):
    file.write_text(read_text(file) + line + '\n')
    return
  with file.open('a') as f:
    f.write(line + '\n')
    f.flush()
    os.fsync(f.fileno())


def write_atomic(file: epath.Path, data: Union[str, bytes]) -> None:
  """Replaces `file` by `data` (text or bytes) in one step a reader cannot split."""
  mode = 'wb' if isinstance(data, bytes) else 'w'
  if not is_local(file):
    with file.open(mode) as f:
      f.write(data)
    return
  tmp = file.parent / f'.{file.name}.{os.getpid()}.tmp'   # two writers never share one
  try:
    with tmp.open(mode) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    tmp.replace(file)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise
  _fsync_folder(file.parent)


def _fsync_folder(folder: epath.Path) -> None:
  # The rename is durable only once the folder's entry is on disk (power loss).
  fd = os.open(os.fspath(folder), os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def local_cache_dir(*parts: str) -> str:
  """A folder under this user's cache (~/.cache/autoresearch, or $XDG_CACHE_HOME's):
  what must stay on this machine when the workdir is remote."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'autoresearch', *parts)


def compilation_cache_dir(workdir: str) -> str:
  """Where JAX's compilation cache of a workdir lives: workdir/jax_cache for a local
  workdir; for a remote one a local folder (compiled code belongs to this host, and the
  cache's size cap needs local file locks)."""
  if is_local(workdir):
    return os.fspath(path(workdir, 'jax_cache'))
  return local_cache_dir('jax_cache')

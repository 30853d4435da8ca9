"""enwik8 (the Hutter-prize file): downloaded once into a cache, verified by md5, and
vouched for by a marker file so later runs skip the hashing."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile

from absl import logging

from autoresearch.data.errors import DataError


_HASH_CHUNK = 1 << 20


def _hash_file(path: str) -> tuple[str, str]:
  """(md5, sha256) of a file, streamed so that 100 MB never sits in memory."""
  md5, sha = hashlib.md5(), hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_HASH_CHUNK):
      md5.update(chunk)
      sha.update(chunk)
  return md5.hexdigest(), sha.hexdigest()


def _atomic_write_stream(src, dest: str) -> None:
  """Copy a readable stream to dest via a temporary file in the same folder.

  The rename is atomic, so an interrupted copy never looks like a finished one.
  """
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest),
                             prefix=f'.{os.path.basename(dest)}.', suffix='.part')
  try:
    with os.fdopen(fd, 'wb') as out:
      shutil.copyfileobj(src, out, _HASH_CHUNK)
    os.replace(tmp, dest)
  except BaseException:
    _remove(tmp)
    raise


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def read_marker(marker: str, target: str, md5: str) -> str | None:
  """The stored sha256 if the marker vouches for target with this md5, else None."""
  try:
    with open(marker) as f:
      info = json.load(f)
    if info['md5'] == md5 and info['size'] == os.path.getsize(target):
      return info['sha256']
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return None


def fetch(cache_dir: str, url: str, md5: str) -> tuple[str, str]:
  """Path of the verified enwik8 file in cache_dir and its sha256."""
  os.makedirs(cache_dir, exist_ok=True)
  archive = os.path.join(cache_dir, 'enwik8.zip')
  target = os.path.join(cache_dir, 'enwik8')
  marker = os.path.join(cache_dir, 'enwik8.md5-ok')
  sha = read_marker(marker, target, md5)
  if sha is not None:
    return target, sha
  # A stale marker must go before anything is replaced, or it could vouch for
  # a file it never checked.
  _remove(marker)
  if not os.path.exists(archive):
    logging.info('downloading %s to %s', url, archive)
    try:
      with urllib.request.urlopen(url) as response:
        _atomic_write_stream(response, archive)
    except (OSError, http.client.HTTPException) as e:
      raise DataError(f'{archive}: download from {url} failed: {e}') from e
  try:
    with zipfile.ZipFile(archive) as zf, zf.open('enwik8') as member:
      _atomic_write_stream(member, target)
  except KeyError as e:
    raise DataError(f"{archive}: no member 'enwik8' in the archive") from e
  except zipfile.BadZipFile as e:
    _remove(archive)   # a broken download would otherwise stick in the cache
    raise DataError(f'{archive}: not a valid zip file ({e}); removed it') from e
  actual_md5, sha = _hash_file(target)
  if actual_md5 != md5:
    _remove(target)
    _remove(archive)   # so the next call downloads afresh instead of re-failing
    raise DataError(f'{target}: md5 mismatch: expected {md5}, got {actual_md5}; '
                    'removed the file and its archive')
  info = {'md5': md5, 'sha256': sha, 'size': os.path.getsize(target)}
  _atomic_write_stream(io.BytesIO(json.dumps(info).encode()), marker)
  return target, sha

"""Byte-level corpora for training a small GPT (vocabulary 256, one token per byte).

Three sources:

* ``pystdlib`` (default): the running interpreter's standard-library ``.py``
  sources. Needs no download, but depends on the Python version, which is
  therefore part of the description.
* ``text``: a UTF-8 file or a folder of UTF-8 files.
* ``enwik8``: the Hutter-prize file, downloaded once into a cache and
  memory-mapped; the standard contiguous 90/5/5 split.

For the document sources each document is assigned to train/val/test by a hash
of its relative path, so the assignment is stable across runs and machines and
does not move when other documents are added or removed. Each document is
followed by a NUL byte marking its end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import logging
import os
import platform
import shutil
import sysconfig
import tempfile
import urllib.request
import zipfile

import numpy as np

log = logging.getLogger(__name__)

SOURCES = ("pystdlib", "text", "enwik8")
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_MD5 = "a1fa5ffddb56f4953e226637dabbb36a"
CHUNK_BYTES = 64 * 1024          # a single text file is cut into documents of this size
_EOD = b"\x00"                   # end-of-document marker
_STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test"})
_HASH_CHUNK = 1 << 20


class DataError(ValueError):
    """A data source that cannot be used; the message names the path."""


@dataclasses.dataclass(frozen=True, eq=False)   # eq=False: field-wise == on arrays is ambiguous
class Corpus:
    """A byte corpus split into train/val/test uint8 arrays (possibly memmaps)."""

    source: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fingerprint: str
    description: str

    def byte_counts(self) -> dict[str, int]:
        """Number of bytes in each split."""
        return {"train": int(self.train.size), "val": int(self.val.size),
                "test": int(self.test.size)}

    def unigram_entropy_bits(self) -> float:
        """Shannon entropy (bits/byte) of the train split's byte histogram."""
        counts = np.bincount(np.asarray(self.train), minlength=256)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------------------
# Document sources

def assign_split(relative_path: str, val_fraction: float = 0.05,
                 test_fraction: float = 0.05) -> str:
    """Return 'train', 'val' or 'test' for a document, from a hash of its relative path."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).hexdigest()
    h = int(digest[:16], 16) / 2**64
    if h < val_fraction:
        return "val"
    if h < val_fraction + test_fraction:
        return "test"
    return "train"


def _walk_files(root: str, skip_dir, skip_file) -> list[str]:
    """Relative POSIX paths of the regular files below root, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into excluded folders.
        dirnames[:] = [d for d in dirnames if not skip_dir(d)]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if skip_file(name) or not os.path.isfile(os.path.join(dirpath, name)):
                continue
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            # POSIX separators so the split hash is the same on every OS.
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _stdlib_paths(root: str) -> list[str]:
    return _walk_files(
        root,
        skip_dir=lambda d: d in _STDLIB_EXCLUDED_DIRS,
        skip_file=lambda f: not f.endswith(".py") or f.startswith("test_"))


def document_paths(source: str, path: str | os.PathLike | None = None) -> list[str]:
    """Relative names of a document source's documents, in corpus order.

    For a single text file these are its 64 KiB chunks, ``name#index``.
    """
    if source == "pystdlib":
        return _stdlib_paths(sysconfig.get_paths()["stdlib"])
    if source == "text":
        return [name for name, _ in _text_documents(path)[0]]
    raise DataError(f"source {source!r} has no documents; document sources are "
                    "'pystdlib' and 'text'")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e


def _check_utf8(path: str, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte offset {e.start} "
                        f"({e.reason})") from e


def _text_documents(path) -> tuple[list[tuple[str, bytes]], str]:
    """Documents of a text file or folder, plus a description."""
    if path is None:
        raise DataError("source 'text' needs a path (a UTF-8 file or a folder); got None")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        names = _walk_files(path, skip_dir=lambda d: d.startswith("."),
                            skip_file=lambda f: f.startswith("."))
        if not names:
            raise DataError(f"{path}: folder contains no files")
        docs = []
        for name in names:
            full = os.path.join(path, *name.split("/"))
            data = _read_bytes(full)
            _check_utf8(full, data)
            docs.append((name, data))
        if not any(data for _, data in docs):
            raise DataError(f"{path}: all {len(docs)} files are empty")
        return docs, f"text: {path}, {len(docs)} files"
    data = _read_bytes(path)
    if not data:
        raise DataError(f"{path}: file is empty")
    _check_utf8(path, data)
    # Chunks keep file order (not name order: 'f#10' would sort before 'f#2'),
    # and a chunk may split a multi-byte character, which is harmless at byte level.
    base = os.path.basename(path)
    view = memoryview(data)
    docs = [(f"{base}#{i}", view[start:start + CHUNK_BYTES])
            for i, start in enumerate(range(0, len(data), CHUNK_BYTES))]
    return docs, f"text: {path}, 1 file in {len(docs)} chunks of {CHUNK_BYTES // 1024} KiB"


def _fingerprint(docs) -> str:
    h = hashlib.sha256()
    for name, data in docs:
        encoded = name.encode("utf-8")
        # Length prefixes make the encoding unambiguous (no name/content boundary games).
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _split_documents(source, docs, description, where, val_fraction, test_fraction) -> Corpus:
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for name, data in docs:
        parts[assign_split(name, val_fraction, test_fraction)].append(data)
    for split in ("train", "val", "test"):
        if not parts[split]:
            raise DataError(
                f"{where}: {split} split is empty: too few documents ({len(docs)}) "
                f"for val_fraction={val_fraction}, test_fraction={test_fraction}")
    arrays = {}
    for split, items in parts.items():
        # One join: every document followed by its end marker.
        joined = _EOD.join(items) + _EOD
        arrays[split] = np.frombuffer(joined, dtype=np.uint8)
    return Corpus(source=source, fingerprint=_fingerprint(docs), description=description,
                  **arrays)


# ---------------------------------------------------------------------------
# enwik8

def _hash_file(path: str) -> tuple[str, str]:
    """(md5, sha256) of a file, streamed so that 100 MB never sits in memory."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _atomic_write_stream(src, dest: str) -> None:
    """Copy a readable stream to dest via a temporary file in the same folder.

    The rename is atomic, so an interrupted copy never looks like a finished one.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest),
                               prefix=f".{os.path.basename(dest)}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
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


def _read_marker(marker: str, target: str, md5: str) -> str | None:
    """The stored sha256 if the marker vouches for target with this md5, else None."""
    try:
        with open(marker) as f:
            info = json.load(f)
        if info["md5"] == md5 and info["size"] == os.path.getsize(target):
            return info["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _fetch_enwik8(cache_dir: str, url: str, md5: str) -> tuple[str, str]:
    """Path of the verified enwik8 file in cache_dir and its sha256."""
    os.makedirs(cache_dir, exist_ok=True)
    archive = os.path.join(cache_dir, "enwik8.zip")
    target = os.path.join(cache_dir, "enwik8")
    marker = os.path.join(cache_dir, "enwik8.md5-ok")
    sha = _read_marker(marker, target, md5)
    if sha is not None:
        return target, sha
    # A stale marker must go before anything is replaced, or it could vouch for
    # a file it never checked.
    _remove(marker)
    if not os.path.exists(archive):
        log.info("downloading %s to %s", url, archive)
        try:
            with urllib.request.urlopen(url) as response:
                _atomic_write_stream(response, archive)
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"{archive}: download from {url} failed: {e}") from e
    try:
        with zipfile.ZipFile(archive) as zf, zf.open("enwik8") as member:
            _atomic_write_stream(member, target)
    except KeyError as e:
        raise DataError(f"{archive}: no member 'enwik8' in the archive") from e
    except zipfile.BadZipFile as e:
        _remove(archive)   # a broken download would otherwise stick in the cache
        raise DataError(f"{archive}: not a valid zip file ({e}); removed it") from e
    actual_md5, sha = _hash_file(target)
    if actual_md5 != md5:
        _remove(target)
        _remove(archive)   # so the next call downloads afresh instead of re-failing
        raise DataError(f"{target}: md5 mismatch: expected {md5}, got {actual_md5}; "
                        "removed the file and its archive")
    info = {"md5": md5, "sha256": sha, "size": os.path.getsize(target)}
    _atomic_write_stream(io.BytesIO(json.dumps(info).encode()), marker)
    return target, sha


def _load_enwik8(cache_dir, url, md5, val_fraction, test_fraction) -> Corpus:
    if cache_dir is None:
        cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")
    target, sha = _fetch_enwik8(os.fspath(cache_dir), url, md5)
    data = np.memmap(target, dtype=np.uint8, mode="r")
    n = data.size
    # Integer counts so the real file splits at exactly 90M / 95M.
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) <= 0:
        raise DataError(f"{target}: {n} bytes is too small to split")
    return Corpus(
        source="enwik8", train=data[:n_train], val=data[n_train:n_train + n_val],
        test=data[n_train + n_val:], fingerprint=sha,
        description=f"enwik8: {target}, {n:,} bytes, md5 {md5}")


# ---------------------------------------------------------------------------

def load_corpus(source: str = "pystdlib", path: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None,
                val_fraction: float = 0.05, test_fraction: float = 0.05,
                enwik8_url: str = ENWIK8_URL, enwik8_md5: str = ENWIK8_MD5) -> Corpus:
    """Load a byte corpus and split it into train/val/test.

    source: 'pystdlib' (path ignored), 'text' (path: UTF-8 file or folder) or
    'enwik8' (downloaded into cache_dir, default ~/.cache/autoresearch; the
    fractions are contiguous blocks at the end of the file). Raises DataError
    for a source that cannot be used.
    """
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, 0 < test_fraction and a sum below 1; "
                         f"got {val_fraction}, {test_fraction}")
    if source == "pystdlib":
        root = sysconfig.get_paths()["stdlib"]
        names = _stdlib_paths(root)
        docs = [(n, _read_bytes(os.path.join(root, *n.split("/")))) for n in names]
        description = (f"pystdlib: {platform.python_implementation()} "
                       f"{platform.python_version()} stdlib, {len(docs)} files")
        return _split_documents(source, docs, description, root, val_fraction, test_fraction)
    if source == "text":
        docs, description = _text_documents(path)
        return _split_documents(source, docs, description, os.fspath(path),
                                val_fraction, test_fraction)
    if source == "enwik8":
        return _load_enwik8(cache_dir, enwik8_url, enwik8_md5, val_fraction, test_fraction)
    raise DataError(f"unknown source {source!r}; valid sources: {', '.join(SOURCES)}")


def sample_batch(rng: np.random.Generator, split: np.ndarray, batch_size: int,
                 seq_len: int) -> np.ndarray:
    """Random windows of seq_len + 1 bytes, uint8 (batch_size, seq_len + 1).

    Inputs are ``batch[:, :-1]``, targets ``batch[:, 1:]``.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive; got {batch_size}, {seq_len}")
    n = len(split)
    if n < seq_len + 1:
        raise DataError(f"split has {n} bytes; a window of seq_len={seq_len} needs "
                        f"{seq_len + 1}")
    starts = rng.integers(0, n - seq_len, size=batch_size)
    # asarray drops the memmap subclass so the gather yields a plain array.
    return np.asarray(split)[starts[:, None] + np.arange(seq_len + 1)].astype(np.uint8, copy=False)


def eval_windows(split: np.ndarray, num_bytes: int,
                 seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed evaluation set: num_bytes predicted bytes in windows of seq_len.

    Returns (inputs, targets, mask), each (ceil(num_bytes / seq_len), seq_len);
    window i predicts split[i*T+1 : i*T+T+1] from split[i*T : i*T+T]. The tail
    of the last window is zero-padded and masked, so mask.sum() == num_bytes
    for every seq_len and all models are scored on the same bytes.
    """
    if num_bytes < 1 or seq_len < 1:
        raise ValueError(f"num_bytes and seq_len must be positive; got {num_bytes}, {seq_len}")
    if len(split) < num_bytes + 1:
        raise DataError(f"split has {len(split)} bytes; evaluating {num_bytes} bytes "
                        f"needs {num_bytes + 1}")
    n_windows = -(-num_bytes // seq_len)
    flat = np.zeros(n_windows * seq_len + 1, dtype=np.uint8)
    flat[:num_bytes + 1] = split[:num_bytes + 1]
    inputs = flat[:-1].reshape(n_windows, seq_len).copy()
    targets = flat[1:].reshape(n_windows, seq_len).copy()
    mask = (np.arange(n_windows * seq_len) < num_bytes).reshape(n_windows, seq_len)
    return inputs, targets, mask


def corpus_from_config(config) -> Corpus:
    """The corpus named by `config.data`."""
    d = config.data
    return load_corpus(d.source, path=d.path or None, cache_dir=d.cache_dir or None,
                       val_fraction=d.val_fraction, test_fraction=d.test_fraction)

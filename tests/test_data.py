"""Tests for autoresearch.data: corpora, splits, batches and evaluation windows."""

import hashlib
import os
import platform
import re
import sysconfig
import zipfile

import numpy as np
import pytest

from autoresearch import data
from autoresearch.data import DataError


@pytest.fixture(scope="module")
def stdlib_corpus():
    return data.load_corpus("pystdlib")


def _split_docs(corpus, split):
    """Documents of a split, recovered from the NUL end markers."""
    arr = bytes(np.asarray(getattr(corpus, split)))
    assert arr.endswith(b"\x00")
    return arr[:-1].split(b"\x00")


# --------------------------------------------------------------------------- pystdlib

def test_pystdlib_loads(stdlib_corpus):
    c = stdlib_corpus
    assert c.source == "pystdlib"
    counts = c.byte_counts()
    assert set(counts) == {"train", "val", "test"}
    assert all(v > 0 for v in counts.values())
    assert counts["train"] > counts["val"] and counts["train"] > counts["test"]
    for arr in (c.train, c.val, c.test):
        assert arr.dtype == np.uint8 and arr.ndim == 1
    assert len(c.fingerprint) == 64
    assert platform.python_version() in c.description


def test_pystdlib_deterministic(stdlib_corpus):
    again = data.load_corpus("pystdlib")
    assert again.fingerprint == stdlib_corpus.fingerprint
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, split), getattr(stdlib_corpus, split))


def test_pystdlib_file_selection_and_disjoint_splits(stdlib_corpus):
    names = data.document_paths("pystdlib")
    assert len(names) == len(set(names)) > 100
    assert names == sorted(names)
    for name in names:
        parts = name.split("/")
        assert name.endswith(".py")
        assert not parts[-1].startswith("test_")
        assert not {"site-packages", "test", "tests", "idle_test"} & set(parts[:-1])
    # Every document is counted once, in exactly the split its path hashes to.
    root = sysconfig.get_paths()["stdlib"]
    expected = {"train": 0, "val": 0, "test": 0}
    for name in names:
        expected[data.assign_split(name)] += os.path.getsize(os.path.join(root, name)) + 1
    assert stdlib_corpus.byte_counts() == expected
    n_docs = sum(len(_split_docs(stdlib_corpus, s)) for s in expected)
    assert n_docs == len(names)


def test_pystdlib_entropy_sane(stdlib_corpus):
    assert 3.5 < stdlib_corpus.unigram_entropy_bits() < 5.5


# --------------------------------------------------------------------------- text folder

def _make_folder(root, order):
    """60 small files with unique contents, created in the given order."""
    contents = {}
    for i in order:
        sub = root / f"d{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        rel = f"d{i % 4}/file{i:02d}.txt"
        text = f"document {i}: " + "héllo wörld " * (i + 1) + "\n"
        (root / rel).write_text(text, encoding="utf-8")
        contents[rel] = text.encode("utf-8")
    return contents


def test_text_folder_split(tmp_path):
    contents = _make_folder(tmp_path / "a", range(60))
    (tmp_path / "a" / ".hidden").write_text("skip me")
    (tmp_path / "a" / ".git").mkdir()
    (tmp_path / "a" / ".git" / "x.txt").write_text("skip me too")
    c = data.load_corpus("text", tmp_path / "a", val_fraction=0.15, test_fraction=0.15)
    assert c.source == "text"
    total = sum(c.byte_counts().values())
    assert total == sum(len(v) for v in contents.values()) + len(contents)
    # Each document in exactly one split, the one its path hashes to, in sorted order.
    seen = []
    for split in ("train", "val", "test"):
        docs = _split_docs(c, split)
        want = [contents[n] for n in sorted(contents)
                if data.assign_split(n, 0.15, 0.15) == split]
        assert docs == want
        seen += docs
    assert sorted(seen) == sorted(contents.values())
    assert data.document_paths("text", tmp_path / "a") == sorted(contents)


def test_text_folder_independent_of_creation_order(tmp_path):
    _make_folder(tmp_path / "a", range(60))
    _make_folder(tmp_path / "b", reversed(range(60)))
    ca = data.load_corpus("text", tmp_path / "a", val_fraction=0.15, test_fraction=0.15)
    cb = data.load_corpus("text", str(tmp_path / "b"), val_fraction=0.15, test_fraction=0.15)
    ca2 = data.load_corpus("text", tmp_path / "a", val_fraction=0.15, test_fraction=0.15)
    assert ca.fingerprint == cb.fingerprint == ca2.fingerprint
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(ca, split), getattr(cb, split))


def test_text_too_few_documents(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "only.txt").write_text("one document cannot fill three splits")
    with pytest.raises(DataError, match="empty") as err:
        data.load_corpus("text", folder)
    assert str(folder) in str(err.value)


# --------------------------------------------------------------------------- text file

def test_text_single_file_chunks(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(32, 127, size=40 * data.CHUNK_BYTES + 1234, dtype=np.uint8).tobytes()
    path = tmp_path / "book.txt"
    path.write_bytes(raw)
    names = data.document_paths("text", path)
    assert names == [f"book.txt#{i}" for i in range(41)]
    c = data.load_corpus("text", path, val_fraction=0.2, test_fraction=0.2)
    assert sum(c.byte_counts().values()) == len(raw) + 41
    chunks = [raw[i * data.CHUNK_BYTES:(i + 1) * data.CHUNK_BYTES] for i in range(41)]
    for split in ("train", "val", "test"):
        want = [ch for n, ch in zip(names, chunks) if data.assign_split(n, 0.2, 0.2) == split]
        assert _split_docs(c, split) == want


# --------------------------------------------------------------------------- errors

def test_error_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        data.load_corpus("text", missing)


def test_error_path_none():
    with pytest.raises(DataError, match="path"):
        data.load_corpus("text", None)


def test_error_empty_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(str(empty))):
        data.load_corpus("text", empty)


def test_error_empty_folder(tmp_path):
    folder = tmp_path / "void"
    folder.mkdir()
    with pytest.raises(DataError, match=re.escape(str(folder))):
        data.load_corpus("text", folder)
    (folder / "a.txt").write_bytes(b"")
    (folder / "b.txt").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(str(folder))):
        data.load_corpus("text", folder)


def test_error_not_utf8(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("fine")
    bad = folder / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match=re.escape(str(bad))) as err:
        data.load_corpus("text", folder)
    assert "offset 3" in str(err.value)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        data.load_corpus("text", bad)


def test_error_unknown_source():
    with pytest.raises(DataError, match="pystdlib") as err:
        data.load_corpus("wikipedia")
    assert "enwik8" in str(err.value) and "text" in str(err.value)


def test_error_bad_fractions():
    with pytest.raises(ValueError):
        data.load_corpus("pystdlib", val_fraction=0.6, test_fraction=0.5)


# --------------------------------------------------------------------------- enwik8

@pytest.fixture
def fake_enwik8(tmp_path):
    payload = np.random.default_rng(1).integers(0, 256, size=200_000, dtype=np.uint8).tobytes()
    archive = tmp_path / "src" / "enwik8.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", payload)
    return payload, archive, hashlib.md5(payload).hexdigest()


def test_enwik8_download_split_and_cache(tmp_path, fake_enwik8):
    payload, archive, md5 = fake_enwik8
    cache = tmp_path / "cache"
    kwargs = dict(cache_dir=cache, enwik8_url=archive.as_uri(), enwik8_md5=md5)
    c = data.load_corpus("enwik8", **kwargs)
    assert c.byte_counts() == {"train": 180_000, "val": 10_000, "test": 10_000}
    for split in ("train", "val", "test"):
        assert isinstance(getattr(c, split), np.memmap)
    joined = np.concatenate([c.train, c.val, c.test]).tobytes()
    assert joined == payload
    assert c.fingerprint == hashlib.sha256(payload).hexdigest()
    assert not [p for p in os.listdir(cache) if p.endswith(".part")]

    # Second load must come from the cache: the source is gone.
    archive.unlink()
    (cache / "enwik8.zip").unlink()
    c2 = data.load_corpus("enwik8", **kwargs)
    assert c2.fingerprint == c.fingerprint
    np.testing.assert_array_equal(c2.val, c.val)


def test_enwik8_wrong_md5(tmp_path, fake_enwik8):
    _, archive, md5 = fake_enwik8
    cache = tmp_path / "cache"
    wrong = "0" * 32
    with pytest.raises(DataError) as err:
        data.load_corpus("enwik8", cache_dir=cache, enwik8_url=archive.as_uri(),
                         enwik8_md5=wrong)
    msg = str(err.value)
    assert str(cache / "enwik8") in msg and wrong in msg and md5 in msg
    assert not (cache / "enwik8").exists()
    assert not (cache / "enwik8.md5-ok").exists()
    # A correct checksum afterwards still works (archive fetched again).
    c = data.load_corpus("enwik8", cache_dir=cache, enwik8_url=archive.as_uri(),
                         enwik8_md5=md5)
    assert c.byte_counts()["train"] == 180_000
    # A different expected checksum later must not trust the old marker.
    with pytest.raises(DataError):
        data.load_corpus("enwik8", cache_dir=cache, enwik8_url=archive.as_uri(),
                         enwik8_md5=wrong)
    assert not (cache / "enwik8.md5-ok").exists()


def test_enwik8_download_failure_names_path(tmp_path):
    missing = tmp_path / "absent.zip"
    with pytest.raises(DataError, match="download"):
        data.load_corpus("enwik8", cache_dir=tmp_path / "cache",
                         enwik8_url=missing.as_uri(), enwik8_md5="0" * 32)
    assert not (tmp_path / "cache" / "enwik8.zip").exists()


# --------------------------------------------------------------------------- batches

def test_sample_batch(stdlib_corpus):
    split = stdlib_corpus.val
    a = data.sample_batch(np.random.default_rng(7), split, 8, 64)
    b = data.sample_batch(np.random.default_rng(7), split, 8, 64)
    assert a.shape == (8, 65) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    inputs, targets = a[:, :-1], a[:, 1:]
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    haystack = np.asarray(split).tobytes()
    for row in a:
        assert row.tobytes() in haystack


def test_sample_batch_edges():
    split = np.arange(11, dtype=np.uint8)
    batch = data.sample_batch(np.random.default_rng(0), split, 5, 10)
    assert (batch == split).all()          # only one window fits
    with pytest.raises(DataError):
        data.sample_batch(np.random.default_rng(0), split, 5, 11)


@pytest.mark.parametrize("seq_len", [1, 7, 64, 100, 128, 1000, 5000])
def test_eval_windows(seq_len):
    split = np.random.default_rng(3).integers(0, 256, size=1500, dtype=np.uint8)
    num_bytes = 1000
    inputs, targets, mask = data.eval_windows(split, num_bytes, seq_len)
    n = -(-num_bytes // seq_len)
    assert inputs.shape == targets.shape == mask.shape == (n, seq_len)
    assert inputs.dtype == targets.dtype == np.uint8 and mask.dtype == bool
    assert mask.sum() == num_bytes
    np.testing.assert_array_equal(targets[mask], split[1:num_bytes + 1])
    np.testing.assert_array_equal(inputs[mask], split[:num_bytes])
    assert (targets[~mask] == 0).all()


def test_eval_windows_too_small():
    split = np.zeros(100, dtype=np.uint8)
    data.eval_windows(split, 99, 10)
    with pytest.raises(DataError):
        data.eval_windows(split, 100, 10)

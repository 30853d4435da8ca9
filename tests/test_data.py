"""Tests for autoresearch.data: corpora, splits, batches and evaluation windows."""

import hashlib
import itertools
import os
import platform
import re
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

from autoresearch import data, splits
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


def _stdlib_docs():
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for name in data.document_paths("pystdlib"):
        with open(os.path.join(root, name), "rb") as f:
            docs.append((name, f.read()))
    return docs


def test_pystdlib_file_selection_and_disjoint_splits(stdlib_corpus):
    names = data.document_paths("pystdlib")
    assert len(names) == len(set(names)) > 100
    assert names == sorted(names)
    for name in names:
        parts = name.split("/")
        assert name.endswith(".py")
        assert not parts[-1].startswith("test_")
        assert not {"site-packages", "test", "tests", "idle_test"} & set(parts[:-1])
    # Generated files (codec tables, the pydoc topics dump) are left out, code is not.
    generated = {"encodings/cp437.py", "encodings/mac_iceland.py", "pydoc_data/topics.py"}
    assert not generated & set(names)
    assert {"encodings/utf_8.py", "encodings/idna.py", "os.py"} <= set(names)
    docs = _stdlib_docs()
    assert not any(data.is_generated(d) for _, d in docs)
    assert f"{len(names)} files" in stdlib_corpus.description
    # Every document is counted once, in exactly the split its assignment names.
    expected = {"train": 0, "val": 0, "test": 0}
    for (_, d), split in zip(docs, splits.split_assignment(docs)):
        expected[split] += len(d) + 1
    assert stdlib_corpus.byte_counts() == expected
    n_docs = sum(len(_split_docs(stdlib_corpus, s)) for s in expected)
    assert n_docs == len(names)


def test_pystdlib_split_sizes_and_clusters(stdlib_corpus):
    docs = _stdlib_docs()
    counts = stdlib_corpus.byte_counts()
    total = sum(counts.values())
    for split in ("val", "test"):
        # Filled to within a small document of 5%, and larger than the default val_bytes.
        assert 0.049 * total < counts[split] <= 0.05 * total
        assert counts[split] > 262_144
    clusters = splits.near_duplicate_clusters(docs)
    assignment = splits.split_assignment(docs)
    by_cluster = {}
    for c, split in zip(clusters, assignment):
        assert by_cluster.setdefault(c, split) == split     # a cluster never straddles splits
    for i, c in enumerate(clusters):
        assert c <= i and clusters[c] == c                   # labelled by its first document
    assert 300 < len(by_cluster) < len(docs)       # near copies exist; idioms link nothing


def test_pystdlib_splits_ignore_hash_seed(stdlib_corpus):
    """Set and dict order vary with PYTHONHASHSEED; the splits must not."""
    script = ("import hashlib, numpy as np; from autoresearch import data; "
              "c = data.load_corpus('pystdlib'); "
              "print(hashlib.sha256(np.asarray(c.val).tobytes() + np.asarray(c.test).tobytes())"
              ".hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    want = hashlib.sha256(np.asarray(stdlib_corpus.val).tobytes()
                          + np.asarray(stdlib_corpus.test).tobytes()).hexdigest()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root,
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == want


def test_is_generated():
    assert data.is_generated(b'""" Python Character Mapping Codec cp037 generated from '
                             b"'MAPPINGS/CP037.TXT' with gencodec.py.\n")
    assert data.is_generated(b"# -*- coding: utf-8 -*-\n# Autogenerated by Sphinx on Mon\n")
    assert data.is_generated(b'"""Token constants."""\n# Auto-generated by generate_token.py\n')
    assert data.is_generated(b"# This file is generated by mkstringprep.py. DO NOT EDIT.\n")
    assert not data.is_generated(b"# data generated with Python 2\nx = 1\n")
    assert not data.is_generated(b"a\nb\nc\n# generated by hand, line 4\n")


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
    # Each document in exactly one split, the one its assignment names, in sorted order.
    ordered = [(n, contents[n]) for n in sorted(contents)]
    assignment = splits.split_assignment(ordered, 0.15, 0.15)
    seen = []
    for split in ("train", "val", "test"):
        docs = _split_docs(c, split)
        want = [d for (_, d), s in zip(ordered, assignment) if s == split]
        assert docs == want and docs
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


def _planted_corpus(root):
    """80 documents under a boilerplate header, 10 near copies of them in another folder,
    copies of those copies in a third, and one document quoting only 2 of a base's lines."""
    header = ["# Licensed to the Example Foundation under a contributor agreement.",
              "# See the LICENSE file distributed with this work for details."]

    def body(i):
        return [f"    value_{i}_{j} = compute_thing({i}, {j}, 'payload-{i * 31 + j}')"
                for j in range(30)]

    files = {f"base/mod{i:02d}.py": header + body(i) for i in range(80)}
    for k in range(10):
        copy = body(k)
        copy[3:6] = [f"    changed_{k}_{j} = 'edited line number {j} of the copy'"
                     for j in range(3)]
        files[f"copies/dup{k}.py"] = header + copy
        again = copy[:]
        again[10:14] = [f"    again_{k}_{j} = 'edited line number {j} of the second copy'"
                        for j in range(4)]
        files[f"later/dup{k}_again.py"] = header + again
    files["quotes/partial.py"] = header + body(5)[:2] + body(99)
    for rel, lines in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def _rare_shared_bytes(a, b, holders):
    common = {line for line in a.split(b"\n") if len(line) >= 20} & set(b.split(b"\n"))
    return sum(len(line) for line in common if holders[line] <= 16)


def test_near_duplicates_stay_in_one_split(tmp_path):
    _planted_corpus(tmp_path / "c")
    c = data.load_corpus("text", tmp_path / "c", val_fraction=0.15, test_fraction=0.15)
    names = data.document_paths("text", tmp_path / "c")
    docs = [(n, (tmp_path / "c" / n).read_bytes()) for n in names]
    split_of = dict(zip(names, splits.split_assignment(docs, 0.15, 0.15)))
    for split in ("train", "val", "test"):
        assert _split_docs(c, split) == [d for n, d in docs if split_of[n] == split]
    # The planted families are exactly the multi-document clusters: the shared header
    # (in every document) and a 2-line quote (under 10%) link nothing.
    clusters = splits.near_duplicate_clusters(docs)
    families = {}
    for (n, _), cl in zip(docs, clusters):
        families.setdefault(cl, set()).add(n)
    want = [{f"base/mod{k:02d}.py", f"copies/dup{k}.py", f"later/dup{k}_again.py"}
            for k in range(10)]
    assert sorted(map(sorted, (f for f in families.values() if len(f) > 1))) == \
        sorted(map(sorted, want))
    assert any(split_of[f"copies/dup{k}.py"] != "train" for k in range(10))   # not vacuous
    for family in want:
        assert len({split_of[n] for n in family}) == 1
    # Brute force over all pairs: no two documents in different splits share 10%.
    holders = {}
    for _, d in docs:
        for line in {line for line in d.split(b"\n") if len(line) >= 20}:
            holders[line] = holders.get(line, 0) + 1
    weight = {n: sum(len(x) for x in {x for x in d.split(b"\n") if len(x) >= 20})
              for n, d in docs}
    for (na, a), (nb, b) in itertools.combinations(docs, 2):
        if split_of[na] != split_of[nb]:
            assert _rare_shared_bytes(a, b, holders) < 0.1 * min(weight[na], weight[nb])


def test_split_assignment_deterministic_and_bounded(tmp_path):
    _planted_corpus(tmp_path / "c")
    names = data.document_paths("text", tmp_path / "c")
    docs = [(n, (tmp_path / "c" / n).read_bytes()) for n in names]
    first = splits.split_assignment(docs, 0.15, 0.15)
    assert splits.split_assignment(list(docs), 0.15, 0.15) == first
    total = sum(len(d) + 1 for _, d in docs)
    for split in ("val", "test"):
        held = sum(len(d) + 1 for (_, d), s in zip(docs, first) if s == split)
        assert 0.12 * total < held <= 0.15 * total


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
    assignment = splits.split_assignment(list(zip(names, chunks)), 0.2, 0.2)
    for split in ("train", "val", "test"):
        want = [ch for ch, s in zip(chunks, assignment) if s == split]
        assert _split_docs(c, split) == want and want


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


def _check_windows(split, num_bytes, seq_len):
    """Checks eval_windows against its definition; returns the scored positions."""
    inputs, targets, mask = data.eval_windows(split, num_bytes, seq_len)
    starts, lengths = data.eval_spans(len(split), num_bytes)
    n = int(sum(-(-int(length) // seq_len) for length in lengths))
    assert inputs.shape == targets.shape == mask.shape == (n, seq_len)
    assert inputs.dtype == targets.dtype == np.uint8 and mask.dtype == bool
    assert mask.sum() == num_bytes
    positions = data.eval_positions(len(split), num_bytes)
    np.testing.assert_array_equal(targets[mask], split[positions])
    np.testing.assert_array_equal(inputs[mask], split[positions - 1])
    assert (targets[~mask] == 0).all()
    # Each row is the real text before its scored bytes: a slice split[a : a+T] that
    # predicts split[a+1 : a+T+1], its scored bytes one run inside one span.
    padded = np.concatenate([split, np.zeros(seq_len + 1, np.uint8)])
    spans = np.searchsorted(starts, positions, side="right") - 1
    assert (positions < (starts + lengths)[spans]).all()
    assert mask.any(axis=1).all()
    first, count = mask.argmax(axis=1), mask.sum(axis=1)
    cols = np.arange(seq_len)
    np.testing.assert_array_equal(
        mask, (cols >= first[:, None]) & (cols < (first + count)[:, None]))
    row_of, col_of = np.nonzero(mask)                 # row-major, like targets[mask]
    row_start = np.cumsum(count) - count
    a = positions[row_start] - first - 1
    assert (a >= 0).all() and ((first + count == seq_len) | (a == 0)).all()   # most context
    np.testing.assert_array_equal(positions, a[row_of] + 1 + col_of)
    np.testing.assert_array_equal(spans, spans[row_start][row_of])
    np.testing.assert_array_equal(inputs, padded[a[:, None] + cols])
    return positions


@pytest.mark.parametrize("seq_len", [1, 7, 64, 100, 128, 1000, 5000])
def test_eval_windows(seq_len):
    split = np.random.default_rng(3).integers(0, 256, size=1500, dtype=np.uint8)
    positions = _check_windows(split, 1000, seq_len)
    assert len(positions) == 1000 and positions.min() >= 1 and positions.max() < 1500


def test_eval_windows_spread_and_same_for_every_seq_len():
    split = np.random.default_rng(4).integers(0, 256, size=300_000, dtype=np.uint8)
    num_bytes = 10 * data.EVAL_SPAN_BYTES + 123
    scored = [_check_windows(split, num_bytes, t) for t in (1, 32, 100, 2048, 5000)]
    for positions in scored[1:]:
        np.testing.assert_array_equal(positions, scored[0])
    positions = scored[0]
    assert len(np.unique(positions)) == num_bytes
    # Not a prefix: K = 11 spans, one in each eleventh of the split, nearly equal.
    starts, lengths = data.eval_spans(len(split), num_bytes)
    assert len(starts) == 11 and lengths.sum() == num_bytes and np.ptp(lengths) <= 1
    per_stratum = np.histogram(positions, bins=11, range=(0, len(split)))[0]
    assert (per_stratum > 0).all()
    assert positions.max() > 0.9 * len(split)
    # A whole split scores it all but byte 0.
    np.testing.assert_array_equal(data.eval_positions(5000, 4999), np.arange(1, 5000))


def test_eval_windows_cost_and_determinism():
    split = np.random.default_rng(5).integers(0, 256, size=600_000, dtype=np.uint8)
    for seq_len in (32, 64, 128, 256, 512, 1024, 2048):     # the genotype's seq_lens
        inputs, targets, mask = data.eval_windows(split, 262_144, seq_len)
        assert inputs.size == 262_144                      # no padded window: no wasted compute
        again = data.eval_windows(split, 262_144, seq_len)
        for x, y in zip((inputs, targets, mask), again):
            np.testing.assert_array_equal(x, y)
    # The positions come from sha256, not from a generator whose stream could change.
    starts, _ = data.eval_spans(1_000_000, 3 * data.EVAL_SPAN_BYTES)
    assert starts.tolist() == GOLDEN_STARTS


GOLDEN_STARTS = [184656, 347175, 786063]


def test_eval_windows_too_small():
    split = np.zeros(100, dtype=np.uint8)
    data.eval_windows(split, 99, 10)
    with pytest.raises(DataError):
        data.eval_windows(split, 100, 10)


@pytest.mark.parametrize("seq_len", [1, 7, 64, 1000])
def test_eval_windows_score_only_scorable_bytes_in_their_real_context(seq_len):
    rng = np.random.default_rng(6)
    split = rng.integers(0, 256, size=20_000, dtype=np.uint8)
    scorable = np.ones(len(split), dtype=bool)
    for start in rng.integers(0, len(split) - 300, size=40):   # runs of context only,
        scorable[start:start + rng.integers(1, 300)] = False    # some longer than seq_len
    num_bytes = 3 * data.EVAL_SPAN_BYTES + 5
    inputs, targets, mask = data.eval_windows(split, num_bytes, seq_len, scorable)
    positions = data.eval_positions(len(split), num_bytes, scorable)
    assert mask.sum() == len(positions) == num_bytes == len(np.unique(positions))
    assert scorable[positions].all() and positions.min() >= 1
    np.testing.assert_array_equal(targets[mask], split[positions])
    np.testing.assert_array_equal(inputs[mask], split[positions - 1])
    assert mask.any(axis=1).all() and (targets[~mask] == 0).all()
    # Each row is a real slice of the split: its scored bytes' real preceding text.
    row_of, col_of = np.nonzero(mask)
    a = positions - 1 - col_of                     # where each row starts in the split
    assert (a >= 0).all()
    for r in np.unique(row_of)[::7]:
        start = a[row_of == r][0]
        assert (a[row_of == r] == start).all()
        np.testing.assert_array_equal(inputs[r], split[start:start + seq_len])
    # Between a span's first and last scored byte the unmarked bytes are context only,
    # and every scorable byte there is scored.
    starts, lengths = data.eval_spans(len(split), num_bytes, scorable)
    inside = np.zeros(len(split), dtype=bool)
    for s, n in zip(starts, lengths):
        inside[s:s + n] = True
    np.testing.assert_array_equal(np.flatnonzero(inside & scorable), positions)
    # All-scorable is the plain evaluation set.
    np.testing.assert_array_equal(
        data.eval_positions(len(split), num_bytes, np.ones(len(split), dtype=bool)),
        data.eval_positions(len(split), num_bytes))
    with pytest.raises(DataError, match="scorable"):
        data.eval_windows(split, int(scorable[1:].sum()) + 1, seq_len, scorable)


def test_held_out_lines_that_train_holds_verbatim_are_context_only(tmp_path):
    shared = "value = compute_something(argument, other)  # a long shared line"
    for i in range(60):
        lines = [f"line {i} of document number {i} with text {j * i}" for j in range(30)]
        lines.insert(5, shared)                  # in every document, whatever its split
        lines.insert(9, "x = 1")                 # short: no evidence, always scored
        (tmp_path / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    corpus = data.load_corpus("text", tmp_path, val_fraction=0.2, test_fraction=0.2)
    train_lines = set(bytes(corpus.train).replace(b"\x00", b"\n").split(b"\n"))
    assert shared.encode() in train_lines
    for split, scorable in ((corpus.val, corpus.val_scorable),
                            (corpus.test, corpus.test_scorable)):
        assert scorable.shape == split.shape and scorable.dtype == bool
        raw = bytes(split)
        at = raw.index(shared.encode())
        assert not scorable[at:at + len(shared)].any()        # the shared line: context
        assert scorable[at + len(shared)]                      # its newline: scored
        short = raw.index(b"x = 1")
        assert scorable[short:short + 5].all()
        own = raw.index(b"line ")
        assert scorable[own:own + 20].all()                    # held-out only: scored
        # No scored byte lies in a long line that train holds verbatim.
        ends = np.flatnonzero((split == ord("\n")) | (split == 0))
        begins = np.concatenate([[0], ends[:-1] + 1])
        for b, e in zip(begins, ends):
            if e - b >= 20 and raw[b:e] in train_lines:
                assert not scorable[b:e].any()

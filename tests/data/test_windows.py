"""Batches and evaluation windows over a corpus: sampling, spans spread over a split,
the same scored bytes for every sequence length, context-only bytes never scored."""

import numpy as np
import pytest

from autoresearch.data import corpora, windows
from autoresearch.data.errors import DataError


# --------------------------------------------------------------------------- batches

def test_sample_batch(stdlib_corpus):
  split = stdlib_corpus.val
  a = windows.sample_batch(np.random.default_rng(7), split, 8, 64)
  b = windows.sample_batch(np.random.default_rng(7), split, 8, 64)
  assert a.shape == (8, 65) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  inputs, targets = a[:, :-1], a[:, 1:]
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  haystack = np.asarray(split).tobytes()
  for row in a:
    assert row.tobytes() in haystack


def test_sample_batch_edges():
  split = np.arange(11, dtype=np.uint8)
  batch = windows.sample_batch(np.random.default_rng(0), split, 5, 10)
  assert (batch == split).all()          # only one window fits
  with pytest.raises(DataError):
    windows.sample_batch(np.random.default_rng(0), split, 5, 11)


def _check_windows(split, num_bytes, seq_len):
  """Checks eval_windows against its definition; returns the scored positions."""
  inputs, targets, mask = windows.eval_windows(split, num_bytes, seq_len)
  starts, lengths = windows.eval_spans(len(split), num_bytes)
  n = int(sum(-(-int(length) // seq_len) for length in lengths))
  assert inputs.shape == targets.shape == mask.shape == (n, seq_len)
  assert inputs.dtype == targets.dtype == np.uint8 and mask.dtype == bool
  assert mask.sum() == num_bytes
  positions = windows.eval_positions(len(split), num_bytes)
  np.testing.assert_array_equal(targets[mask], split[positions])
  np.testing.assert_array_equal(inputs[mask], split[positions - 1])
  assert (targets[~mask] == 0).all()
  # Each row is the real text before its scored bytes: a slice split[a : a+T] that
  # predicts split[a+1 : a+T+1], its scored bytes one run inside one span.
  padded = np.concatenate([split, np.zeros(seq_len + 1, np.uint8)])
  spans = np.searchsorted(starts, positions, side='right') - 1
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


@pytest.mark.parametrize('seq_len', [1, 7, 64, 100, 128, 1000, 5000])
def test_eval_windows(seq_len):
  split = np.random.default_rng(3).integers(0, 256, size=1500, dtype=np.uint8)
  positions = _check_windows(split, 1000, seq_len)
  assert len(positions) == 1000 and positions.min() >= 1 and positions.max() < 1500


def test_eval_windows_spread_and_same_for_every_seq_len():
  split = np.random.default_rng(4).integers(0, 256, size=300_000, dtype=np.uint8)
  num_bytes = 10 * windows.EVAL_SPAN_BYTES + 123
  scored = [_check_windows(split, num_bytes, t) for t in (1, 32, 100, 2048, 5000)]
  for positions in scored[1:]:
    np.testing.assert_array_equal(positions, scored[0])
  positions = scored[0]
  assert len(np.unique(positions)) == num_bytes
  # Not a prefix: K = 11 spans, one in each eleventh of the split, nearly equal.
  starts, lengths = windows.eval_spans(len(split), num_bytes)
  assert len(starts) == 11 and lengths.sum() == num_bytes and np.ptp(lengths) <= 1
  per_stratum = np.histogram(positions, bins=11, range=(0, len(split)))[0]
  assert (per_stratum > 0).all()
  assert positions.max() > 0.9 * len(split)
  # A whole split scores it all but byte 0.
  np.testing.assert_array_equal(windows.eval_positions(5000, 4999), np.arange(1, 5000))


def test_eval_windows_cost_and_determinism():
  split = np.random.default_rng(5).integers(0, 256, size=600_000, dtype=np.uint8)
  for seq_len in (32, 64, 128, 256, 512, 1024, 2048):     # the genotype's seq_lens
    inputs, targets, mask = windows.eval_windows(split, 262_144, seq_len)
    assert inputs.size == 262_144                      # no padded window: no wasted compute
    again = windows.eval_windows(split, 262_144, seq_len)
    for x, y in zip((inputs, targets, mask), again):
      np.testing.assert_array_equal(x, y)
  # The positions come from sha256, not from a generator whose stream could change.
  starts, _ = windows.eval_spans(1_000_000, 3 * windows.EVAL_SPAN_BYTES)
  assert starts.tolist() == GOLDEN_STARTS


GOLDEN_STARTS = [184656, 347175, 786063]


def test_eval_windows_too_small():
  split = np.zeros(100, dtype=np.uint8)
  windows.eval_windows(split, 99, 10)
  with pytest.raises(DataError):
    windows.eval_windows(split, 100, 10)


@pytest.mark.parametrize('seq_len', [1, 7, 64, 1000])
def test_eval_windows_score_only_scorable_bytes_in_their_real_context(seq_len):
  rng = np.random.default_rng(6)
  split = rng.integers(0, 256, size=20_000, dtype=np.uint8)
  scorable = np.ones(len(split), dtype=bool)
  for start in rng.integers(0, len(split) - 300, size=40):   # runs of context only,
    scorable[start:start + rng.integers(1, 300)] = False    # some longer than seq_len
  num_bytes = 3 * windows.EVAL_SPAN_BYTES + 5
  inputs, targets, mask = windows.eval_windows(split, num_bytes, seq_len, scorable)
  positions = windows.eval_positions(len(split), num_bytes, scorable)
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
  starts, lengths = windows.eval_spans(len(split), num_bytes, scorable)
  inside = np.zeros(len(split), dtype=bool)
  for s, n in zip(starts, lengths):
    inside[s:s + n] = True
  np.testing.assert_array_equal(np.flatnonzero(inside & scorable), positions)
  # All-scorable is the plain evaluation set.
  np.testing.assert_array_equal(
      windows.eval_positions(len(split), num_bytes, np.ones(len(split), dtype=bool)),
      windows.eval_positions(len(split), num_bytes))
  with pytest.raises(DataError, match='scorable'):
    windows.eval_windows(split, int(scorable[1:].sum()) + 1, seq_len, scorable)


def test_held_out_lines_that_train_holds_verbatim_are_context_only(tmp_path):
  shared = 'value = compute_something(argument, other)  # a long shared line'
  for i in range(60):
    lines = [f'line {i} of document number {i} with text {j * i}' for j in range(30)]
    lines.insert(5, shared)                  # in every document, whatever its split
    lines.insert(9, 'x = 1')                 # short: no evidence, always scored
    (tmp_path / f'doc{i:02d}.txt').write_text('\n'.join(lines) + '\n')
  corpus = corpora.load_corpus('text', tmp_path, val_fraction=0.2, test_fraction=0.2)
  train_lines = set(bytes(corpus.train).replace(b'\x00', b'\n').split(b'\n'))
  assert shared.encode() in train_lines
  for split, scorable in ((corpus.val, corpus.val_scorable),
                          (corpus.test, corpus.test_scorable)):
    assert scorable.shape == split.shape and scorable.dtype == bool
    raw = bytes(split)
    at = raw.index(shared.encode())
    assert not scorable[at:at + len(shared)].any()        # the shared line: context
    assert scorable[at + len(shared)]                      # its newline: scored
    short = raw.index(b'x = 1')
    assert scorable[short:short + 5].all()
    own = raw.index(b'line ')
    assert scorable[own:own + 20].all()                    # held-out only: scored
    # No scored byte lies in a long line that train holds verbatim.
    ends = np.flatnonzero((split == ord('\n')) | (split == 0))
    begins = np.concatenate([[0], ends[:-1] + 1])
    for b, e in zip(begins, ends):
      if e - b >= 20 and raw[b:e] in train_lines:
        assert not scorable[b:e].any()

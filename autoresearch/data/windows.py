"""Windows of a split: random training batches, and the fixed scored windows of a
held-out split.

The scored bytes of a held-out split (`eval_windows`): num_bytes scorable bytes in
K = ceil(num_bytes / 4096) spans of nearly equal count (4096 each for the default
256 KiB), span k placed at a seeded random position in the k-th of K equal strata of
the split's free room, so that the spans never overlap and cover the whole split in
order. They do not depend on seq_len; see `eval_positions`.
"""

from __future__ import annotations

import numpy as np

from autoresearch.data import splits
from autoresearch.data.errors import DataError


EVAL_SPAN_BYTES = 4096           # scored bytes per span of the evaluation set
EVAL_SEED = 0                    # seeds the spans' positions in the split


def sample_batch(rng: np.random.Generator, split: np.ndarray, batch_size: int,
                 seq_len: int) -> np.ndarray:
  """Random windows of seq_len + 1 bytes, uint8 (batch_size, seq_len + 1).

  Inputs are ``batch[:, :-1]``, targets ``batch[:, 1:]``.
  """
  if batch_size < 1 or seq_len < 1:
    raise ValueError(f'batch_size and seq_len must be positive; got {batch_size}, {seq_len}')
  n = len(split)
  if n < seq_len + 1:
    raise DataError(f'split has {n} bytes; a window of seq_len={seq_len} needs '
                    f'{seq_len + 1}')
  starts = rng.integers(0, n - seq_len, size=batch_size)
  # asarray drops the memmap subclass so the gather yields a plain array.
  return np.asarray(split)[starts[:, None] + np.arange(seq_len + 1)].astype(np.uint8, copy=False)


def eval_spans(split_bytes: int, num_bytes: int,
               scorable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(starts, lengths) of the spans of scored bytes in a split of split_bytes bytes.

  The candidates are the split's bytes after byte 0 (it has no context), or, given
  `scorable` (a bool per byte), those of them it marks. K = ceil(num_bytes /
  EVAL_SPAN_BYTES) spans of consecutive candidates, whose counts differ by at most
  one and add up to num_bytes. The free room R = candidates - num_bytes is cut into K
  equal strata; span k is preceded by floor((k + u_k) R / K) candidates of room in
  all, u_k in [0, 1) from a sha256 of (EVAL_SEED, k). Spans never overlap and keep
  the split's order. A span's length counts bytes of the split, from its first
  candidate to its last: with `scorable`, the unmarked bytes between them are context.
  """
  if num_bytes < 1:
    raise ValueError(f'num_bytes must be positive; got {num_bytes}')
  if scorable is None:
    index, count = None, split_bytes - 1
  else:
    index = np.flatnonzero(np.asarray(scorable)[1:split_bytes]) + 1
    count = len(index)
  if count < num_bytes:
    what = 'bytes after its first' if scorable is None else 'scorable bytes after its first'
    raise DataError(f'split has {count} {what}; evaluating {num_bytes} bytes needs as many')
  k = -(-num_bytes // EVAL_SPAN_BYTES)
  lengths = np.full(k, num_bytes // k, dtype=np.int64)
  lengths[:num_bytes % k] += 1
  u = np.array([splits.unit_hash(f'eval-span:{EVAL_SEED}:{i}') for i in range(k)])
  room = count - num_bytes
  # (i + u_i) / k increases with i, so the room before each span never shrinks.
  before = np.floor((np.arange(k) + u) * room / k).astype(np.int64)
  first = before + np.concatenate([[0], np.cumsum(lengths)[:-1]])   # candidate numbers
  if index is None:
    return 1 + first, lengths
  return index[first], index[first + lengths - 1] - index[first] + 1


def eval_positions(split_bytes: int, num_bytes: int,
                   scorable: np.ndarray | None = None) -> np.ndarray:
  """The positions of the num_bytes scored bytes of a split, ascending: the bytes of
  the `eval_spans`, those `scorable` marks where it is given."""
  starts, lengths = eval_spans(split_bytes, num_bytes, scorable)
  offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  positions = np.repeat(starts, lengths) + offsets
  return positions if scorable is None else positions[np.asarray(scorable)[positions]]


def eval_windows(split: np.ndarray, num_bytes: int, seq_len: int,
                 scorable: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The fixed evaluation set: the num_bytes bytes at `eval_positions`, in windows of seq_len.

  Returns (inputs, targets, mask), each (N, seq_len). Window j of a span covers the
  span's bytes [j*T, (j+1)*T) (fewer in its last window), and ends at the last of
  them: it is the row split[a : a+T] predicting split[a+1 : a+T+1], a = (end of those
  bytes) - 1 - T, or a = 0 where that is negative; the mask marks the covered bytes
  that are scored (all of them without `scorable`), and a window that would score
  none is left out. A window thus scores one span only, every scored byte is
  predicted from the real bytes before it in the split, and the mask picks out
  exactly the scored bytes: mask.sum() == num_bytes, and targets[mask] ==
  split[eval_positions(len(split), num_bytes, scorable)], for every seq_len, so every
  genotype is scored on the same bytes. Targets outside the mask are 0. Inputs past
  the end of the split (seq_len >= len(split) only) are 0; they come after every
  scored byte, so a causal model never sees them.
  """
  if num_bytes < 1 or seq_len < 1:
    raise ValueError(f'num_bytes and seq_len must be positive; got {num_bytes}, {seq_len}')
  starts, lengths = eval_spans(len(split), num_bytes, scorable)
  per_span = -(-lengths // seq_len)
  span = np.repeat(np.arange(len(starts)), per_span)
  j = np.arange(per_span.sum()) - np.repeat(np.cumsum(per_span) - per_span, per_span)
  first = starts[span] + j * seq_len                           # first covered byte
  stop = np.minimum(first + seq_len, (starts + lengths)[span])   # one past the last
  a = np.maximum(stop - 1 - seq_len, 0)
  padded = np.zeros(max(len(split), seq_len + 1), dtype=np.uint8)
  padded[:len(split)] = split
  rows = padded[a[:, None] + np.arange(seq_len + 1)]
  predicted = a[:, None] + 1 + np.arange(seq_len)               # position of each target
  mask = (predicted >= first[:, None]) & (predicted < stop[:, None])
  if scorable is not None:
    marks = np.zeros(len(padded) + 1, dtype=bool)
    marks[:len(split)] = scorable
    mask &= marks[predicted]
    rows, mask = rows[mask.any(axis=1)], mask[mask.any(axis=1)]
  return rows[:, :-1], np.where(mask, rows[:, 1:], 0).astype(np.uint8), mask

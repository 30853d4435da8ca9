"""How much of the scored held-out bytes train could have taught by heart.

For each source, loads the corpus, takes the bytes `windows.eval_windows` scores for
val_bytes=262144 (`windows.eval_positions`, with the corpus's scorable marks) in val and
in test, and prints the share of each held-out split that is context only (never
scored: document sources mark the long lines train holds verbatim) and the fraction
of them lying in a line of at least 20 bytes that occurs verbatim as a line of train
(lines end at a newline or a document's NUL end marker; the terminator is not part of
the line). The figure is broken down by how many train documents hold the line: in
one it is copied content, in 16 or more an idiom (a deeply indented `else:`).

* pystdlib: the default corpus.
* text: a corpus made here without a download, the docstrings of the pystdlib files
  (one UTF-8 file per module, in a temporary folder). Its held-out splits are smaller
  than 256 KiB, so it scores as many bytes as its smaller held-out split allows.
* enwik8: only if it is already in ~/.cache/autoresearch; never downloaded.

The last line is `val_train_overlap: X`, for pystdlib's val split.

  python benchmarks/split_overlap.py
"""

import ast
import os
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.data import enwik8  # noqa: E402
from autoresearch.data import windows  # noqa: E402
from autoresearch.data.errors import DataError  # noqa: E402

VAL_BYTES = 262_144
MIN_LINE_BYTES = 20
IDIOM_DOCS = 16
NGRAM_BYTES = 32


def _lines(split: np.ndarray):
  """(start, end) of each line of a split, terminators excluded."""
  ends = np.flatnonzero((split == ord('\n')) | (split == 0))
  starts = np.concatenate([[0], ends[:-1] + 1])
  return starts, ends


def train_line_docs(train: np.ndarray) -> dict:
  """Each long line of train -> the number of train documents holding it."""
  counts: dict = {}
  for doc in bytes(np.asarray(train)).split(b'\x00'):
    for line in {line for line in doc.split(b'\n') if len(line) >= MIN_LINE_BYTES}:
      counts[line] = counts.get(line, 0) + 1
  return counts


def overlap(split: np.ndarray, scorable, counts: dict, num_bytes: int) -> dict:
  """Fractions of the scored bytes in long lines found in train, by train documents."""
  raw = bytes(np.asarray(split))
  # in_line[i]: how many train documents hold the long line byte i lies in (0: none).
  in_line = np.zeros(len(raw), dtype=np.int64)
  for start, end in zip(*_lines(split)):
    if end - start >= MIN_LINE_BYTES:
      in_line[start:end] = counts.get(raw[start:end], 0)
  held = in_line[windows.eval_positions(len(raw), num_bytes, scorable)]
  return {'all': float(np.mean(held > 0)), 'one': float(np.mean(held == 1)),
          'few': float(np.mean((held > 1) & (held < IDIOM_DOCS))),
          'idiom': float(np.mean(held >= IDIOM_DOCS))}


def ngram_hashes(raw: np.ndarray, n: int) -> np.ndarray:
  """A 64-bit polynomial hash of each n-byte window of raw (window i = raw[i:i+n])."""
  x = np.asarray(raw).astype(np.uint64)
  h = np.zeros(len(x) - n + 1, dtype=np.uint64)
  with np.errstate(over='ignore'):
    for k in range(n):   # wraps mod 2^64: a collision is ~1e-19 per pair
      h = h * np.uint64(1_000_003) + x[k:k + len(h)]
  return h


def ngram_overlap(split: np.ndarray, scorable, train_hashes: np.ndarray, num_bytes: int,
                  n: int = NGRAM_BYTES) -> float:
  """The fraction of the scored bytes lying inside some n-byte run of the split that
  occurs verbatim in train (within lines or across them): copied content shorter than
  a whole line, or spread over lines."""
  found = np.isin(ngram_hashes(split, n), train_hashes)
  # Byte i is covered when a found window starts in (i - n, i]: a running count.
  starts = np.concatenate([[0], np.cumsum(found)])
  idx = np.arange(len(split))
  covered = starts[np.minimum(idx + 1, len(found))] - starts[np.maximum(idx - n + 1, 0).clip(
      max=len(found))] > 0
  return float(np.mean(covered[windows.eval_positions(len(split), num_bytes, scorable)]))


def docstring_folder(folder: str) -> int:
  """Writes the docstrings of each pystdlib file to folder; returns the files written."""
  root = sysconfig.get_paths()['stdlib']
  written = 0
  for name in corpora.document_paths('pystdlib'):
    with open(os.path.join(root, *name.split('/')), 'rb') as f:
      try:
        tree = ast.parse(f.read())
      except (SyntaxError, ValueError):
        continue
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = [ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds)]
    text = '\n\n'.join(d for d in docs if d)
    if text:
      path = os.path.join(folder, name[:-3] + '.txt')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w', encoding='utf-8', errors='surrogatepass') as out:
        out.write(text + '\n')
      written += 1
  return written


def report(name: str, corpus: corpora.Corpus, seconds: float) -> float:
  counts = corpus.byte_counts()
  marks = {split: getattr(corpus, f'{split}_scorable') for split in ('val', 'test')}
  room = [counts[s] - 1 if m is None else int(m[1:].sum()) for s, m in marks.items()]
  num_bytes = min(VAL_BYTES, *room)
  context = {s: 0.0 if m is None else 1 - float(np.mean(m)) for s, m in marks.items()}
  print(f'{name}: load {seconds:.2f} s; bytes train {counts["train"]:,} val {counts["val"]:,} '
        f'test {counts["test"]:,}; scored per held-out split {num_bytes:,}; context only '
        f'(never scored) val {context["val"]:.4f} test {context["test"]:.4f}')
  line_docs = train_line_docs(corpus.train)
  val = None
  for split in ('val', 'test'):
    o = overlap(getattr(corpus, split), marks[split], line_docs, num_bytes)
    print(f'{name} {split}_train_overlap: {o["all"]:.4f} (lines in 1 train doc {o["one"]:.4f}, '
          f'2-{IDIOM_DOCS - 1} {o["few"]:.4f}, {IDIOM_DOCS}+ {o["idiom"]:.4f})')
    val = o['all'] if split == 'val' else val
  train_hashes = np.unique(ngram_hashes(corpus.train, NGRAM_BYTES))
  for split in ('val', 'test'):
    share = ngram_overlap(getattr(corpus, split), marks[split], train_hashes, num_bytes)
    print(f'{name} {split}: scored bytes inside a {NGRAM_BYTES}-byte run found verbatim in '
          f'train {share:.4f}')
  return val


def main():
  start = time.perf_counter()
  corpus = corpora.load_corpus('pystdlib')
  default_val = report('pystdlib', corpus, time.perf_counter() - start)

  with tempfile.TemporaryDirectory() as folder:
    files = docstring_folder(folder)
    start = time.perf_counter()
    try:
      text = corpora.load_corpus('text', folder)
    except DataError as e:
      print(f'text: skipped ({e})')
    else:
      report(f'text (pystdlib docstrings, {files} files)', text, time.perf_counter() - start)

  cache = os.path.join(os.path.expanduser('~'), '.cache', 'autoresearch')
  target, marker = os.path.join(cache, 'enwik8'), os.path.join(cache, 'enwik8.md5-ok')
  # Only a file the cache's marker vouches for: anything else would mean a download.
  if enwik8.read_marker(marker, target, corpora.ENWIK8_MD5) is None:
    print(f'enwik8: skipped (not in the cache {cache}; this benchmark never downloads)')
  else:
    start = time.perf_counter()
    report('enwik8', corpora.load_corpus('enwik8', cache_dir=cache), time.perf_counter() - start)

  print(f'val_train_overlap: {default_val:.4f}')


if __name__ == '__main__':
  main()

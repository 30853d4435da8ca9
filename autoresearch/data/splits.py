"""Train/val/test splits of document sources that keep near duplicates together.

A document's evidence is its set of distinct lines of at least 20 bytes; a line found in more
than 16 documents is an idiom or boilerplate ("else:" deeply indented, a licence
line) and no evidence. Two documents are linked when the evidence lines they
share add up to at least 10% of the smaller one's long-line bytes, and the
connected components of the links (a union-find) are the clusters. Clusters are
ordered by a sha256 of their first document's name (corpus order: the smallest
path of a folder, the first chunk of a file); in that order a cluster joins val
if it still fits in val's target (val_fraction of the corpus bytes), else test if
it fits in test's, else train. A cluster over a quarter of a held-out target
always goes to train, so that no one cluster makes up a held-out split. The
assignment depends only on the documents' names and contents: the same on every
run and machine. Each document is followed by a NUL byte marking its end.

Scorable bytes. In the held-out splits of a document source, a line of at least 20
bytes that occurs verbatim as a line of train is context only, never scored
(`Corpus.val_scorable`, `test_scorable`): train could have taught it by heart
(boilerplate, idioms, copied code). enwik8 scores every byte.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np


_MIN_LINE_BYTES = 20             # shorter lines are no evidence of shared content
_MAX_LINE_DOCS = 16              # a line in more documents is an idiom, no evidence
_LINK_SHARE = 0.1                # shared evidence / smaller document's long-line bytes that links
_MAX_CLUSTER_SHARE = 0.25        # of a held-out target: larger clusters go to train


def unit_hash(text: str) -> float:
  """A number in [0, 1) from a sha256 of text: the same on every machine."""
  return int(hashlib.sha256(text.encode('utf-8')).hexdigest()[:16], 16) / 2**64


def near_duplicate_clusters(docs) -> list[int]:
  """For each (name, data) document, the index of its cluster's first document.

  Documents are linked when the lines of at least _MIN_LINE_BYTES bytes that they
  share, counting only lines found in at most _MAX_LINE_DOCS documents, add up to
  _LINK_SHARE of the smaller one's distinct long-line bytes; clusters are the
  connected components of the links.
  """
  lines = [{line for line in bytes(data).split(b'\n') if len(line) >= _MIN_LINE_BYTES}
           for _, data in docs]
  holders: dict[bytes, list[int]] = {}
  for i, own in enumerate(lines):
    for line in own:
      holders.setdefault(line, []).append(i)
  shared: dict[tuple[int, int], int] = {}
  for line, ids in holders.items():
    if 2 <= len(ids) <= _MAX_LINE_DOCS:
      for pair in itertools.combinations(ids, 2):   # ids ascend: pair = (low, high)
        shared[pair] = shared.get(pair, 0) + len(line)
  weight = [sum(map(len, own)) for own in lines]
  parent = list(range(len(docs)))

  def root(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]   # path halving
      i = parent[i]
    return i

  for (a, b), w in shared.items():
    if w >= _LINK_SHARE * min(weight[a], weight[b]):
      ra, rb = root(a), root(b)
      # The lower index is the root, so a root is its cluster's first document.
      parent[max(ra, rb)] = min(ra, rb)
  return [root(i) for i in range(len(docs))]


def split_assignment(docs, val_fraction: float = 0.05,
                     test_fraction: float = 0.05) -> list[str]:
  """'train', 'val' or 'test' for each (name, data) document (see the module docstring)."""
  clusters = near_duplicate_clusters(docs)
  sizes: dict[int, int] = {}
  for c, (_, data) in zip(clusters, docs):
    sizes[c] = sizes.get(c, 0) + len(data) + 1       # + 1: the end marker
  total = sum(sizes.values())
  room = {'val': val_fraction * total, 'test': test_fraction * total}
  largest = {split: _MAX_CLUSTER_SHARE * target for split, target in room.items()}
  where = {}
  for c in sorted(sizes, key=lambda c: (unit_hash(docs[c][0]), c)):
    where[c] = 'train'
    for split in ('val', 'test'):
      if sizes[c] <= min(room[split], largest[split]):
        where[c] = split
        room[split] -= sizes[c]
        break
  return [where[c] for c in clusters]


def train_long_lines(train_docs) -> set[bytes]:
  """The distinct lines of at least _MIN_LINE_BYTES bytes in the train documents."""
  return {line for doc in train_docs for line in bytes(doc).split(b'\n')
          if len(line) >= _MIN_LINE_BYTES}


def scorable_bytes(split: np.ndarray, train_lines: set[bytes]) -> np.ndarray:
  """True for each byte of a held-out split that is not in a line of at least
  _MIN_LINE_BYTES bytes occurring verbatim as a line of train (lines end at a newline
  or an end marker, which are not part of them and stay scorable)."""
  raw = bytes(np.asarray(split))
  keep = np.ones(len(raw), dtype=bool)
  ends = np.flatnonzero((np.asarray(split) == ord('\n')) | (np.asarray(split) == 0))
  starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, np.int64)
  for start, end in zip(starts.tolist(), ends.tolist()):
    if end - start >= _MIN_LINE_BYTES and raw[start:end] in train_lines:
      keep[start:end] = False
  return keep

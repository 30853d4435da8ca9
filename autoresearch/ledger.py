"""The search's readable memory: results.tsv and trials.jsonl in the workdir.

results.tsv starts with karpathy/autoresearch's five columns (commit, val_bpb,
memory_gb, status, description) so its analysis tools read it; `commit` holds the
trial's genotype id. More columns follow. trials.jsonl holds the full record of each
trial (`records.TrialRecord`: genotype, loss curve, reward, log-probability, ...), one
JSON object a line.

Each append writes the JSONL line first, then the TSV row, each flushed and fsynced:
the JSONL file is the source of truth, and `read_records` skips a torn last line.
"""

from __future__ import annotations

import json
import math
import os
from autoresearch.records import TrialRecord

TSV_COLUMNS = ('commit', 'val_bpb', 'memory_gb', 'status', 'description', 'trial', 'agent',
               'train_seconds', 'total_seconds', 'params', 'steps', 'reward', 'best_bpb')
_TSV_SOURCE = {'commit': 'genotype_id', 'memory_gb': 'peak_memory_gb'}  # karpathy's names


def _tsv_field(record: TrialRecord, column: str) -> str:
  value = getattr(record, _TSV_SOURCE.get(column, column))
  if column in ('val_bpb', 'best_bpb'):
    # karpathy/autoresearch writes 0.000000 for a trial without a score.
    return f'{value:.6f}' if isinstance(value, float) and math.isfinite(value) else '0.000000'
  if column == 'memory_gb':
    return f'{value or 0.0:.1f}'
  if column in ('train_seconds', 'total_seconds'):
    return f'{value or 0.0:.1f}'
  if column == 'reward':
    return f'{value:.4f}' if value is not None else ''
  text = '' if value is None else str(value)
  return text.replace('\t', ' ').replace('\n', ' ')


def _append_line(path: str, line: str) -> None:
  with open(path, 'a') as f:
    f.write(line + '\n')
    f.flush()
    os.fsync(f.fileno())


def _atomic_write(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class Ledger:
  """Appends one trial at a time to `workdir/results.tsv` and `workdir/trials.jsonl`."""

  def __init__(self, workdir: str):
    self.tsv_path = os.path.join(workdir, 'results.tsv')
    self.jsonl_path = os.path.join(workdir, 'trials.jsonl')
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(self.tsv_path) or os.path.getsize(self.tsv_path) == 0:
      _append_line(self.tsv_path, '\t'.join(TSV_COLUMNS))

  def append(self, record: TrialRecord) -> None:
    """Records one trial (its status is one of records.STATUSES: TrialRecord checks it)."""
    _append_line(self.jsonl_path, json.dumps(record.to_dict(), allow_nan=True))
    _append_line(self.tsv_path, '\t'.join(_tsv_field(record, c) for c in TSV_COLUMNS))

  def read_records(self) -> list[TrialRecord]:
    """Every complete record of trials.jsonl, in order."""
    return read_records(self.jsonl_path)

  def rewrite(self, records: list[TrialRecord]) -> None:
    """Makes both files hold exactly `records` (atomic replace of each file that
    differs: a torn last line, rows to drop, or a TSV behind its JSONL)."""
    lines = [json.dumps(r.to_dict(), allow_nan=True) + '\n' for r in records]
    with open(self.jsonl_path, 'a+') as f:
      f.seek(0)
      current = f.read()
    if current != ''.join(lines):
      _atomic_write(self.jsonl_path, ''.join(lines))
    with open(self.tsv_path) as f:
      tsv_rows = sum(1 for line in f if line.strip()) - 1
    if tsv_rows != len(records):
      rows = ['\t'.join(TSV_COLUMNS)] + [
          '\t'.join(_tsv_field(r, c) for c in TSV_COLUMNS) for r in records]
      _atomic_write(self.tsv_path, '\n'.join(rows) + '\n')


def read_records(jsonl_path: str) -> list[TrialRecord]:
  """Every complete row of a trials.jsonl, in order (a torn last line is skipped)."""
  if not os.path.exists(jsonl_path):
    return []
  records = []
  with open(jsonl_path) as f:
    for line in f:
      if not line.endswith('\n'):
        break  # a torn final line from an interrupted write
      records.append(TrialRecord.from_dict(json.loads(line)))
  return records


def read_tsv(tsv_path: str) -> list[dict[str, str]]:
  """results.tsv as a list of {column: text}."""
  with open(tsv_path) as f:
    header, *rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
  return [dict(zip(header, row)) for row in rows]

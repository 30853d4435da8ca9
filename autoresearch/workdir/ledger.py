"""The search's readable memory: results.tsv and trials.jsonl in the workdir.

results.tsv starts with karpathy/autoresearch's five columns (commit, val_bpb,
memory_gb, status, description) so its analysis tools read it; `commit` holds the
trial's genotype id. More columns follow. trials.jsonl holds the full record of each
trial (`records.TrialRecord`: genotype, loss curve, reward, log-probability, ...), one
JSON object a line.

Each append writes the JSONL line first, then the TSV row, each flushed and fsynced
(`workdir_io.append_line`): the JSONL file is the source of truth, and `read_records`
skips a torn last line.
"""

from __future__ import annotations

import json
import math

from autoresearch.workdir import io as workdir_io
from autoresearch.workdir.records import TrialRecord


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


class Ledger:
  """Appends one trial at a time to `workdir/results.tsv` and `workdir/trials.jsonl`
  (a local folder or a bucket: `workdir_io`). Write errors are OSError."""

  def __init__(self, workdir: str):
    self.tsv_path = workdir_io.path(workdir, 'results.tsv')
    self.jsonl_path = workdir_io.path(workdir, 'trials.jsonl')
    workdir_io.makedirs(self.tsv_path.parent)
    if not workdir_io.read_text(self.tsv_path).strip():
      workdir_io.write_atomic(self.tsv_path, '\t'.join(TSV_COLUMNS) + '\n')

  def append(self, record: TrialRecord) -> None:
    """Records one trial (its status is one of records.STATUSES: TrialRecord checks it)."""
    workdir_io.append_line(self.jsonl_path, json.dumps(record.to_dict(), allow_nan=True))
    workdir_io.append_line(self.tsv_path, '\t'.join(_tsv_field(record, c) for c in TSV_COLUMNS))

  def read_records(self) -> list[TrialRecord]:
    """Every complete record of trials.jsonl, in order."""
    return read_records(self.jsonl_path)

  def rewrite(self, records: list[TrialRecord]) -> list[str]:
    """Makes both files hold exactly `records` (atomic replace of each file that
    differs: a torn last line, rows to drop, or a TSV behind its JSONL); returns what
    it changed, in words."""
    changes = []
    lines = ''.join(json.dumps(r.to_dict(), allow_nan=True) + '\n' for r in records)
    current = workdir_io.read_text(self.jsonl_path)
    if current != lines:
      torn = current and not current.endswith('\n') and current.startswith(lines)
      changes.append('a torn last line dropped' if torn else 'trials.jsonl rewritten')
      workdir_io.write_atomic(self.jsonl_path, lines)
    tsv_rows = sum(1 for line in workdir_io.read_text(self.tsv_path).splitlines()
                   if line.strip()) - 1
    if tsv_rows != len(records):
      rows = ['\t'.join(TSV_COLUMNS)] + [
          '\t'.join(_tsv_field(r, c) for c in TSV_COLUMNS) for r in records]
      workdir_io.write_atomic(self.tsv_path, '\n'.join(rows) + '\n')
      changes.append(f'results.tsv rebuilt ({tsv_rows} rows -> {len(records)})')
    return changes


def read_records(jsonl_path) -> list[TrialRecord]:
  """Every complete row of a trials.jsonl (a path or epath.Path), in order (a torn last
  line is skipped)."""
  records = []
  for line in workdir_io.read_text(workdir_io.path(jsonl_path)).splitlines(keepends=True):
    if not line.endswith('\n'):
      break  # a torn final line from an interrupted write
    records.append(TrialRecord.from_dict(json.loads(line)))
  return records


def read_tsv(tsv_path) -> list[dict[str, str]]:
  """results.tsv as a list of {column: text}."""
  text = workdir_io.read_text(workdir_io.path(tsv_path))
  header, *rows = [line.split('\t') for line in text.splitlines() if line.strip()]
  return [dict(zip(header, row)) for row in rows]

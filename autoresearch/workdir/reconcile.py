"""What to do, at start-up, with a ledger that does not end where the checkpoint does.

    plan = reconcile.plan(ledger_rows, trials, pending_rows, unreadable_steps)

The search writes the checkpoint of a step (with that step's rows) before the rows, and
a checkpoint's step number is its trial count. So a ledger is explained when:
- its rows are trials 1, 2, ..., n in order (one writer: no number twice, none skipped);
- n is at most the restored checkpoint's N, and rows n+1..N are among that checkpoint's
  own rows (killed between the checkpoint and the ledger): they are appended; rows that
  both hold must be the same rows;
- or n > N only because newer checkpoints were unreadable and skipped: the newest of
  them, step S >= n, accounts for rows N+1..n, which move to trials.orphaned.jsonl and
  run again.
Anything else (numbers twice or missing, rows newer than every checkpoint, rows that
differ from the checkpoint's) is refused with `UnexplainedLedger`, naming the rows, and
nothing is changed.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from autoresearch.workdir import io as workdir_io
from autoresearch.workdir.records import TrialRecord


_SHOWN = 6   # rows named in one message; the rest are counted


class UnexplainedLedger(workdir_io.WorkdirError):
  """trials.jsonl holds rows the checkpoints cannot account for."""


@dataclasses.dataclass
class Plan:
  """The ledger to keep, the rows to move out, and the checkpoint's rows to append."""
  keep: list[TrialRecord]
  orphaned: list[TrialRecord]
  append: list[TrialRecord]
  explained_by: int = 0     # the unreadable step that accounts for `orphaned`


def _span(numbers: list[int]) -> str:
  if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2:
    return f'{numbers[0]}..{numbers[-1]}'
  shown = ', '.join(map(str, numbers[:_SHOWN]))
  return shown + (f' and {len(numbers) - _SHOWN} more' if len(numbers) > _SHOWN else '')


def check_numbering(rows: list[TrialRecord]) -> None:
  """Raises UnexplainedLedger unless the rows are trials 1..n in order."""
  if all(row.trial == line for line, row in enumerate(rows, 1)):
    return
  lines = collections.defaultdict(list)
  for line, row in enumerate(rows, 1):
    lines[row.trial].append(line)
  twice = [t for t in sorted(lines) if len(lines[t]) > 1]
  missing = sorted(set(range(1, max(lines) + 1)) - set(lines))
  problems = [f'trial {t} on lines {", ".join(map(str, lines[t]))}' for t in twice[:_SHOWN]]
  if len(twice) > _SHOWN:
    problems.append(f'{len(twice) - _SHOWN} more trials twice')
  if missing:
    problems.append(f'trials {_span(missing)} missing')
  if not problems:   # every number once, out of order
    out = [line for line, row in enumerate(rows, 1) if row.trial != line]
    problems.append(f'lines {_span(out)} out of order')
  raise UnexplainedLedger(
      f'trials.jsonl is not the ledger of one search ({len(rows)} rows: '
      f'{"; ".join(problems)}); did two searches write to this workdir? Nothing was '
      'changed: keep the rows of one search in trials.jsonl (results.tsv is rebuilt from '
      'it) and start again, or use another workdir')


def _same(a: TrialRecord, b: TrialRecord) -> bool:
  dump = lambda r: json.dumps(r.to_dict(), sort_keys=True, allow_nan=True)  # noqa: E731
  return dump(a) == dump(b)


def plan(rows: list[TrialRecord], trials: int, pending: list[TrialRecord],
         unreadable: list[int]) -> Plan:
  """The plan that makes `rows` (trials.jsonl) hold exactly the checkpoint's trials
  1..`trials`; `pending` are the checkpoint's own rows (its last step), `unreadable` the
  newer checkpoint steps that failed to restore. UnexplainedLedger when there is none."""
  check_numbering(rows)
  keep, orphaned, explained_by = rows, [], 0
  if len(rows) > trials:
    newer = [s for s in unreadable if s >= len(rows)]
    if not newer:
      which = f'checkpoint {trials}' if trials else 'the checkpoints (there are none)'
      if unreadable:
        which += f' and the unreadable checkpoint {max(unreadable)}'
      raise UnexplainedLedger(
          f'trials.jsonl lines {_span(list(range(trials + 1, len(rows) + 1)))} hold trials '
          f'newer than {which}: no checkpoint accounts for them. Nothing was changed: '
          f'to continue from checkpoint {trials}, move those lines out of trials.jsonl '
          '(results.tsv is rebuilt from it); or use another workdir')
    keep, orphaned, explained_by = rows[:trials], rows[trials:], min(newer)
  first = trials - len(pending) + 1   # the checkpoint's own rows are trials first..trials
  if len(keep) < first - 1:
    raise UnexplainedLedger(
        f'trials.jsonl holds {len(keep)} trials and checkpoint {trials} has {trials}, of '
        f'which it holds only {_span([r.trial for r in pending]) if pending else "none"}: '
        f'trials {_span(list(range(len(keep) + 1, first)))} are lost')
  differing = [r.trial for r in keep[first - 1:] if not _same(r, pending[r.trial - first])]
  if differing:
    raise UnexplainedLedger(
        f'trials.jsonl lines {_span(differing)} differ from the same trials in checkpoint '
        f'{trials}: another search wrote them? Nothing was changed; use another workdir, or '
        'keep only the rows before them and start again')
  return Plan(keep, orphaned, pending[len(keep) - first + 1:], explained_by)

"""Upgrades a trials.jsonl written before the typed ledger row (`records.TrialRecord`).

    python benchmarks/data/upgrade_records.py FILE BUDGET_SECONDS

Rows of that format named the genotype id twice (`commit`), the memory twice
(`memory_gb`), carried σ on the baseline rows only, and marked the second run of a
re-run pair only in its description ('... (re-run, mean X)'). The upgrade writes the
same rows in the typed schema: `rerun_of` and `mean_bpb` from that description (the
only place this format kept them), σ of the last baseline row on every later row (the
σ the search used), `budget_seconds` as given (the recording's config), and drops the
duplicated and retired keys. The file is replaced atomically.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from autoresearch.workdir.records import TrialRecord  # noqa: E402

RERUN = re.compile(r'\s*\(re-run, mean ([^)]*)\)\s*$')
RETIRED = ('commit', 'memory_gb', 'eval_split')


def upgrade(rows: list[dict], budget_seconds: float) -> list[TrialRecord]:
  out: list[dict] = []
  sigma = None
  for row in rows:
    row = {k: v for k, v in row.items() if k not in RETIRED}
    if 'sigma' in row:
      sigma = row['sigma']
    row.update(sigma=sigma, budget_seconds=budget_seconds)
    rerun = RERUN.search(row['description'])
    if rerun:
      first = out[-1]
      row['rerun_of'] = first['trial']
      row['mean_bpb'] = first['mean_bpb'] = float(rerun.group(1))
    out.append(row)
  return [TrialRecord.from_dict(row) for row in out]


def main(path: str, budget_seconds: str) -> None:
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  records = upgrade(rows, float(budget_seconds))
  with open(path + '.tmp', 'w') as f:
    for record in records:
      f.write(json.dumps(record.to_dict(), allow_nan=True) + '\n')
  os.replace(path + '.tmp', path)
  print(f'{path}: {len(records)} rows upgraded')


if __name__ == '__main__':
  main(*sys.argv[1:])

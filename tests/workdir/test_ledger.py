"""results.tsv and trials.jsonl."""

import json

import pytest

from autoresearch.workdir import ledger as ledger_lib
from autoresearch.workdir.records import TrialRecord


def _record(trial, status='keep', val_bpb=2.5):
  return TrialRecord(genotype_id=f'id{trial}', genotype={'n_layers': 3}, val_bpb=val_bpb,
                     peak_memory_gb=1.234, status=status,
                     description='n_layers 2->3\twith a tab', trial=trial, agent='ppo',
                     train_seconds=60.04, total_seconds=80.0, params=1000, steps=10,
                     reward=0.5, best_bpb=2.4, sigma=0.01, budget_seconds=60.0,
                     loss_curve=[[0.1, 1, 5.0]])


def test_tsv_starts_with_autoresearch_columns_and_has_one_row_per_trial(tmp_path):
  ledger = ledger_lib.Ledger(str(tmp_path))
  ledger.append(_record(1))
  ledger.append(_record(2, status='crash', val_bpb=None))
  lines = (tmp_path / 'results.tsv').read_text().splitlines()
  assert lines[0].split('\t')[:5] == ['commit', 'val_bpb', 'memory_gb', 'status', 'description']
  rows = ledger_lib.read_tsv(str(tmp_path / 'results.tsv'))
  assert [r['trial'] for r in rows] == ['1', '2']
  assert rows[0]['val_bpb'] == '2.500000' and rows[0]['memory_gb'] == '1.2'
  assert rows[0]['description'] == 'n_layers 2->3 with a tab'
  assert rows[1]['val_bpb'] == '0.000000' and rows[1]['status'] == 'crash'
  assert all(len(line.split('\t')) == len(ledger_lib.TSV_COLUMNS) for line in lines)


def test_jsonl_holds_the_full_record_and_survives_reopening(tmp_path):
  ledger_lib.Ledger(str(tmp_path)).append(_record(1))
  ledger = ledger_lib.Ledger(str(tmp_path))  # reopening must not write a second header
  ledger.append(_record(2))
  records = ledger.read_records()
  assert records == [_record(1), _record(2)]   # every field round trips
  assert (tmp_path / 'results.tsv').read_text().count('commit\t') == 1


def test_a_torn_last_line_is_ignored(tmp_path):
  ledger = ledger_lib.Ledger(str(tmp_path))
  ledger.append(_record(1))
  with open(tmp_path / 'trials.jsonl', 'a') as f:
    f.write(json.dumps(_record(2).to_dict())[:20])  # killed mid-write
  assert [r.trial for r in ledger.read_records()] == [1]


def test_unknown_status_is_refused():
  with pytest.raises(ValueError, match='status'):
    _record(1, status='maybe')


def test_a_row_of_another_schema_is_refused_naming_its_fields(tmp_path):
  row = dict(_record(1).to_dict(), commit='id1', memory_gb=1.2)   # the old duplicated keys
  (tmp_path / 'trials.jsonl').write_text(json.dumps(row) + '\n')
  with pytest.raises(ValueError, match=r"unknown fields \['commit', 'memory_gb'\]"):
    ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))

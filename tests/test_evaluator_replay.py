"""The replay benchmark runs end to end on a small synthetic ledger."""

import json
import math
import re

import numpy as np
import pytest

from benchmarks import evaluator_replay   # a namespace package: the repository root is on the path

BUDGET = 10.0   # seconds of the synthetic trials


def _write_ledger(path, trials=14, readings=60, seed=0):
  """A trials.jsonl of power-law curves: 3 baseline rows, searched rows and one crash."""
  rng = np.random.default_rng(seed)
  with open(path, 'w') as f:
    for t in range(trials):
      baseline = t < 3
      a, b = 0.5 * math.exp(rng.normal(0, 0.2)), 0.5
      c = 1.6 if baseline else 1.6 + rng.normal(0.1, 0.15)
      progress = np.linspace(0.02, 1.0, readings)
      loss = c + a * progress ** -b + rng.normal(0.0, 0.05, readings)
      curve = [[float(p * BUDGET), i + 1, float(x)]
               for i, (p, x) in enumerate(zip(progress, loss))]
      bpb = 0.9 * (a + c) / math.log(2) + 0.1 + rng.normal(0.0, 0.003)
      status = 'keep' if baseline else 'discard'
      if t == 5:   # a crash mid-way: no score
        curve, bpb, status = curve[:20] + [[curve[20][0], 21, math.nan]], None, 'crash'
      f.write(json.dumps(dict(
          trial=t + 1, agent='baseline' if baseline else 'random', status=status, val_bpb=bpb,
          loss_curve=curve, compile_seconds=3.0, train_seconds=curve[-1][0],
          eval_seconds=2.0 if bpb else 0.0, total_seconds=curve[-1][0] + (6.0 if bpb else 4.0)
      )) + '\n')
    f.write('{"trial": 99, "status": "keep", "val_b')   # a torn last line: skipped


def _check_last_lines(lines):
  speedup = re.fullmatch(r'speedup: (\S+)', lines[-2])
  false_kills = re.fullmatch(r'false_kill_rate: (\S+)', lines[-1])
  assert speedup and false_kills, lines[-2:]
  assert float(speedup.group(1)) > 0
  assert 0.0 <= float(false_kills.group(1)) <= 1.0


def test_the_evaluator_replay_prints_speedup_and_false_kill_rate(tmp_path, capsys):
  path = str(tmp_path / 'trials.jsonl')
  _write_ledger(path)
  returned = evaluator_replay.main([path, '--no-optuna', '--no-sweep'])
  printed = capsys.readouterr().out.strip().splitlines()
  assert printed == returned
  _check_last_lines(printed)
  assert any('14 trials (3 baseline), budget 10 s' in line for line in printed)
  assert not any(line.startswith('optuna') for line in printed)


def test_the_optuna_pruners_get_rows(tmp_path, capsys):
  pytest.importorskip('optuna')
  path = str(tmp_path / 'trials.jsonl')
  _write_ledger(path)
  evaluator_replay.main([path, '--no-sweep'])
  printed = capsys.readouterr().out.strip().splitlines()
  _check_last_lines(printed)
  for row in ('optuna median (defaults)', 'optuna SHA (defaults)'):
    assert any(line.startswith(row) for line in printed), row

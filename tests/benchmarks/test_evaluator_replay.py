"""The replay benchmark runs end to end on a small synthetic ledger."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest

# benchmarks is a namespace package: the repository root is on the path.
from autoresearch.workdir.records import TrialRecord
from benchmarks import evaluator_replay, replay_methods, replay_metrics, replay_search


BUDGET = 10.0   # seconds of the synthetic trials


def _record(**fields) -> TrialRecord:
  """A ledger row with the fields the replay does not read filled in."""
  defaults = dict(description='edit', genotype_id='g', genotype={}, best_bpb=3.0, sigma=0.002,
                  budget_seconds=BUDGET)
  return TrialRecord(**dict(defaults, **fields))


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
      f.write(json.dumps(_record(
          trial=t + 1, agent='baseline' if baseline else 'random', status=status, val_bpb=bpb,
          loss_curve=curve, compile_seconds=3.0, train_seconds=curve[-1][0],
          eval_seconds=2.0 if bpb else 0.0, total_seconds=curve[-1][0] + (6.0 if bpb else 4.0)
      ).to_dict()) + '\n')
    f.write('{"trial": 99, "status": "keep", "val_b')   # a torn last line: skipped


def _check_last_lines(lines):
  speedup = re.fullmatch(r'speedup: (\S+)', lines[-3])
  false_kills = re.fullmatch(r'false_kill_rate: (\S+)', lines[-2])
  upper = re.fullmatch(r'false_kill_upper95: (\S+)', lines[-1])
  assert speedup and false_kills and upper, lines[-3:]
  assert float(speedup.group(1)) > 0
  assert 0.0 <= float(false_kills.group(1)) <= float(upper.group(1)) <= 1.0


def test_the_evaluator_replay_prints_speedup_and_false_kill_rate(tmp_path, capsys):
  path = str(tmp_path / 'trials.jsonl')
  _write_ledger(path)
  returned = evaluator_replay.main([path, '--no-optuna', '--no-sweep'])
  printed = capsys.readouterr().out.strip().splitlines()
  assert printed == returned
  _check_last_lines(printed)
  assert any('14 trials (3 baseline), budget 10 s' in line for line in printed)
  header = next(line for line in printed if line.startswith('agent/pruner'))
  for column in ('upper95', 'MAE@10%', 'MAE@25%', 'MAE@50%', 'cover90'):
    assert column in header
  assert any(line.startswith('winners (') for line in printed)
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


class _Stub:
  """A method that stops every trial (or those in `only`) after `stop_seconds` (None:
  never) and logs calls."""

  def __init__(self, stop_seconds=None, only=None):
    self.stop_seconds, self.only, self.calls = stop_seconds, only, []

  def start(self, search):
    self.calls.append('start')

  def watch(self, record, best_bpb):
    self.calls.append(('watch', record.trial, best_bpb))
    stops = self.only is None or record.trial in self.only
    return replay_methods.Outcome(self.stop_seconds if stops else None)

  def finish(self, record, outcome):
    pass

  def unwatched(self, record):
    self.calls.append(('unwatched', record.trial))

  def new_best(self, records, bpb):
    self.calls.append(('new_best', [r.trial for r in records], bpb))


def _search():
  def row(trial, bpb, agent='random', **fields):
    return _record(trial=trial, agent=agent, status='discard', val_bpb=bpb, total_seconds=10.0,
                   train_seconds=6.0, eval_seconds=2.0, budget_seconds=6.0, **fields)
  baseline = [row(t + 1, bpb, 'baseline') for t, bpb in enumerate((3.0, 3.002, 2.998))]
  records = baseline + [
      row(4, 2.999, mean_bpb=2.992),                     # inside the noise band ...
      row(5, 2.985, rerun_of=4, mean_bpb=2.992),         # ... its re-run keeps it
      row(6, 2.900),                                     # a clear gain: kept
      row(7, 2.899),                                     # inside the band, no re-run
  ]
  return replay_search.RecordedSearch('x', records, 6.0, baseline, 3.0, 0.001)


def test_the_replay_keeps_as_the_search_does_re_runs_included():
  stub = _Stub()
  metrics = replay_search.replay_search(stub, _search(), keep_alpha=0.05)
  # Baseline σ 0.002 (2 degrees of freedom); the re-run pair's mean gains 0.008 over the
  # second stage's bar of t(0.96, 2)·0.002·√(1/3 + 1/2) = 0.0061.
  assert stub.calls == ['start', ('watch', 4, 3.0), ('unwatched', 5),
                        ('new_best', [4, 5], pytest.approx(2.992)),
                        ('watch', 6, pytest.approx(2.992)), ('new_best', [6], 2.90),
                        ('watch', 7, 2.90)]
  assert (metrics.searched, metrics.better, metrics.new_bests, metrics.aborted) == (3, 3, 2, 0)
  assert metrics.seconds_with == metrics.seconds_without == 70.0
  assert metrics.false_kill_rate == 0.0


def test_a_stopped_trial_is_neither_re_run_nor_kept_and_costs_its_setup_and_stop():
  metrics = replay_search.replay_search(_Stub(stop_seconds=1.5), _search(), keep_alpha=0.05)
  assert (metrics.searched, metrics.better, metrics.killed_better) == (3, 3, 3)
  assert metrics.new_bests == 0 and metrics.false_kill_rate == 1.0
  # Baseline 3 x 10 s; each stopped trial: setup (10 - 6 - 2) + 1.5 s; the re-run never runs.
  assert metrics.seconds_with == pytest.approx(30.0 + 3 * 3.5)
  assert metrics.seconds_without == 70.0


def test_the_oracle_stops_only_the_losers_at_min_progress():
  search = _search()
  search.records.append(dataclasses.replace(search.records[-1], trial=8, val_bpb=3.1))  # a loser
  metrics = replay_search.replay_search(replay_methods.OracleMethod(0.25), search,
                                        keep_alpha=0.05)
  assert (metrics.searched, metrics.aborted, metrics.false_kill_rate) == (4, 1, 0.0)
  # The loser costs its setup (2 s) and a quarter of its 6 s budget instead of 10 s.
  assert metrics.seconds_without - metrics.seconds_with == pytest.approx(10.0 - 3.5)


def test_the_sweep_has_an_oracle_row_for_each_min_progress_it_tries():
  rows = evaluator_replay.methods(0.0, with_optuna=False, sweep=True, notes=[])
  labels = [label for label, _ in rows]
  assert len(set(labels)) == len(labels)
  evaluator_rows = {m.cfg.min_progress for _, m in rows
                    if isinstance(m, replay_methods.EvaluatorMethod)}
  oracle_rows = [m.min_progress for _, m in rows
                 if isinstance(m, replay_methods.OracleMethod)]
  assert sorted(oracle_rows) == sorted(evaluator_rows)
  assert evaluator_rows >= set(evaluator_replay.SWEEP_MIN_PROGRESS)
  # The evaluator's other knobs are swept too, one at a time from the default.
  evaluators = [m for _, m in rows if isinstance(m, replay_methods.EvaluatorMethod)]
  assert {m.margin_sigmas for m in evaluators} >= set(evaluator_replay.SWEEP_MARGINS)
  assert {m.cfg.check_every for m in evaluators} >= set(evaluator_replay.SWEEP_CHECK_EVERY)


def test_the_fastest_pruner_within_the_false_kill_limit():
  def metrics(without, kills, better):
    return replay_metrics.Metrics(seconds_without=without, seconds_with=100.0, better=better,
                                  killed_better=kills, aborted=1 if without > 100 else 0)

  rows = [('optuna median a', metrics(300.0, 5, 19)),    # fastest, but 26% false kills
          ('optuna median b', metrics(150.0, 0, 19)),
          ('optuna median c', metrics(120.0, 0, 19)),
          ('optuna median d', metrics(100.0, 0, 19)),    # safe because it never stops
          ('optuna SHA a', metrics(400.0, 2, 19)),
          ('optuna SHA b', metrics(100.0, 0, 19))]
  label, best = replay_metrics.best_within(rows, 'optuna median')
  assert (label, best.speedup) == ('optuna median b', 1.5)
  assert replay_metrics.best_within(rows, 'optuna SHA') is None


def test_false_kills_count_against_the_winners_of_the_unstopped_search():
  search = _search()
  search.records[-1] = dataclasses.replace(search.records[-1], val_bpb=2.95)
  # Unstopped: 4 (with its re-run) and 6 beat the best of their time; 7 (2.95) does not
  # beat 6's 2.90.
  assert replay_search.winners(search, keep_alpha=0.05) == {4, 6}
  # Stopping 6 leaves the best at 2.992, so 7 beats this replay's own best; it is still
  # no winner: every method is counted on the same two.
  stub = _Stub(stop_seconds=1.0, only={6})
  metrics = replay_search.replay_search(stub, search, keep_alpha=0.05)
  assert ('watch', 7, pytest.approx(2.992)) in stub.calls
  assert (metrics.better, metrics.killed_better, metrics.aborted) == (2, 1, 1)
  assert metrics.false_kill_rate == 0.5


def test_wilson_upper_bound():
  z2 = replay_metrics.Z95 ** 2
  assert replay_metrics.wilson_upper(0, 19) == pytest.approx(z2 / (19 + z2))   # ~0.168
  assert replay_metrics.wilson_upper(5, 10) == pytest.approx(0.7634, abs=1e-4)
  assert replay_metrics.wilson_upper(0, 0) == 1.0   # nothing to bound
  assert replay_metrics.wilson_upper(10, 10) == pytest.approx(1.0)
  uppers = [replay_metrics.wilson_upper(0, n) for n in (10, 30, 100)]
  assert uppers == sorted(uppers, reverse=True) and uppers[-1] < 0.04
  with pytest.raises(ValueError, match='kills=3'):
    replay_metrics.wilson_upper(3, 2)


def test_a_stop_under_the_flops_clock_saves_the_same_share_of_machine_seconds():
  # 4 clock seconds took 8 machine seconds; 20 s in all: compile and setup 10, eval 2.
  record = _record(trial=4, agent='random', status='discard', val_bpb=3.0, train_seconds=4.0,
                   wall_train_seconds=8.0, eval_seconds=2.0, total_seconds=20.0)
  assert replay_search.stop_cost(record, 1.0) == pytest.approx(10.0 + 2.0)
  wall = dataclasses.replace(record, wall_train_seconds=0.0)   # older rows: wall clock
  assert replay_search.stop_cost(wall, 1.0) == pytest.approx(14.0 + 1.0)


def test_coverage_and_mae_need_predictions():
  m = replay_metrics.Metrics(z_scores=[0.1, -1.0, 1.7, 2.5])
  assert m.coverage90 == 0.5 and m.beyond_2sigma == 0.25
  assert replay_metrics.Metrics().coverage90 is None
  line = replay_metrics.summary('x', replay_metrics.Metrics(stop_z=[3.0, 1.0]))
  assert 'at its 2 stops' in line and '|z|>2 0.500, mean z +2.00' in line
  assert replay_metrics.Metrics().mae(0.1) is None

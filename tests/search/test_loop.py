"""The perpetual loop: keep rule, reward, and tiny searches end to end."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from autoresearch.agents.api import HistoryEntry, SearchSpace, SearchView
from autoresearch.agents.ppo import features
from autoresearch.search import keep_rule, loop
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.results import TrialResult
from autoresearch.workdir import checkpointing, ledger as ledger_lib, records
from configs import tiny
from tests.helpers import ROOT


def _view(best, history=(), best_bpb=3.0, sigma=0.01):
  space = SearchSpace(0, 0.0)
  return SearchView(best, best_bpb, sigma, len(history), 0, tuple(history),
                    genotype_lib.edit_mask(best, 0, 0.0), space)


def test_policy_observation_shapes_and_masks():
  g = genotype_lib.from_config(tiny.get_config())
  entry = HistoryEntry(0, 1, 2, 'keep', 2.985, 3.0, 0.01, 1.0, True)
  obs = features.observation(_view(g, [entry] * 3), history_len=5)
  assert obs.history.shape == (5, features.HISTORY_DIM)
  assert obs.history_mask.tolist() == [True, True, True, False, False]
  assert obs.genome.shape == (genotype_lib.GENOME_DIM,)
  assert obs.edit_mask.shape == (genotype_lib.N_GENES, genotype_lib.MAX_VALUES)
  assert obs.edit_mask.any()
  row = obs.history[0]
  assert row[0] == 1.0 and row[genotype_lib.N_GENES + 2] == pytest.approx(math.tanh(0.5))


def test_a_whole_genotype_has_no_edit_features():
  # gene -1 (random_global, evolution, Optuna): the edit part of the row is all zero.
  entry = HistoryEntry(-1, -1, -1, 'crash', None, 3.0, 0.01, 0.0, False)
  row = features.history_row(entry)
  assert not row[:genotype_lib.N_GENES + 2].any()
  assert row[genotype_lib.N_GENES + 2] == -1.0   # no score: the lowest outcome
  assert row[genotype_lib.N_GENES + 5 + records.STATUSES.index('crash')] == 1.0


def _tiny_config(kind, max_trials):
  config = tiny.get_config()
  config.trial.budget_seconds = 1.0
  config.search.max_trials = max_trials
  config.search.noise_repeats = 2
  config.agent.kind = kind
  config.agent.update_every = 2
  config.agent.ppo.minibatches = 1
  return config


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['random', 'ppo'])
def test_tiny_search_writes_exactly_max_trials_rows(tmp_path, kind):
  config = _tiny_config(kind, max_trials=6)
  state = loop.run(config, str(tmp_path))
  rows = ledger_lib.read_tsv(str(tmp_path / 'results.tsv'))
  rows_ = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  assert [int(r['trial']) for r in rows] == list(range(1, 7)) == [r.trial for r in rows_]
  assert state.trials == 6 and len(state.baseline_bpbs) == 2
  assert [r['agent'] for r in rows[:2]] == ['baseline', 'baseline']
  assert state.sigma >= config.search.min_sigma
  # Each row carries the σ its decision used (pooled: re-run pairs join it afterwards).
  assert rows_[2].sigma == rows_[1].sigma
  assert all(r.sigma >= config.search.min_sigma and r.budget_seconds == 1.0 for r in rows_)
  exported = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert exported == state.best_genotype
  # Every proposed genotype is one valid edit away from the best it was proposed against.
  for r in rows_[2:]:
    assert r.description.count('->') == 1
    assert genotype_lib.is_valid(r.genotype)[0]


@pytest.mark.slow
def test_main_defaults_to_the_search(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={tmp_path}',
       '--config.search.max_trials=3', '--config.search.noise_repeats=2',
       '--config.trial.budget_seconds=1', '--config.agent.kind=random', '--quiet'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(ledger_lib.read_tsv(str(tmp_path / 'results.tsv'))) == 3
  assert [line.split(' |')[0] for line in proc.stdout.splitlines()] == [
      'trial 1', 'trial 2', 'trial 3']  # --quiet: the summary lines only
  assert 'step' not in proc.stderr  # no progress lines
  assert 'trial 3 | random |' in proc.stdout


def _parallel_search(workdir, k, max_trials, log, kill_at=''):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  return subprocess.run([sys.executable, 'tests/helpers/parallel_search_script.py', str(workdir),
                         str(k), str(max_trials), str(log), kill_at], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _ledger(workdir):
  return [(r.trial, r.genotype_id, r.status, r.val_bpb)
          for r in ledger_lib.read_records(str(workdir / 'trials.jsonl'))]


@pytest.mark.slow
@pytest.mark.parametrize('k', [2, 4])
def test_parallel_trials_run_at_once_on_disjoint_device_groups_and_survive_kills(tmp_path, k):
  straight, log = tmp_path / 'straight', tmp_path / 'calls.jsonl'
  # 2 baselines, then rounds of k proposals each re-run once (2k rows): room for a kill
  # in each of two rounds and one more proposal after them.
  n = 2 + 4 * k + 1
  proc = _parallel_search(straight, k, n, log)
  assert proc.returncode == 0, proc.stderr[-3000:]
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  groups = {tuple(c['devices']) for c in calls}
  assert all(len(g) == 4 // k for g in groups) and len(groups) == k
  assert len({d for g in groups for d in g}) == 4  # disjoint, all devices used
  overlapping = sum(a['start'] < b['end'] and b['start'] < a['end']
                    for i, a in enumerate(calls) for b in calls[i + 1:])
  assert overlapping >= k - 1  # trials of a round ran at once
  expected = _ledger(straight)
  assert [t for t, _, _, _ in expected] == list(range(1, n + 1))
  rows = ledger_lib.read_records(str(straight / 'trials.jsonl'))
  proposers = [r.agent for r in rows]
  assert proposers[:2] == ['baseline'] * 2 and set(proposers[2:]) == {'ppo'}
  # A PPO update (every 4 proposals) is recorded on the row of the proposal that made it.
  last_rows = {}   # proposal number -> its last row
  for r in rows[2:]:
    if r.rerun_of is None:
      last_rows[len(last_rows) + 1] = r
    else:
      last_rows[len(last_rows)] = r
  assert [n for n, r in last_rows.items() if r.agent_metrics] == [
      n for n in last_rows if n % 4 == 0]
  assert sum(bool(r.agent_metrics) for r in rows) == len(last_rows) // 4

  # kill -9 in the middle of rounds (while trials are in flight, and between the
  # checkpoint and the ledger), then resume: exactly the uninterrupted ledger.
  killed = tmp_path / 'killed'
  for point in ('mid-compile:4', 'after-checkpoint:1', 'mid-compile:3'):
    proc = _parallel_search(killed, k, n, tmp_path / 'ignored.jsonl', kill_at=point)
    assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
    recorded = _ledger(killed)
    assert recorded == expected[:len(recorded)]
  proc = _parallel_search(killed, k, n, tmp_path / 'ignored.jsonl')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _ledger(killed) == expected


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_run_one_search_process_0_records_it_and_it_resumes(tmp_path):
  """jax.distributed on one machine: two CPU processes, each with one device; every
  trial is data-parallel over both; only process 0 writes the ledger and checkpoints."""
  workdir = tmp_path / 'w'

  def launch(max_trials):
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
         f'--config.search.max_trials={max_trials}', '--config.search.noise_repeats=2',
         '--config.trial.budget_seconds=1', '--quiet',
         f'--config.distributed.coordinator_address=localhost:{port}',
         '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
      assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]

  leader, follower = launch(3)
  assert [line.split(' |')[0] for line in leader.splitlines() if line.startswith('trial')] == [
      'trial 1', 'trial 2', 'trial 3']
  assert 'trial' not in follower   # process 1 trains, process 0 reports and records
  leader, _ = launch(4)            # resumed by both processes
  assert [line.split(' |')[0] for line in leader.splitlines() if line.startswith('trial')] == [
      'trial 4']
  rows = ledger_lib.read_tsv(str(workdir / 'results.tsv'))
  assert [int(r['trial']) for r in rows] == [1, 2, 3, 4]


def _landscape_run(genotype, corpus, cfg, watch=None, devices=None):
  """A noiseless stand-in trial: each gene that differs from the tiny baseline gains
  0.03 bpb (even gene index: clear of the first run's bar at σ = 0.004) or 0.012 (odd:
  inside the band, and kept after a re-run)."""
  baseline = genotype_lib.from_config(tiny.get_config())
  gain = sum(0.03 if i % 2 == 0 else 0.012 for i, g in enumerate(genotype_lib.GENES)
             if genotype[g.name] != baseline[g.name])
  return TrialResult(genotype_lib.genotype_id(genotype), dict(genotype), status='ok',
                     val_bpb=3.0 - gain, train_seconds=1.0, total_seconds=1.0, steps=1)


def _proposals(rows, noise_repeats):
  """(first row, best before it, the σ̂ its decision used, runs behind that best) of each
  proposal after the baseline's noise runs, for a search of one proposal a round, and
  σ̂'s degrees of freedom at the end: σ̂ pools each genotype's repeated runs (the
  baseline's, each re-run pair's), a pair joining after its own decision."""
  repeats = {rows[0].genotype_id: noise_repeats}
  best_runs, out = noise_repeats, []
  for i in range(noise_repeats, len(rows)):
    first = rows[i]
    if first.rerun_of is not None:
      continue
    dof = sum(n - 1 for n in repeats.values())
    out.append((first, rows[i - 1].best_bpb, keep_rule.Noise(first.sigma, dof), best_runs))
    paired = i + 1 < len(rows) and rows[i + 1].rerun_of == first.trial
    if paired:
      repeats[first.genotype_id] = repeats.get(first.genotype_id, 0) + 2
    if first.status == 'keep':
      best_runs = 2 if paired else 1
  return out, sum(n - 1 for n in repeats.values())


def test_keeps_clear_gains_at_once_and_band_gains_after_a_rerun(tmp_path):
  config = _tiny_config('random', max_trials=28)
  config.search.noise_repeats = 5
  config.search.min_sigma = 0.004
  config.evaluator.enabled = False
  state = loop.Search.open(config, str(tmp_path), run_trial=_landscape_run).run()
  rows = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  assert len(rows) == 28 and state.sigma == 0.004 and state.sigma_dof >= 4
  pairs = {r.rerun_of: r for r in rows if r.rerun_of is not None}
  searched = rows[5:]   # after the 5 baseline runs
  direct = [r for r in searched if r.status == 'keep' and r.rerun_of is None
            and r.trial not in pairs]
  rerun_keeps = [(first, pairs[first.trial]) for first in searched
                 if first.trial in pairs and first.status == 'keep']
  assert direct and rerun_keeps, 'no clear gain kept at once, or no band gain after a re-run'
  # Every proposal against the keep rule's bars, from the rows alone: kept without a
  # re-run only above the first stage's bar, never discarded above it; re-run only
  # inside the band (0, bar]; a pair kept exactly when its mean clears the second bar.
  alpha = config.search.keep_alpha
  proposals, final_dof = _proposals(rows, config.search.noise_repeats)
  assert final_dof == state.sigma_dof and len(proposals) == len(searched) - len(pairs)
  for first, best_before, noise, best_runs in proposals:
    gain = best_before - first.val_bpb
    bar = keep_rule.threshold(noise, best_runs, 1, alpha * keep_rule.FIRST_RUN_SHARE)
    if first.trial in pairs:
      assert 0.0 < gain <= bar, (first.trial, gain, bar)
      pair_bar = keep_rule.threshold(noise, best_runs, 2,
                                     alpha * (1 - keep_rule.FIRST_RUN_SHARE))
      assert (first.status == 'keep') == (best_before - first.mean_bpb > pair_bar), first.trial
    else:
      assert (first.status == 'keep') == (gain > bar), (first.trial, first.status, gain, bar)
  for first, second in rerun_keeps:
    assert second.trial == first.trial + 1 and second.status == 'keep'
    assert first.mean_bpb == second.mean_bpb == pytest.approx((first.val_bpb + second.val_bpb) / 2)
  bests = [r.best_bpb for r in rows]
  assert all(b <= a for a, b in zip(bests, bests[1:]))   # the best only improves
  last_keep = [r for r in rows if r.status == 'keep'][-1]
  assert state.best_bpb == last_keep.outcome_bpb == bests[-1]
  assert state.best_genotype == last_keep.genotype


def test_the_checkpoint_holds_raw_outcomes_so_a_new_view_of_them_resumes(tmp_path):
  config = _tiny_config('random', max_trials=8)
  config.evaluator.enabled = False
  loop.Search.open(config, str(tmp_path), run_trial=_landscape_run).run()
  meta = checkpointing.Checkpointer(str(tmp_path / 'checkpoints')).restore({'agent': {}})[2]
  history = meta['state']['history']
  rows = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  proposals = [r for r in rows[2:] if r.rerun_of is None]   # a re-run adds a row, not an entry
  assert len(history) == len(proposals) >= 3 and all(set(h) == {f.name for f in dataclasses.fields(
      HistoryEntry)} for h in history)
  # The agents' view changes (a shorter history): the saved search resumes as it was.
  config.agent.history = 4
  config.search.max_trials = 10
  config.checkpoint.allow_config_change = True
  state = loop.Search.open(config, str(tmp_path), run_trial=_landscape_run).run()
  assert state.trials == 10 and len(state.history) == 4
  assert [r.trial for r in ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))] == list(
      range(1, 11))


def _curve_run(genotype, corpus, cfg, watch=None, devices=None):
  """_landscape_run with a power-law loss curve of 20 readings over the budget."""
  result = _landscape_run(genotype, corpus, cfg, watch, devices)
  budget = cfg.budget_seconds
  result.loss_curve = [[budget * k / 20, k, 2.0 + 3.0 * (k / 20) ** -0.5] for k in range(1, 21)]
  result.train_seconds = result.total_seconds = budget
  return result


def test_a_resumed_search_compares_trials_with_the_same_reference_curve(tmp_path):
  config = _tiny_config('random', max_trials=5)
  first = loop.Search.open(config, str(tmp_path), run_trial=_curve_run)
  try:
    first.measure_noise()
    first.step()
    before = first.reference
  finally:
    first.store.close()
  assert before is not None and before.bins is not None
  resumed = loop.Search.open(config, str(tmp_path), run_trial=_curve_run)
  try:
    after = resumed.reference
  finally:
    resumed.store.close()
  assert after.bpb == before.bpb
  np.testing.assert_array_equal(after.features, before.features)
  np.testing.assert_array_equal(after.bins, before.bins)   # NaN where no run reached a bin


def test_a_gain_inside_the_band_on_the_last_row_says_max_trials_left_no_re_run(tmp_path):
  baseline = genotype_lib.from_config(tiny.get_config())

  def band_run(genotype, corpus, cfg, watch=None, devices=None):   # every edit gains 0.005
    bpb = 3.0 if genotype == baseline else 2.995
    return TrialResult(genotype_lib.genotype_id(genotype), dict(genotype), status='ok',
                       val_bpb=bpb, train_seconds=1.0, total_seconds=1.0, steps=1)

  config = _tiny_config('random', max_trials=5)
  config.search.noise_repeats = 2
  config.search.min_sigma = 0.004
  config.evaluator.enabled = False
  loop.Search.open(config, str(tmp_path), run_trial=band_run).run()
  rows = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  assert [r.rerun_of for r in rows] == [None, None, None, 3, None]   # trial 3 had room
  assert 'max_trials' not in rows[2].description + rows[3].description
  assert rows[4].status == 'discard'
  assert rows[4].description.endswith(
      '(inside the noise band; max_trials left no row to re-run it)')

"""The perpetual loop: keep rule, reward, and tiny searches end to end."""

import json
import math
import os
import subprocess
import sys

import pytest

from autoresearch import agents, genotype as genotype_lib, ledger as ledger_lib, search
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_keep_rule():
  assert search.decide(gain=0.05, sigma=0.01, keep_sigmas=2.0) == 'keep'
  assert search.decide(gain=0.015, sigma=0.01, keep_sigmas=2.0) == 'rerun'
  assert search.decide(gain=-0.001, sigma=0.01, keep_sigmas=2.0) == 'discard'
  assert search.decide(gain=0.0, sigma=0.01, keep_sigmas=2.0) == 'discard'


def test_reward_is_the_gain_in_sigmas_clipped_with_a_floor_for_crashes():
  assert search.reward(2.0, 1.99, 0.01, 5.0) == pytest.approx(1.0)
  assert search.reward(2.0, 2.03, 0.01, 5.0) == pytest.approx(-3.0)
  assert search.reward(2.0, 1.0, 0.01, 5.0) == 5.0
  assert search.reward(2.0, None, 0.01, 5.0) == -5.0
  assert search.reward(2.0, math.nan, 0.01, 5.0) == -5.0


def test_observation_shapes_and_masks():
  g = genotype_lib.from_config(tiny.get_config())
  row = agents.history_row(0, 1, 2, 1.5, 'keep', 1.0, True)
  obs = agents.build_observation(g, [row] * 3, 5, trials=3, since_improvement=0, best_bpb=3.0,
                                 space=agents.SearchSpace())
  assert obs.history.shape == (5, agents.HISTORY_DIM)
  assert obs.history_mask.tolist() == [True, True, True, False, False]
  assert obs.genome.shape == (genotype_lib.GENOME_DIM,)
  assert obs.edit_mask.shape == (genotype_lib.N_GENES, genotype_lib.MAX_VALUES)
  assert obs.edit_mask.any()


def _tiny_config(kind, max_trials):
  config = tiny.get_config()
  config.trial.budget_seconds = 1.0
  config.search.max_trials = max_trials
  config.search.noise_repeats = 2
  config.agent.kind = kind
  config.agent.update_every = 2
  config.agent.ppo.minibatches = 1
  return config


@pytest.mark.parametrize('kind', ['random', 'ppo'])
def test_tiny_search_writes_exactly_max_trials_rows(tmp_path, kind):
  config = _tiny_config(kind, max_trials=6)
  state = search.run(config, str(tmp_path))
  rows = ledger_lib.read_tsv(str(tmp_path / 'results.tsv'))
  records = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  assert [int(r['trial']) for r in rows] == list(range(1, 7)) == [r['trial'] for r in records]
  assert state.trials == 6 and len(state.baseline_bpbs) == 2
  assert [r['agent'] for r in rows[:2]] == ['baseline', 'baseline']
  assert all(r['status'] in ledger_lib.STATUSES for r in rows)
  assert state.sigma >= config.search.min_sigma
  exported = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert exported == state.best_genotype
  kept = [r for r in records[2:] if r['status'] == 'keep']
  if kept:
    assert state.best_bpb <= min(r['val_bpb'] for r in kept) + 1e-12 or any(
        're-run' in r['description'] for r in kept)
  # Every proposed genotype is one valid edit away from the best it was proposed against.
  for r in records[2:]:
    assert r['description'].count('->') == 1
    assert genotype_lib.is_valid(r['genotype'])[0]


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


def _parallel_search(workdir, k, max_trials, log, kill_at=None):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  env.pop('AUTORESEARCH_KILL_AT', None)
  if kill_at:
    env['AUTORESEARCH_KILL_AT'] = kill_at
  return subprocess.run([sys.executable, 'tests/parallel_search_script.py', str(workdir), str(k),
                         str(max_trials), str(log)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def _ledger(workdir):
  return [(r['trial'], r['commit'], r['status'], r['val_bpb'])
          for r in ledger_lib.read_records(str(workdir / 'trials.jsonl'))]


@pytest.mark.slow
@pytest.mark.parametrize('k', [2, 4])
def test_parallel_trials_run_at_once_on_disjoint_device_groups_and_survive_kills(tmp_path, k):
  straight, log = tmp_path / 'straight', tmp_path / 'calls.jsonl'
  proc = _parallel_search(straight, k, 11, log)
  assert proc.returncode == 0, proc.stderr[-3000:]
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  groups = {tuple(c['devices']) for c in calls}
  assert all(len(g) == 4 // k for g in groups) and len(groups) == k
  assert len({d for g in groups for d in g}) == 4  # disjoint, all devices used
  overlapping = sum(a['start'] < b['end'] and b['start'] < a['end']
                    for i, a in enumerate(calls) for b in calls[i + 1:])
  assert overlapping >= k - 1  # trials of a round ran at once
  expected = _ledger(straight)
  assert [t for t, _, _, _ in expected] == list(range(1, 12))
  proposers = [r['agent'] for r in ledger_lib.read_records(str(straight / 'trials.jsonl'))]
  assert proposers[:2] == ['baseline'] * 2 and set(proposers[2:]) == {'ppo'}

  # kill -9 in the middle of rounds (while trials are in flight, and between the
  # checkpoint and the ledger), then resume: exactly the uninterrupted ledger.
  killed = tmp_path / 'killed'
  for point in ('mid-compile:4', 'after-checkpoint:1', 'mid-compile:3'):
    proc = _parallel_search(killed, k, 11, tmp_path / 'ignored.jsonl', kill_at=point)
    assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
    recorded = _ledger(killed)
    assert recorded == expected[:len(recorded)]
  proc = _parallel_search(killed, k, 11, tmp_path / 'ignored.jsonl')
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

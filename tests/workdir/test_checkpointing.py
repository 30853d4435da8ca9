"""Persistence: Orbax round trips, resume equivalence, and real kill -9 / SIGTERM runs."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoresearch.search import loop
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.results import LossReading, TrialResult
from autoresearch.workdir import checkpointing, ledger as ledger_lib
from configs import tiny
from tests.helpers import ROOT


def test_round_trip_keep_and_fallback_from_a_corrupt_latest(tmp_path):
  arrays = {'w': jnp.arange(6.0).reshape(2, 3), 'key': jax.random.key_data(jax.random.key(1))}
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, jax.tree_util.tree_map(lambda x: x + step, arrays),
              {'step': step, 'big': 2**90})
  assert ckpt.steps() == [2, 3]
  step, restored, meta = ckpt.restore(arrays)
  assert step == 3 and meta == {'step': 3, 'big': 2**90}
  np.testing.assert_array_equal(restored['w'], np.arange(6.0).reshape(2, 3) + 3)
  # Corrupt the newest step's array data: the one before it is used, with a warning.
  for root, _, files in os.walk(tmp_path / '3' / 'arrays'):
    for name in files:
      with open(os.path.join(root, name), 'w') as f:
        f.write('garbage')
  step, restored, meta = checkpointing.Checkpointer(str(tmp_path), keep=2).restore(arrays)
  assert step == 2 and meta['step'] == 2


def test_a_state_without_arrays_round_trips_without_warnings(tmp_path, caplog):
  # The random, evolution and Optuna agents keep everything in the JSON meta.
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  with caplog.at_level('WARNING'):
    for step in (1, 2):
      ckpt.save(step, {'agent': {}}, {'step': step})
  assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == []
  step, restored, meta = checkpointing.Checkpointer(str(tmp_path)).restore({'agent': {}})
  assert (step, restored, meta) == (2, {'agent': {}}, {'step': 2})


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  with pytest.raises(checkpointing.CheckpointError, match='a_file'):
    checkpointing.Checkpointer(str(blocker / 'checkpoints'))


def _fake_run(genotype, corpus, cfg, watch=None, score_test=False):
  """Deterministic stand-in for runner.run: val_bpb a fixed function of the genotype."""
  gid = genotype_lib.genotype_id(genotype)
  bpb = 2.0 + int(gid[:6], 16) / 16**6 * 0.05 + 1e-4 * (cfg.seed % 3)
  if watch is not None and watch(LossReading(1.0, 1.0, 1, 1.0)) is not None:
    return TrialResult(gid, dict(genotype), status='interrupted')
  return TrialResult(gid, dict(genotype), status='ok', val_bpb=bpb, train_seconds=1.0,
                     total_seconds=1.0, steps=1)


def _config(max_trials, kind='ppo'):
  config = tiny.get_config()
  config.search.max_trials = max_trials
  config.search.noise_repeats = 2
  config.search.min_sigma = 0.004
  config.agent.kind = kind
  config.agent.update_every = 4
  config.agent.ppo.minibatches = 2
  return config


def _proposed(workdir):
  return [(r.trial, r.genotype_id, r.status) for r in
          ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl'))]


def _run_until_signal(config, workdir, signal_at_call):
  """loop.run with the stand-in runner, sending SIGTERM during its n-th trial."""
  calls = {'n': 0}

  def run_then_signal(genotype, corpus, cfg, watch=None, score_test=False):
    calls['n'] += 1
    if calls['n'] == signal_at_call:
      os.kill(os.getpid(), signal.SIGTERM)
    return _fake_run(genotype, corpus, cfg, watch, score_test)

  return loop.Search.open(config, workdir, run_trial=run_then_signal).run()


# One agent in the fast tier; the others (about 20 s each) in the slow one.
@pytest.mark.parametrize('kind', ['evolution'] + [pytest.param(k, marks=pytest.mark.slow)
                                                  for k in ('ppo', 'tpe', 'cmaes')])
def test_resume_proposes_exactly_what_an_uninterrupted_search_proposes(tmp_path, kind):
  straight = str(tmp_path / 'straight')
  loop.Search.open(_config(14, kind), straight, run_trial=_fake_run).run()
  expected = _proposed(straight)
  assert len(expected) == 14 and len({c for _, c, _ in expected}) > 4

  # SIGTERM during a trial, three times: nothing is recorded for the trial in flight,
  # and each resume continues from the saved state.
  signalled = str(tmp_path / 'signalled')
  recorded = []
  for k in (2, 5, 4):
    state = _run_until_signal(_config(14, kind), signalled, signal_at_call=k)
    recorded.append(state.trials)
    assert len(_proposed(signalled)) == state.trials
  assert recorded[0] < recorded[1] < recorded[2] < 14
  loop.Search.open(_config(14, kind), signalled, run_trial=_fake_run).run()
  assert _proposed(signalled) == expected

  # Killed between the checkpoint and the ledger: the last row is only in the checkpoint
  # and half-written in both ledger files.
  torn = str(tmp_path / 'torn')
  state = _run_until_signal(_config(14, kind), torn, signal_at_call=8)
  for name in ('trials.jsonl', 'results.tsv'):
    path = os.path.join(torn, name)
    lines = open(path).read().splitlines(keepends=True)
    open(path, 'w').write(''.join(lines[:-1]) + lines[-1][:10])
  assert len(ledger_lib.read_records(os.path.join(torn, 'trials.jsonl'))) == state.trials - 1
  loop.Search.open(_config(14, kind), torn, run_trial=_fake_run).run()
  assert _proposed(torn) == expected
  assert len(ledger_lib.read_tsv(os.path.join(torn, 'results.tsv'))) == 14


def test_a_changed_config_is_refused_naming_what_changed(tmp_path):
  # The random agent: the refusal does not depend on the agent, and PPO's policy load
  # and first proposal cost about 12 s.
  loop.Search.open(_config(3, 'random'), str(tmp_path), run_trial=_fake_run).run()
  changed = _config(4, 'random')
  changed.trial.budget_seconds = 9.0
  changed.genotype.d_model = 64
  with pytest.raises(checkpointing.CheckpointError, match='trial, baseline genotype'):
    loop.Search.open(changed, str(tmp_path), run_trial=_fake_run).run()
  changed.checkpoint.allow_config_change = True
  assert loop.Search.open(changed, str(tmp_path), run_trial=_fake_run).run().trials == 4


def _command(workdir, max_trials, kill_at=''):
  return [sys.executable, 'tests/helpers/search_script.py', '--config=configs/tiny.py',
          f'--workdir={workdir}', f'--kill_at={kill_at}',
          f'--config.search.max_trials={max_trials}', '--config.search.noise_repeats=2',
          '--config.trial.budget_seconds=0.5', '--config.agent.kind=random']


@pytest.mark.slow
def test_kill_9_at_many_moments_loses_and_duplicates_nothing(tmp_path):
  workdir = str(tmp_path / 'w')
  # point:N = the N-th time the process reaches that point (see tests/helpers/faults.py).
  kills = ['mid-compile:1', 'train:2', 'mid-eval:2', 'mid-checkpoint:2', 'after-checkpoint:3',
           'mid-compile:3', 'mid-checkpoint:1']
  # Every trial trains to its budget (no early stops), so each point comes once per trial
  # and a run reaches its kill within 3 steps (6 rows with re-runs); `max_trials` is not
  # part of the config's fingerprint, so each run may be given room beyond what is there.
  no_early_stops = ['--config.evaluator.enabled=False']
  room = 8
  seen = []  # (trial, commit, val_bpb) recorded before each kill
  for point in kills:
    cmd = _command(workdir, len(seen[-1]) + room if seen else room, point) + no_early_stops
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])
    records = ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl'))
    seen.append([(r.trial, r.genotype_id, r.val_bpb) for r in records])
  n = len(seen[-1]) + 3
  proc = subprocess.run(_command(workdir, n) + no_early_stops, cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  final = [(r.trial, r.genotype_id, r.val_bpb)
           for r in ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl'))]
  assert [t for t, _, _ in final] == list(range(1, n + 1))
  for before in seen:  # every trial recorded before a kill is still there, unchanged
    assert final[:len(before)] == before
  rows = ledger_lib.read_tsv(os.path.join(workdir, 'results.tsv'))
  assert [int(r['trial']) for r in rows] == list(range(1, n + 1))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'))
  assert ckpt.steps()[-1] == n


@pytest.mark.slow
def test_sigterm_exits_zero_within_the_grace_period_and_resumes(tmp_path):
  workdir = str(tmp_path / 'w')
  cmd = _command(workdir, 6) + ['--config.trial.budget_seconds=20']
  proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:  # wait until training of the first trial is under way
    if 'data: pystdlib' in line:
      break
  time.sleep(8.0)
  sent = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode == 0
  assert time.monotonic() - sent < 30.0  # checkpoint.grace_seconds
  assert ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl')) == []
  done = subprocess.run(_command(workdir, 3), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert [r.trial for r in ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl'))] \
      == [1, 2, 3]


@pytest.mark.slow
def test_a_new_search_can_start_from_an_earlier_search_policy(tmp_path):
  first = str(tmp_path / 'first')
  # Two PPO updates: the policy moved from its init.
  loop.Search.open(_config(10), first, run_trial=_fake_run).run()
  learned = checkpointing.Checkpointer(os.path.join(first, 'checkpoints'))
  _, arrays, _ = learned.restore(
      {'agent': loop.Search.open(_config(10), str(tmp_path / 'probe')).agent.state_dict()[0]})

  config = _config(10)
  config.agent.init_from = first
  started = loop.Search.open(config, str(tmp_path / 'second')).agent.state_dict()[0]['params']
  fresh = loop.Search.open(_config(10), str(tmp_path / 'third')).agent.state_dict()[0]['params']
  same = jax.tree_util.tree_map(np.array_equal, started, arrays['agent']['params'])
  assert all(jax.tree_util.tree_leaves(same))
  differs = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), started, fresh)
  assert any(jax.tree_util.tree_leaves(differs))
  # An agent without a policy ignores init_from, which by default names the shipped
  # policy: `--config.agent.kind=random` alone must start a search.
  config.agent.kind = 'random'
  assert loop.Search.open(config, str(tmp_path / 'fourth')).agent.kind == 'random'

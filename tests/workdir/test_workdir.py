"""The workdir: one writer (the lock), reconciliation at start-up, full disks, gs://
workdirs through etils.epath (an in-memory bucket), and the bounded compilation cache."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import fsspec
import pytest
from etils.epath import backend as epath_backend, gpath

from autoresearch.runtime import faults as fault_points
from autoresearch.search import loop
from autoresearch.views import report
from autoresearch.workdir import (checkpointing, io as workdir_io, ledger as ledger_lib,
                                  lock as workdir_lock, reconcile, store as store_lib)
from tests.helpers import faults
from tests.workdir.test_checkpointing import ROOT, _command, _config, _fake_run
from tests.workdir.test_ledger import _record


def _ledger(workdir):
  return ledger_lib.read_records(os.path.join(workdir, 'trials.jsonl'))


def _proposed(workdir):
  return [(r.trial, r.genotype_id, r.val_bpb) for r in _ledger(workdir)]


def _holder_pattern(pid):
  return rf'pid {pid} on host {re.escape(socket.gethostname())}, started \d{{4}}-'


# --- one writer --------------------------------------------------------------------------


def test_a_second_store_is_refused_naming_the_holder_until_the_first_closes(tmp_path):
  workdir = str(tmp_path)
  first = store_lib.Store(workdir, _config(4, 'random'))
  with pytest.raises(workdir_lock.WorkdirLocked, match=_holder_pattern(os.getpid())):
    store_lib.Store(workdir, _config(4, 'random'))
  first.close()
  first.close()   # idempotent
  store_lib.Store(workdir, _config(4, 'random')).close()


def test_the_report_reads_a_workdir_that_a_search_holds(tmp_path):
  workdir = str(tmp_path)
  loop.Search.open(_config(4, 'random'), workdir, run_trial=_fake_run).run()
  held = store_lib.Store(workdir, _config(4, 'random'))
  try:
    figures = report.write_report(workdir)
  finally:
    held.close()
  assert figures['trials'] == 4
  assert (tmp_path / 'report.md').stat().st_size > 0
  assert (tmp_path / 'progress.png').read_bytes()[:4] == b'\x89PNG'


def test_a_search_refused_at_start_up_releases_the_lock(tmp_path):
  workdir = str(tmp_path)
  loop.Search.open(_config(3, 'random'), workdir, run_trial=_fake_run).run()
  with pytest.raises(checkpointing.CheckpointError, match='agent'):
    loop.Search.open(_config(4, 'evolution'), workdir, run_trial=_fake_run).run()
  assert loop.Search.open(_config(4, 'random'), workdir, run_trial=_fake_run).run().trials == 4


# --- reconciliation ----------------------------------------------------------------------


def test_trial_numbers_twice_or_missing_are_refused_naming_the_lines():
  rows = [_record(t) for t in (1, 2, 3, 2, 3, 4)]
  with pytest.raises(reconcile.UnexplainedLedger,
                     match='trial 2 on lines 2, 4; trial 3 on lines 3, 5.*two searches'):
    reconcile.plan(rows, 6, [], [])
  with pytest.raises(reconcile.UnexplainedLedger, match='trials 3, 4 missing'):
    reconcile.plan([_record(t) for t in (1, 2, 5)], 5, [], [])


def test_rows_that_no_checkpoint_accounts_for_are_refused():
  rows = [_record(t) for t in range(1, 6)]
  with pytest.raises(reconcile.UnexplainedLedger, match='lines 4, 5 hold trials newer than '
                     'checkpoint 3:'):
    reconcile.plan(rows, 3, [rows[2]], [])
  # An unreadable checkpoint older than the last row does not account for it.
  with pytest.raises(reconcile.UnexplainedLedger, match='unreadable checkpoint 4'):
    reconcile.plan(rows, 3, [rows[2]], [4])
  with pytest.raises(reconcile.UnexplainedLedger, match='there are none'):
    reconcile.plan(rows[:1], 0, [], [])


def test_rows_of_an_unreadable_newer_checkpoint_are_explained_and_orphaned():
  rows = [_record(t) for t in range(1, 6)]
  plan = reconcile.plan(rows, 3, [rows[2]], [6, 5])
  assert (plan.keep, plan.orphaned, plan.append, plan.explained_by) == (
      rows[:3], rows[3:], [], 5)


def test_rows_the_ledger_lacks_come_from_the_checkpoint_and_must_match_it():
  rows = [_record(t) for t in range(1, 6)]
  plan = reconcile.plan(rows[:3], 5, rows[3:], [])
  assert (plan.keep, plan.orphaned, plan.append) == (rows[:3], [], rows[3:])
  assert reconcile.plan(rows, 5, rows[3:], []).append == []
  other = _record(4, val_bpb=2.7)
  with pytest.raises(reconcile.UnexplainedLedger, match='lines 4 differ'):
    reconcile.plan(rows[:3] + [other], 5, rows[3:], [])
  with pytest.raises(reconcile.UnexplainedLedger, match='trials 3 are lost'):
    reconcile.plan(rows[:2], 5, rows[3:], [])


def _corrupt(step_folder):
  for root, _, files in os.walk(step_folder):
    for name in files:
      with open(os.path.join(root, name), 'w') as f:
        f.write('garbage')


def test_an_unreadable_newest_checkpoint_falls_back_and_its_rows_run_again(tmp_path, caplog):
  workdir = str(tmp_path)
  loop.Search.open(_config(8, 'random'), workdir, run_trial=_fake_run).run()
  before = _proposed(workdir)
  steps = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints')).steps()
  newest, previous = steps[-1], steps[-2]
  assert newest == 8 and previous < 8
  _corrupt(tmp_path / 'checkpoints' / str(newest))
  with caplog.at_level('INFO'):
    loop.Search.open(_config(12, 'random'), workdir, run_trial=_fake_run).run()
  lines = [r.getMessage() for r in caplog.records if 'resumed from checkpoint' in r.getMessage()]
  assert len(lines) == 1, lines
  assert f'resumed from checkpoint {previous} ({previous} trials)' in lines[0]
  assert f'(of unreadable checkpoint {newest}) moved to trials.orphaned.jsonl' in lines[0]
  assert f'unreadable checkpoint {newest} moved to' in lines[0]
  orphaned = ledger_lib.read_records(os.path.join(workdir, 'trials.orphaned.jsonl'))
  assert [(r.trial, r.genotype_id, r.val_bpb) for r in orphaned] == before[previous:]
  final = _proposed(workdir)
  assert [t for t, _, _ in final] == list(range(1, 13))
  assert final[:8] == before   # re-run from the same saved state: the same proposals
  assert (tmp_path / 'checkpoints.unreadable' / str(newest)).is_dir()
  assert checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints')).steps()[-1] == 12


def test_a_ledger_two_searches_wrote_is_refused_and_left_as_it_is(tmp_path):
  workdir = str(tmp_path)
  loop.Search.open(_config(6, 'random'), workdir, run_trial=_fake_run).run()
  jsonl, tsv = tmp_path / 'trials.jsonl', tmp_path / 'results.tsv'
  lines = jsonl.read_text().splitlines(keepends=True)
  jsonl.write_text(''.join(lines + lines[1:4]))   # a second writer's trials 2..4
  saved = jsonl.read_bytes(), tsv.read_bytes()
  with pytest.raises(reconcile.UnexplainedLedger,
                     match='9 rows: trial 2 on lines 2, 7; trial 3 on lines 3, 8; trial 4 on '
                     'lines 4, 9\\).*Nothing was changed'):
    loop.Search.open(_config(8, 'random'), workdir, run_trial=_fake_run).run()
  assert (jsonl.read_bytes(), tsv.read_bytes()) == saved


# --- full disks --------------------------------------------------------------------------


@pytest.mark.parametrize('point, error', ids=['checkpoint', 'ledger'], argvalues=[
    ('mid-checkpoint:4', r'could not save checkpoint (\d+) in .*: No space left on device$'),
    ('ledger-write:4', r'could not write trial 4 to the ledger in .*: No space left on device '
     r'\(checkpoint (\d+) holds it; the next start writes it\)$')])
def test_a_full_disk_stops_the_search_and_the_last_checkpoint_stays(tmp_path, point, error,
                                                                    monkeypatch):
  straight = str(tmp_path / 'straight')
  loop.Search.open(_config(10, 'random'), straight, run_trial=_fake_run).run()
  workdir = str(tmp_path / 'full')
  try:
    with pytest.raises(workdir_io.WorkdirError) as raised:
      monkeypatch.setattr(fault_points, 'point', faults.disk_full_at(point))
      loop.Search.open(_config(10, 'random'), workdir, run_trial=_fake_run).run()
  finally:
    monkeypatch.undo()
    faults.empty_disk()
  named = int(re.search(error, str(raised.value)).group(1))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'))
  step, _, meta = ckpt.restore({'agent': {}})
  assert step == meta['state']['trials'] and ckpt.unreadable == []
  if point.startswith('mid-checkpoint'):   # the failed step is absent, the one before intact
    assert named > step and len(_ledger(workdir)) == step
  else:   # the checkpoint holding trial 4 is complete; the ledger stops before it
    assert named == step >= 4 and len(_ledger(workdir)) == 3
  loop.Search.open(_config(10, 'random'), workdir, run_trial=_fake_run).run()
  assert _proposed(workdir) == _proposed(straight)


# --- gs:// workdirs ----------------------------------------------------------------------


class _MemoryBucket(epath_backend._FileSystemSpecBackend):
  """epath's fsspec backend (what gs:// paths use without TensorFlow) on fsspec's
  in-memory file system: object-store semantics (no append, no rename) with no bucket."""

  def fs(self, path):
    return fsspec.filesystem('memory')


@pytest.fixture
def bucket(monkeypatch, tmp_path):
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', _MemoryBucket())
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))   # the local lock
  monkeypatch.chdir(tmp_path)   # a path mangled into a local one would land here
  memory = fsspec.filesystem('memory')
  memory.store.clear()
  yield memory.store
  memory.store.clear()


def test_a_gs_workdir_holds_the_ledger_best_genotype_and_report(tmp_path, bucket):
  local = str(tmp_path / 'local')
  loop.Search.open(_config(6, 'random'), local, run_trial=_fake_run).run()
  rows = _ledger(local)
  ledger = ledger_lib.Ledger('gs://bucket/run')
  for row in rows:
    ledger.append(row)
  assert ledger.read_records() == rows
  assert [r['trial'] for r in ledger_lib.read_tsv('gs://bucket/run/results.tsv')] == \
      [str(r.trial) for r in rows]
  assert bucket['gs://bucket/run/results.tsv'].getvalue() == \
      (tmp_path / 'local' / 'results.tsv').read_bytes()
  # A torn last line (a write cut short) is dropped on rewrite, as locally.
  jsonl = workdir_io.path('gs://bucket/run', 'trials.jsonl')
  jsonl.write_text(jsonl.read_text() + '{"trial": 7, "genot')
  assert ledger.rewrite(rows) == ['a torn last line dropped']
  workdir_io.write_atomic(workdir_io.path('gs://bucket/run', 'best_genotype.json'), '{"a": 1}')
  assert json.loads(bucket['gs://bucket/run/best_genotype.json'].getvalue()) == {'a': 1}
  assert report.write_report('gs://bucket/run')['trials'] == 6
  assert bucket['gs://bucket/run/progress.png'].getvalue()[:4] == b'\x89PNG'
  assert b'# ' in bucket['gs://bucket/run/report.md'].getvalue()
  assert not (tmp_path / 'gs:').exists()   # no gs:// path mangled into a local one
  assert workdir_io.compilation_cache_dir('gs://bucket/run').startswith(str(tmp_path / 'cache'))


def test_the_lock_of_a_gs_workdir_is_local_and_an_object_naming_the_holder(bucket, caplog):
  lock = workdir_lock.acquire('gs://bucket/run')
  holder = json.loads(bucket['gs://bucket/run/search.lock'].getvalue())
  assert (holder['pid'], holder['host']) == (os.getpid(), socket.gethostname())
  with pytest.raises(workdir_lock.WorkdirLocked, match=_holder_pattern(os.getpid())):
    workdir_lock.acquire('gs://bucket/run')   # the same host: the local lock refuses
  lock.release()
  assert 'gs://bucket/run/search.lock' not in bucket
  # Another host's object (a preempted VM's, or a live search elsewhere): a warning
  # naming it, and the search starts.
  stale = {'pid': 4242, 'host': 'tpu-vm-7', 'started': '2026-01-02T03:04:05+00:00'}
  workdir_io.path('gs://bucket/run', 'search.lock').write_text(json.dumps(stale))
  with caplog.at_level('WARNING'):
    lock = workdir_lock.acquire('gs://bucket/run')
  assert any('pid 4242 on host tpu-vm-7, started 2026-01-02T03:04:05+00:00' in r.getMessage()
             for r in caplog.records)
  lock.release()


# --- real processes ----------------------------------------------------------------------


def _wait_for_lock(workdir, pid, proc, seconds=120):
  lock = os.path.join(workdir, 'search.lock')
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    assert proc.poll() is None, f'search {pid} ended with {proc.returncode}'
    try:
      with open(lock) as f:
        if json.load(f)['pid'] == pid:
          return
    except (OSError, ValueError):
      pass
    time.sleep(0.2)
  raise AssertionError(f'no lock taken by {pid} in {seconds} s')


@pytest.mark.slow
def test_a_second_search_refuses_at_once_and_after_kill_9_a_new_one_starts(tmp_path):
  workdir = str(tmp_path / 'w')
  slow_trials = ['--config.trial.budget_seconds=1', '--config.evaluator.enabled=False']
  first = subprocess.Popen(_command(workdir, 6) + slow_trials, cwd=ROOT, text=True,
                           stderr=open(tmp_path / 'first.err', 'w'), stdout=subprocess.DEVNULL)
  try:
    _wait_for_lock(workdir, first.pid, first)
    started = time.monotonic()
    second = subprocess.run(_command(workdir, 6), cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 1, second.stderr[-2000:]
    assert time.monotonic() - started < 30   # the interpreter and JAX's import, no trial
    last = second.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf'autoresearch: the workdir {re.escape(workdir)} is in use by another '
                        rf'search: {_holder_pattern(first.pid)}.*', last), last
    assert first.wait(timeout=300) == 0, (tmp_path / 'first.err').read_text()[-2000:]
  finally:
    if first.poll() is None:
      first.kill()
  assert [r.trial for r in _ledger(workdir)] == list(range(1, 7))
  assert [int(r['trial']) for r in ledger_lib.read_tsv(os.path.join(workdir, 'results.tsv'))] \
      == list(range(1, 7))

  # kill -9 while a trial trains: the kernel drops the lock, and a new search starts at once.
  killed = subprocess.Popen(_command(workdir, 12) + slow_trials, cwd=ROOT,
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
  _wait_for_lock(workdir, killed.pid, killed)
  time.sleep(3.0)
  killed.send_signal(signal.SIGKILL)
  killed.wait(timeout=60)
  recorded = _proposed(workdir)
  again = subprocess.run(_command(workdir, 9) + slow_trials, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'in use' not in again.stderr
  final = _proposed(workdir)
  assert [t for t, _, _ in final] == list(range(1, 10)) and final[:len(recorded)] == recorded


@pytest.mark.slow
def test_a_really_full_disk_stops_the_search_with_one_line(tmp_path):
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(disk)],
                    capture_output=True).returncode != 0:
    pytest.skip('mounting a small tmpfs needs root')
  try:
    _really_full_disk(str(disk))
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=True)


def _really_full_disk(disk):
  workdir = os.path.join(disk, 'w')
  run = lambda n, *extra: subprocess.run(  # noqa: E731
      _command(workdir, n) + ['--config.compilation_cache_mb=0', *extra], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert run(3).returncode == 0
  with open(os.path.join(disk, 'filler'), 'wb') as f:   # all the space but ~150 KB
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    f.write(b'\0' * max(0, free - 150 * 1024))
  full = run(40)
  assert full.returncode == 1
  # Log lines on a terminal are 'HH:MM:SS message', warnings 'HH:MM:SS warning: ...'.
  info = re.compile(r'\d\d:\d\d:\d\d (?!warning: |error: )')
  said = [line for line in full.stderr.splitlines() if not info.match(line)]
  assert said and re.fullmatch(
      r'autoresearch: could not .*: No space left on device.*', said[-1]), full.stderr[-3000:]
  # The one line that stops it comes last. Before it, a view (the live report or the
  # TensorBoard file) may have found the disk full too, depending on when space ran out:
  # each says so in one warning and the search went on; nothing else, no traceback.
  view_warning = re.compile(r'\d\d:\d\d:\d\d warning: (the report|TensorBoard) '
                            r'was not written \(the search goes on\): .*No space left on device')
  assert all(view_warning.fullmatch(line) for line in said[:-1]), full.stderr[-3000:]
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'))
  step, _, meta = ckpt.restore({'agent': {}})
  assert ckpt.unreadable == [] and step == meta['state']['trials'] >= 3
  assert 'Traceback' in run(40, '--verbosity=1').stderr   # the traceback, when asked for
  os.remove(os.path.join(disk, 'filler'))
  n = len(_ledger(workdir)) + 3
  assert run(n).returncode == 0
  assert [r.trial for r in _ledger(workdir)] == list(range(1, n + 1))

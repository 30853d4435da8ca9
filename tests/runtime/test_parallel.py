"""Data-parallel and FSDP trials over 4 fake CPU devices, and a trial over two processes
joined by jax.distributed: the same losses as on one device.

The trials run in subprocesses (tests/parallel_trial_script.py): this process already
initialised JAX with one device.
"""

import json
import os
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from autoresearch.runtime import distributed
from configs import default
from tests.helpers import ROOT


SCRIPT = os.path.join(ROOT, 'tests', 'helpers', 'parallel_trial_script.py')

# Data parallelism changes only the order in which float32 sums are taken (per-device
# partial means, then the all-reduce): a few ulps (1.2e-7) per step, carried through the
# 8 steps of Adam. Measured: 2e-7 relative at most.
RTOL = 1e-5


def _env(fake_devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={fake_devices}')
  env.pop('JAX_COORDINATOR_ADDRESS', None)
  return env


def _last_json(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def on_devices():
  proc = subprocess.run([sys.executable, SCRIPT, 'devices'], env=_env(4), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _last_json(proc.stdout)


def _assert_same_run(run, reference, steps=8):
  assert run['status'] == 'ok', run['reason']
  assert run['steps'] == reference['steps'] == len(run['losses']) == steps
  np.testing.assert_allclose(run['losses'], reference['losses'], rtol=RTOL)
  assert run['val_bpb'] == pytest.approx(reference['val_bpb'], rel=RTOL)


@pytest.mark.slow
def test_data_parallel_trial_matches_one_device(on_devices):
  assert on_devices['one']['status'] == 'ok', on_devices['one']['reason']
  _assert_same_run(on_devices['four'], on_devices['one'])


@pytest.mark.slow   # the 4-device subprocess: about 45 s
def test_fsdp_trial_matches_one_device(on_devices):
  _assert_same_run(on_devices['four_fsdp'], on_devices['one'])


@pytest.mark.slow   # the 4-device subprocess
def test_micro_batches_split_over_devices(on_devices):
  _assert_same_run(on_devices['one_micro'], on_devices['one'])
  _assert_same_run(on_devices['four_micro'], on_devices['one'])


@pytest.mark.slow   # the 4-device subprocess
def test_flops_clock_trial_ends_at_its_budget(on_devices):
  # No step cap: the budget (600 FLOPs-clock seconds) holds exactly 6 steps.
  run = on_devices['four_flops']
  assert run['status'] == 'ok' and run['clock'] == 'flops', run['reason']
  assert run['steps'] == len(run['losses']) == 6
  assert run['train_seconds'] == pytest.approx(600.0)


@pytest.mark.slow   # the 4-device subprocess
def test_batch_not_divisible_by_devices_is_a_crash(on_devices):
  run = on_devices['indivisible']
  assert run['status'] == 'crash' and run['steps'] == 0
  assert run['reason'] == 'invalid genotype: batch_size=8 is not divisible by 3 devices'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_proposals_and_train_as_one(on_devices):
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, SCRIPT, 'process', str(i), '2', str(port)],
                            env=_env(2), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      stdout, stderr = proc.communicate(timeout=300)
      assert proc.returncode == 0, stderr[-3000:]
      outputs.append(_last_json(stdout))
  finally:
    for proc in procs:
      proc.kill()
  leader, follower = outputs
  assert [o['process_index'] for o in outputs] == [0, 1]
  assert leader['device_count'] == 4 and leader['local_device_count'] == 2
  # Both trials reached process 1 through broadcast_json, and both processes ran the
  # same steps to the same losses: each loss is one all-reduced value, read on each.
  for mine, theirs in zip(leader['trials'], follower['trials']):
    if mine['clock'] == 'wall':  # each process's own seconds; the FLOPs clock's agree
      mine, theirs = (dict(t, train_seconds=None) for t in (mine, theirs))
    assert mine == theirs
  first, second, third = leader['trials']
  # The 4 devices of two processes train exactly as the 4 devices of one did: every
  # process samples the same global batch and feeds its own devices' rows.
  _assert_same_run(first, on_devices['four'])
  assert second['genotype']['d_model'] == 64
  # Process 0's stop of the second trial reached process 1 whole; process 1's own
  # earlier stop did not count. The plan is shared every 4 steps: step 1 alone (no
  # step duration known yet), an empty plan while it is read, then steps 2-5; step 3's
  # reading stops process 0, and the sync after step 5's dispatch ends the trial.
  assert (second['status'], second['reason'], second['predicted_bpb']) == (
      'aborted', 'leader stops', 3.0)
  assert second['steps'] == 5 and len(second['losses']) == 4
  # Under the FLOPs clock the budget ends the trial, on every process at the same step,
  # as on the 4 devices of one process.
  _assert_same_run(third, on_devices['four_flops'], steps=6)
  assert third['train_seconds'] == pytest.approx(600.0)


def test_single_process_needs_no_distributed_setup(monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  config = default.get_config()
  assert distributed.settings(config) is None
  distributed.initialize(config)  # a no-op
  assert distributed.is_leader()
  assert distributed.broadcast_json({'a': [1, 2]}) == {'a': [1, 2]}


def test_distributed_settings_from_config_environment_and_auto(monkeypatch):
  config = default.get_config()
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
  assert distributed.settings(config) == {'coordinator_address': '10.0.0.1:1234',
                                          'num_processes': 4}
  config.distributed.process_id = 2
  config.distributed.num_processes = 8
  assert distributed.settings(config) == {'coordinator_address': '10.0.0.1:1234',
                                          'num_processes': 8, 'process_id': 2}
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES'):
    monkeypatch.delenv(name)
  auto = ml_collections.ConfigDict(dict(distributed=dict(
      coordinator_address='', num_processes=0, process_id=-1, auto=True)))
  assert distributed.settings(auto) == {}  # jax.distributed.initialize() detects the rest

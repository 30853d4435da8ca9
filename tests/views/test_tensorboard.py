"""TensorBoard scalars per trial: the event files hold what the ledger holds."""

import dataclasses
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

from autoresearch.search import loop
from autoresearch.views import tensorboard
from autoresearch.workdir import ledger as ledger_lib
from tests.helpers import ROOT


pytest.importorskip('tensorboardX')
from tensorboardX.proto import event_pb2  # noqa: E402

from tests.views.test_outputs import _config, _gain_run  # noqa: E402


def _events(logdir):
  """(step, tag, value) of every scalar in the event files of `logdir`, in file order.
  The TFRecord framing: length (8 bytes), its CRC (4), the Event proto, its CRC (4)."""
  out = []
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (length,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 12 + length + 4
      out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return out


def _by_tag(events, tag):
  return {step: value for step, t, value in events if t == tag}


def test_a_search_writes_one_point_per_trial_as_in_the_ledger(tmp_path):
  config = _config(max_trials=6)
  config.output.tensorboard = True
  loop.Search.open(config, str(tmp_path), run_trial=_gain_run).run()
  rows = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  events = _events(tmp_path / tensorboard.SUBDIR)
  trials = list(range(1, 7))
  assert sorted(_by_tag(events, 'trial/val_bpb')) == trials
  for tag, field in (('trial/val_bpb', 'val_bpb'), ('search/best_bpb', 'best_bpb'),
                     ('search/sigma', 'sigma'), ('trial/outcome_bpb', 'outcome_bpb')):
    np.testing.assert_allclose([_by_tag(events, tag)[t] for t in trials],
                               [getattr(r, field) for r in rows], rtol=1e-6)
  assert _by_tag(events, 'trial/status') == {
      r.trial: tensorboard.STATUS_CODES[r.status] for r in rows}
  # The baseline rows have no reward; every agent row has one.
  assert sorted(_by_tag(events, 'trial/reward')) == [r.trial for r in rows if not r.is_baseline]


def test_scalars_of_an_aborted_row_with_predictions_and_an_agent_update(tmp_path):
  loop.Search.open(_config(max_trials=3), str(tmp_path), run_trial=_gain_run).run()
  row = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))[-1]
  aborted = dataclasses.replace(
      row, status='aborted', val_bpb=None, predicted_bpb=3.4, progress_at_stop=0.4,
      predictions=[[0.2, 3.6, 0.3, 0.01], [0.4, 3.4, 0.2, 0.0]],
      agent_metrics={'entropy': np.float32(2.5), 'approx_kl': 0.01, 'explained_variance': math.nan})
  values = tensorboard.scalars(aborted)
  assert 'trial/val_bpb' not in values and values['trial/outcome_bpb'] == 3.4
  assert values['trial/status'] == -1 and values['evaluator/progress_at_stop'] == 0.4
  assert (values['evaluator/predicted_bpb'], values['evaluator/predicted_std']) == (3.4, 0.2)
  assert 'evaluator/error_bpb' not in values      # no val_bpb to compare with
  assert values['ppo/entropy'] == 2.5 and values['ppo/approx_kl'] == 0.01
  assert 'ppo/explained_variance' not in values   # NaN is left out, not written
  trained = dataclasses.replace(row, predictions=[[0.5, 3.1, 0.1, 0.2]])
  assert tensorboard.scalars(trained)['evaluator/error_bpb'] == pytest.approx(3.1 - row.val_bpb)
  assert 'evaluator/progress_at_stop' not in tensorboard.scalars(trained)


def test_a_resumed_search_appends_from_its_next_trial(tmp_path):
  config = _config(max_trials=4)
  config.output.tensorboard = True
  loop.Search.open(config, str(tmp_path), run_trial=_gain_run).run()
  config.search.max_trials = 6
  loop.Search.open(config, str(tmp_path), run_trial=_gain_run).run()  # often within the same second
  assert len(list((tmp_path / tensorboard.SUBDIR).glob('events.out.tfevents.*'))) == 2
  steps = [step for step, tag, _ in _events(tmp_path / tensorboard.SUBDIR)
           if tag == 'trial/val_bpb']
  assert steps == [1, 2, 3, 4, 5, 6]


def test_no_writer_for_a_workdir_that_is_not_local():
  assert tensorboard.open_writer('gs://bucket/run', first_trial=1) is None


_FULL_DISK_AT_CLOSE = '''
import errno, sys
from autoresearch.views import tensorboard
writer = tensorboard.ScalarWriter(sys.argv[1], 1)
writer.writer.add_scalar('x', 1.0, 1)
(file_writer,) = writer.writer.all_writers.values()
def full(*args, **kwargs):
  raise OSError(errno.ENOSPC, 'No space left on device')
file_writer.event_writer._ev_writer._py_recordio_writer.flush = full   # the disk fills
try:
  writer.close()
except OSError as e:
  print('close:', e)
'''


def test_a_full_disk_at_close_raises_once_and_leaves_no_traceback_at_exit(tmp_path):
  root = ROOT
  proc = subprocess.run([sys.executable, '-c', _FULL_DISK_AT_CLOSE, str(tmp_path)], cwd=root,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == 'close: [Errno 28] No space left on device'
  assert 'Traceback' not in proc.stderr and 'Exception' not in proc.stderr, proc.stderr

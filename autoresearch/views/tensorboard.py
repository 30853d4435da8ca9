"""TensorBoard scalars of a search, one point per trial: `tensorboard --logdir WORKDIR`.

    writer = tensorboard.open_writer(workdir, first_trial)   # None: tensorboardX missing
    writer.write(rows); writer.close()

Written through tensorboardX (no TensorFlow needed) into `WORKDIR/tensorboard/`, the x
axis being the trial number. The tags:

- `trial/val_bpb`, `trial/outcome_bpb` (what the search judged the trial by: the two-run
  mean of a re-run pair, the prediction of an aborted trial), `trial/status`
  (`STATUS_CODES`: higher is better), `trial/reward`, `trial/train_seconds`,
  `trial/total_seconds`, `trial/mfu_percent`;
- `search/best_bpb`, `search/sigma` (after the trial);
- `evaluator/predicted_bpb`, `evaluator/predicted_std` (its last prediction of the
  trial), `evaluator/error_bpb` (that prediction minus the val_bpb, for a trial trained to
  the end), `evaluator/progress_at_stop`;
- `ppo/<name>` on the trial that triggered an agent update (entropy, approx_kl,
  clip_fraction, explained_variance, value_loss, ...).

The files are a view: the ledger is the record. A resumed search starts its writer with
`purge_step` at its first new trial, so TensorBoard drops points a killed run wrote past
the checkpoint. Only a local workdir gets them (tensorboardX's bucket support needs
clients this project does not install).
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
from typing import Iterable, Optional

from absl import logging

from autoresearch.workdir import io as workdir_io
from autoresearch.workdir.records import TrialRecord


STATUS_CODES = {'keep': 1, 'discard': 0, 'aborted': -1, 'crash': -2}
SUBDIR = 'tensorboard'


def available() -> bool:
  """Whether tensorboardX can be imported."""
  return importlib.util.find_spec('tensorboardX') is not None


def scalars(row: TrialRecord) -> dict[str, float]:
  """The scalars of one ledger row (tag -> value); missing or non-finite values are left
  out rather than written as NaN."""
  values = {
      'trial/val_bpb': row.val_bpb, 'trial/outcome_bpb': row.outcome_bpb,
      'trial/status': STATUS_CODES[row.status], 'trial/reward': row.reward,
      'trial/train_seconds': row.train_seconds, 'trial/total_seconds': row.total_seconds,
      'trial/mfu_percent': row.mfu_percent,
      'search/best_bpb': row.best_bpb, 'search/sigma': row.sigma,
      'evaluator/progress_at_stop': row.progress_at_stop if row.status == 'aborted' else None,
  }
  if row.predictions:
    _, mean, std = row.predictions[-1][:3]
    values['evaluator/predicted_bpb'], values['evaluator/predicted_std'] = mean, std
    if row.status in ('keep', 'discard') and row.val_bpb is not None:
      values['evaluator/error_bpb'] = mean - row.val_bpb
  for name, value in row.agent_metrics.items():
    values[f'ppo/{name}'] = value
  # numbers.Real: NumPy's scalars too (an agent's metrics may be float32).
  return {tag: float(v) for tag, v in values.items()
          if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


class ScalarWriter:
  """Appends each row's `scalars` at its trial number and flushes, so TensorBoard shows
  a trial as soon as it is in the ledger."""

  def __init__(self, logdir: str, first_trial: int):
    import tensorboardX  # optional: only imported when installed

    # The file name has the start time in whole seconds: a search resumed within the
    # same second would overwrite the last one's file without the first trial in it.
    self.writer = tensorboardX.SummaryWriter(logdir, purge_step=first_trial,
                                             filename_suffix=f'.trial{first_trial}')

  def write(self, rows: Iterable[TrialRecord]) -> None:
    """Each row's scalars at its trial number, flushed to disk."""
    for row in rows:
      for tag, value in scalars(row).items():
        self.writer.add_scalar(tag, value, global_step=row.trial)
    self.writer.flush()

  def close(self) -> None:
    """Flushes and closes the event file. When the last flush fails (a full disk), the
    event writers are shut down all the same and the error raised: left open,
    tensorboardX's exit hook flushed again and printed a traceback after the search's
    one-line stop."""
    writers = list((self.writer.all_writers or {}).values())
    try:
      self.writer.close()
    except OSError:
      for file_writer in writers:
        _shut_down(file_writer.event_writer)
      raise


def _shut_down(events) -> None:
  """Stops a tensorboardX 2.6 EventFileWriter whose final flush failed, dropping what it
  still held: its worker thread ends, and its close() (the exit hook's) does nothing."""
  if getattr(events, '_closed', True):
    return
  events._closed = True   # what close() and add_event() check
  try:
    events._worker.stop()   # the thread returns at the shutdown signal
  except Exception:  # pylint: disable=broad-except  # a dead worker or a closed queue
    pass


def open_writer(workdir: str, first_trial: int) -> Optional[ScalarWriter]:
  """A writer into `workdir/tensorboard`, or None (logged once) when tensorboardX is not
  installed or the workdir is not local."""
  if not available():
    logging.info('no TensorBoard scalars: tensorboardX is not installed')
    return None
  if not workdir_io.is_local(workdir):
    logging.info('no TensorBoard scalars: %s is not a local folder', workdir)
    return None
  return ScalarWriter(os.fspath(workdir_io.path(workdir, SUBDIR)), first_trial)

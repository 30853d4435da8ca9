"""What each recorded step of a search leaves for a person, after the checkpoint and the
ledger hold it:

- on stdout, each trial's summary line and, when an agent's edit becomes the best, a
  short block saying what changed and by how many σ (`console.py`);
- TensorBoard scalars per trial (`tensorboard.py`, with `config.output.tensorboard` and
  tensorboardX installed);
- `progress.png` and `report.md` refreshed (`report.py`, with `config.output.live_report`).

The report re-reads the whole ledger and draws a figure (about 0.3 s at 40 trials on
2 cores), so a refresh waits until the time since the last one is at least its own
cost / `report_overhead`; against trials of a minute that is every trial, and `close()`
draws the last state whatever the wait. None of these views can stop the search: a
failure is a warning (once per distinct error), and the search goes on.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

from absl import logging

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import ConfigError
from autoresearch.views import console, report, tensorboard
from autoresearch.workdir.records import TrialRecord


def check_output_config(output) -> None:
  """Raises ConfigError naming a `config.output` field whose value cannot work."""
  if not 0.0 < output.report_overhead <= 1.0:
    raise ConfigError(f'output.report_overhead={output.report_overhead}: a fraction in (0, 1]')


class StepOutputs:
  """The views of one search (see the module docstring). `writes_files`: False for a
  search held in memory, which gets the lines only. `clock` (seconds) paces the report's
  refresh; tests pass a fake one."""

  def __init__(self, output_config, workdir: str, writes_files: bool, first_trial: int,
               best_bpb: float, baseline_genotype: dict,
               clock: Callable[[], float] = time.perf_counter):
    self.workdir, self.best_bpb, self.clock = workdir, best_bpb, clock
    self.baseline_genotype = baseline_genotype
    self.live_report = writes_files and output_config.live_report
    self.best_block = output_config.best_block
    self.overhead = output_config.report_overhead
    self.tensorboard = None
    if writes_files and output_config.tensorboard:
      self.tensorboard = self._guard('TensorBoard', tensorboard.open_writer, workdir,
                                     first_trial)
    self.report_seconds, self.last_report = 0.0, -math.inf
    self.pending = False      # rows recorded since the last refresh
    self.errors: set[str] = set()

  def after_step(self, rows: list[TrialRecord], baseline_bpb: float) -> None:
    """The lines of `rows` (a step's ledger rows, in order), then the scalars and the
    refreshed report. `baseline_bpb`: the baseline's mean val_bpb."""
    for row in rows:
      print(console.summary_line(row), flush=True)
      if (self.best_block and row.status == 'keep' and not row.is_baseline
          and row.rerun_of is None):
        diff = genotype_lib.describe_diff(row.genotype, self.baseline_genotype)
        print(console.new_best_block(row, self.best_bpb, baseline_bpb, diff), flush=True)
      self.best_bpb = row.best_bpb
    if self.tensorboard is not None:
      self._guard('TensorBoard', self.tensorboard.write, rows)
    self.pending = True
    if self.clock() - self.last_report >= self.report_seconds / self.overhead:
      self.refresh_report()

  def refresh_report(self) -> None:
    """progress.png and report.md from the ledger now (if live_report and anything new)."""
    if not (self.live_report and self.pending):
      return
    start = self.clock()
    self._guard('the report', report.write_report, self.workdir, quiet=True)
    self.last_report = self.clock()
    self.report_seconds, self.pending = self.last_report - start, False

  def close(self) -> None:
    """The last refresh and the TensorBoard files closed."""
    self.refresh_report()
    if self.tensorboard is not None:
      self._guard('TensorBoard', self.tensorboard.close)

  def _guard(self, what: str, fn, *args, **kwargs) -> Optional[object]:
    """fn(*args, **kwargs), or None with a warning (once per distinct error)."""
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except  # a view never stops the search
      message = f'{type(e).__name__}: {e}'
      if message not in self.errors:
        self.errors.add(message)
        logging.warning('%s was not written (the search goes on): %s', what, message)
      return None

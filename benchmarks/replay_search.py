"""One recorded search (a trials.jsonl) replayed trial by trial under a stopping method,
as if online: the search's keep rule, calibration and costs (evaluator_replay.py's
docstring says how each is replayed)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np

from autoresearch.search import keep_rule
from autoresearch.workdir import ledger
from autoresearch.workdir.records import TrialRecord
from benchmarks.replay_methods import NeverStop
from benchmarks.replay_metrics import Metrics


# --- the recorded searches --------------------------------------------------------------

@dataclasses.dataclass
class RecordedSearch:
  """One trials.jsonl: its rows, budget, baseline and noise."""
  path: str
  records: list
  budget_seconds: float
  baseline: list        # the baseline rows that completed
  baseline_bpb: float   # their mean (inf without any)
  min_sigma: float      # bits/byte: the floor of the pooled σ

  @classmethod
  def load(cls, path: str, budget_seconds: float, min_sigma: float) -> 'RecordedSearch':
    records = ledger.read_records(path)   # skips a torn last line (a search still writing)
    if not records:
      raise ValueError(f'{path}: no complete trial rows')
    baseline = [r for r in records if r.is_baseline and r.scored]
    bpbs = [r.val_bpb for r in baseline]
    return cls(path, records, budget_seconds or records[0].budget_seconds, baseline,
               float(np.mean(bpbs)) if bpbs else math.inf, min_sigma)

  @property
  def baseline_noise(self) -> keep_rule.Noise:
    """σ of the baseline's runs alone: the noise at the start of the replay."""
    return keep_rule.pooled([[r.val_bpb for r in self.baseline]], self.min_sigma)

  @property
  def sigma(self) -> float:
    return self.baseline_noise.sigma


def stop_cost(record: TrialRecord, stop_seconds: float) -> float:
  """Wall seconds of a trial stopped after `stop_seconds` of training on its clock (see
  the docstring). Under the flops clock the machine's training seconds differ from the
  clock's: the stop saves the same fraction of the machine's seconds."""
  total, train = record.total_seconds, record.train_seconds
  wall_train = record.wall_train_seconds or train
  setup = total - wall_train - record.eval_seconds
  spent = stop_seconds * wall_train / train if train > 0 else stop_seconds
  return min(max(setup, 0.0) + spent, total) if total else spent


# --- the replay ----------------------------------------------------------------------------

def winners(search: RecordedSearch, keep_alpha: float) -> set:
  """Trial numbers of the searched trials whose recorded val_bpb beat the best of the
  unstopped search when it ran them: the false-kill denominator of every method."""
  found = set()
  replay_search(NeverStop(), search, keep_alpha, found_winners=found)
  return found


def replay_search(method, search: RecordedSearch, keep_alpha: float,
                  winning: Optional[set] = None, found_winners: Optional[set] = None) -> Metrics:
  """Runs `method` over one recorded search in order (see the module docstring).
  `winning`: the trials counted as winners (default: `winners(search)`);
  `found_winners`: a set that gets the trials that beat this replay's own best."""
  if winning is None and found_winners is None:
    winning = winners(search, keep_alpha)
  return _Replay(method, search, keep_alpha, winning, found_winners).run()


class _Replay:
  """One replay of `method` over a recorded search: the best, its runs and the pooled
  noise as the search has them after each trial, and the metrics so far."""

  def __init__(self, method, search: RecordedSearch, keep_alpha: float,
               winning: Optional[set], found_winners: Optional[set]):
    self.method, self.search, self.keep_alpha = method, search, keep_alpha
    self.winning, self.found_winners = winning, found_winners
    self.metrics = Metrics()
    self.best, self.best_runs = search.baseline_bpb, len(search.baseline)
    self.repeats = [[r.val_bpb for r in search.baseline]]
    self.noise = search.baseline_noise

  def timed(self, fn, *args):
    """`fn(*args)`, its host seconds counted as the method's own."""
    start = time.perf_counter()
    out = fn(*args)
    self.metrics.method_seconds += time.perf_counter() - start
    return out

  def run(self) -> Metrics:
    """Replays the records in order: a baseline row as it ran, each searched trial with
    its recorded re-run (the row after it, if any)."""
    metrics, records = self.metrics, self.search.records
    self.timed(self.method.start, self.search)
    i = 0
    while i < len(records):
      record, i = records[i], i + 1
      metrics.seconds_without += record.total_seconds
      if record.is_baseline:
        metrics.seconds_with += record.total_seconds   # in the best and the calibration already
        continue
      rerun = records[i] if i < len(records) and records[i].rerun_of == record.trial else None
      if rerun is not None:
        i += 1
        metrics.seconds_without += rerun.total_seconds
      self.searched(record, rerun)
    return metrics

  def searched(self, record: TrialRecord, rerun: Optional[TrialRecord]) -> None:
    """Watches a searched trial; one that ran to the end with a score goes to the keep
    rule (a stopped trial is never re-run nor kept)."""
    self.metrics.searched += 1
    outcome = self.timed(self.method.watch, record, self.best)
    self.timed(self.method.finish, record, outcome)
    ran_on = outcome.stop_seconds is None
    self.metrics.seconds_with += (record.total_seconds if ran_on
                                  else stop_cost(record, outcome.stop_seconds))
    self._count(record, outcome, ran_on)
    if ran_on and record.scored:
      self._keep(record, rerun)

  def _count(self, record: TrialRecord, outcome, ran_on: bool) -> None:
    """Adds a watched trial to the metrics: winner, stop, predictions and z-scores."""
    metrics = self.metrics
    if self.found_winners is not None and record.scored and record.val_bpb < self.best:
      self.found_winners.add(record.trial)
    beats_best = self.winning is not None and record.trial in self.winning
    metrics.aborted += not ran_on
    metrics.better += beats_best
    metrics.killed_better += beats_best and not ran_on
    if record.scored:
      for point, predicted in outcome.predictions.items():
        metrics.errors[point].append(abs(predicted - record.val_bpb))
      metrics.z_scores.extend(outcome.z_scores)
      if outcome.stop_z is not None:
        metrics.stop_z.append(outcome.stop_z)

  def _keep(self, record: TrialRecord, rerun: Optional[TrialRecord]) -> None:
    """The search's keep rule: a clear gain keeps; one inside the noise band is re-run
    (when the recording has that re-run: else it is discarded, as without ledger room)."""
    metrics = self.metrics
    band = keep_rule.first_run(self.best - record.val_bpb, self.noise, self.best_runs,
                               self.keep_alpha) == 'rerun'
    rerun = rerun if band else None
    if rerun is not None:
      self.timed(self.method.unwatched, rerun)
      metrics.seconds_with += rerun.total_seconds
    second = rerun.val_bpb if rerun is not None and rerun.scored else None
    status, bpb = keep_rule.decide(self.best, self.best_runs, record.val_bpb, second, band,
                                   self.noise, self.keep_alpha)
    if status == 'keep':
      self.best, self.best_runs = bpb, 2 if second is not None else 1
      metrics.new_bests += 1
      self.timed(self.method.new_best, [record] + ([rerun] if rerun is not None else []), bpb)
    if second is not None:   # as the search: a re-run pair joins the pooled σ
      self.repeats.append([record.val_bpb, second])
      self.noise = keep_rule.pooled(self.repeats, self.search.min_sigma)

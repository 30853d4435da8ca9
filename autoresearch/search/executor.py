"""Runs a search's trials: on which devices, how many at once, watched by whom.

    executor = Executor(corpus, trial_config, parallel_trials, progress_bar, stop)
    results = executor.run([Job(genotype, seed, watch, label), ...])

* **Device groups.** With `parallel_trials` = K > 1 the local devices split into K
  equal groups and job i trains on group i, each in its own thread; K = 1 gives every
  trial all devices (of every process).
* **Several processes.** Before each batch of jobs process 0 sends the (genotype, seed)
  pairs to the other processes, which train them with it (`follower.py`); `close()`
  tells them to stop.
* **Watching.** Every loss reading goes to the job's self-evaluator (if any), after the
  live progress line and the preemption check: a signal stops the trial at its next
  step, and `Interrupted` propagates (nothing is recorded for the trial in flight).
* **Injected**: the trial runner (default `runner.run`; a synthetic landscape's
  stand-in for searches on one).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Optional

import jax

from autoresearch.runtime import distributed
from autoresearch.search import signals
from autoresearch.trial import runner
from autoresearch.trial.config import ConfigError, TrialConfig
from autoresearch.trial.results import LossReading, Stop, TrialResult
from autoresearch.views import progress


class Interrupted(Exception):
  """A preemption signal arrived; the trial in flight is dropped."""


@dataclasses.dataclass(frozen=True)
class Job:
  """One trial to run: a genotype, its seed, its watcher, and its name on the terminal."""
  genotype: dict
  seed: int
  watch: Optional[Callable] = None   # evaluator.Evaluator, or None: run to the end
  label: str = 'trial'


def device_groups(parallel_trials: int) -> tuple[int, list]:
  """(K, K groups of devices): the devices split into `parallel_trials` equal groups,
  one trial each. K = 1 is one group of None: the trial takes all devices."""
  if parallel_trials <= 1:
    return 1, [None]
  devices = jax.devices()
  if jax.process_count() > 1:
    raise ConfigError('search.parallel_trials > 1 runs on one host; on several hosts each '
                      'trial is data-parallel over all of them (parallel_trials=1)')
  if len(devices) % parallel_trials:
    raise ConfigError(f'search.parallel_trials={parallel_trials} does not divide the '
                      f'{len(devices)} devices into equal groups')
  size = len(devices) // parallel_trials
  return parallel_trials, [devices[i * size:(i + 1) * size] for i in range(parallel_trials)]


def devices_per_trial(parallel_trials: int) -> int:
  """Devices each trial trains on with `parallel_trials` at once."""
  return len(device_groups(parallel_trials)[1][0] or jax.devices())


class Executor:
  """Trains batches of at most `parallel` jobs (see the module docstring)."""

  def __init__(self, corpus, trial_config: TrialConfig, parallel_trials: int, progress_bar: bool,
               stop: signals.GracefulStop, run_trial: Callable = runner.run):
    self.corpus, self.trial_config, self.stop = corpus, trial_config, stop
    self.run_trial = run_trial
    self.parallel, self.groups = device_groups(parallel_trials)
    self.progress_bar = progress_bar and self.parallel == 1

  @property
  def devices_per_trial(self) -> int:
    return devices_per_trial(self.parallel)

  def run(self, jobs: list[Job]) -> list[TrialResult]:
    """Trains the jobs at once, job i on device group i; raises Interrupted after a
    preemption signal."""
    if jobs and jax.process_count() > 1 and not self.stop.requested:
      distributed.broadcast_json({'jobs': [[job.genotype, job.seed] for job in jobs]})
    if self.parallel == 1:
      return [self._train(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
      futures = [pool.submit(self._train, job, group) for job, group in zip(jobs, self.groups)]
      concurrent.futures.wait(futures)
    return [future.result() for future in futures]  # re-raises Interrupted

  def close(self) -> None:
    """Tells the other processes (if any) that the search is over."""
    if jax.process_count() > 1:
      distributed.broadcast_json({'stop': True})

  def _progress(self, job: Job) -> Optional[progress.ProgressLine]:
    if not self.progress_bar:
      return None
    evaluator_watch = job.watch
    prediction = None
    if evaluator_watch is not None:
      prediction = lambda: (None if evaluator_watch.last_prediction is None else
                            evaluator_watch.last_prediction[1:3])
    return progress.ProgressLine(self.trial_config.budget_seconds, job.genotype['batch_size'] *
                                 job.genotype['seq_len'], job.label, prediction)

  def _train(self, job: Job, devices: Optional[list] = None) -> TrialResult:
    if self.stop.requested:
      raise Interrupted
    cfg = dataclasses.replace(self.trial_config, seed=job.seed)
    bar = self._progress(job)

    def watch(reading: LossReading) -> Optional[Stop]:
      if bar is not None:
        bar(reading)
      if self.stop.requested:
        return Stop('interrupted by a signal', status='interrupted')
      return None if job.watch is None else job.watch(reading)

    try:
      placement = {} if devices is None else {'devices': devices}  # None: all devices
      result = self.run_trial(job.genotype, self.corpus, cfg, watch=watch, **placement)
    finally:
      if bar is not None:
        bar.close()
    if self.stop.requested or result.status == 'interrupted':
      raise Interrupted
    return result

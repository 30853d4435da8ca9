"""The perpetual search: propose an edit of the best recipe, train it, decide, learn.

    loop.run(config, workdir)

1. **Noise.** The baseline is trained `noise_repeats` times with seeds s, s+1, ...; the
   best is their mean. σ is pooled over every group of repeated runs of one genotype
   (the baseline's, then each re-run pair; `keep_rule.pooled`), at least `min_sigma`.
   Every genotype is seeded alike: its k-th run uses seed s+k-1.
2. **Loop** (until `max_trials` ledger rows in total; 0 = forever): the agent proposes
   K edits of the best (K = `parallel_trials`); the executor trains them; re-runs of
   those inside the noise band train next; then, in the order proposed, the keep rule
   (`keep_rule.py`) decides against the best as it stands, the agent is told the
   reward, and the rows are recorded.
3. **Persistence** (`store.py`): after every step the whole state is checkpointed,
   with that step's rows inside it, and only then are the rows appended to the ledger,
   so a kill at any moment loses at most the trial in flight and duplicates none. Then
   come what a person sees (`outputs.py`): the summary lines, a block at each new best,
   TensorBoard scalars, and progress.png and report.md refreshed.
   SIGTERM/SIGINT stop the running trial at its next step; nothing is recorded for it
   (it is re-run after resume, from the same saved state, so it proposes the same edit)
   and the process exits 0 within `checkpoint.grace_seconds`.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import jax
import numpy as np
from absl import logging

from autoresearch.agents import factory
from autoresearch.agents.api import Agent, HistoryEntry, Outcome, Proposal, SearchSpace, SearchView
from autoresearch.agents.ppo import saved_policies
from autoresearch.data import corpora
from autoresearch.early_stop import evaluator
from autoresearch.early_stop.calibration import Calibration, Reference
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.runtime import distributed
from autoresearch.search import baseline_cache, follower, keep_rule, signals
from autoresearch.search.state import (Attempt, Candidate, RoundStart, SearchState,
                                       check_config)
from autoresearch.search.executor import Executor, Interrupted, Job, devices_per_trial
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import runner
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.results import TrialResult
from autoresearch.views import outputs
from autoresearch.workdir import io as workdir_io
from autoresearch.workdir.records import AGENT_BASELINE, TrialRecord
from autoresearch.workdir.store import SearchStore, Store


class Search:
  """One search. Its parts are given: a store (`workdir.store`: the workdir's Store, or
  a MemoryStore that writes nothing), the corpus, the agent, the trial runner and the
  cache of baseline runs. `Search.open(config, workdir)` builds the real ones; a search
  on a synthetic landscape passes its own (synthetic/harness.py)."""

  def __init__(self, config, store: SearchStore, corpus: corpora.Corpus, agent: Agent,
               run_trial: Callable = runner.run,
               baselines: Optional[baseline_cache.BaselineCache] = None):
    check_config(config)
    self.config, self.store, self.corpus, self.agent = config, store, corpus, agent
    self.trial_config = TrialConfig.from_config(config)
    self.stop = signals.GracefulStop(config.checkpoint.grace_seconds,
                                     'stopping the trial in flight; the saved state is complete')
    self.executor = Executor(corpus, self.trial_config, config.search.parallel_trials,
                             config.output.progress_bar, self.stop, run_trial)
    self.space = SearchSpace(self.trial_config.max_params, runner.max_step_flops(
        self.trial_config, self.executor.devices_per_trial))
    self.baselines = baselines if baselines is not None else baseline_cache.BaselineCache(None)
    self.state = SearchState(best_genotype=genotype_lib.from_config(config))
    self.evaluator_config = EvaluatorConfig.from_config(config)
    self.calibration = Calibration.create(self.evaluator_config)
    self.reference: Optional[Reference] = None  # the best's curve features
    self.best_rows: list[TrialRecord] = []   # ledger rows of the best genotype's runs
    logging.info('data: %s, bytes %s', corpus.description, corpus.byte_counts())
    self._restore()
    # What a person sees of each step; an in-memory search gets the lines only.
    self.outputs = outputs.StepOutputs(
        config.output, store.workdir, writes_files=store.persistent,
        first_trial=self.state.trials + 1, best_bpb=self.state.best_bpb,
        baseline_genotype=genotype_lib.from_config(config))

  @classmethod
  def open(cls, config, workdir: str, run_trial: Callable = runner.run) -> 'Search':
    """The search of `workdir` (new, or resumed from its checkpoint) with its real parts:
    the workdir's Store (locked until the search ends), JAX's compilation cache there,
    the corpus and the agent the config names, and the cache of baseline runs (with
    the real trial runner only). `run_trial` stands in for the trial runner in tests.
    Nonsense settings are refused before any file is made."""
    check_config(config)
    trial_config = TrialConfig.from_config(config)
    store = Store(workdir, config)
    try:   # the Store holds the workdir's lock: released here if the rest fails
      runner.enable_compilation_cache(workdir_io.compilation_cache_dir(workdir),
                                      config.compilation_cache_mb)
      corpus = corpora.corpus_from_config(config)
      agent = factory.make(config.agent, config.search.seed, workdir)
      # A stand-in runner's baseline runs are no real search's: they are never kept.
      baselines = baseline_cache.BaselineCache.for_search(
          config, corpus, trial_config, devices_per_trial(config.search.parallel_trials)
      ) if run_trial is runner.run else baseline_cache.BaselineCache(None)
      return cls(config, store, corpus, agent, run_trial, baselines)
    except BaseException:
      store.close()
      raise

  # --- persistence -------------------------------------------------------------------

  def _save(self, rows: list[TrialRecord]) -> None:
    reference = None if self.reference is None else {
        'features': self.reference.features.tolist(), 'bpb': self.reference.bpb}
    meta = {'state': self.state.to_json(), 'calibration': self.calibration.to_dict(),
            'reference': reference}
    self.store.save(self.state.trials, self.agent, meta, rows)

  def _restore(self) -> None:
    meta = self.store.restore(self.agent, trials_of=lambda m: m['state']['trials'])
    if meta is None:
      # An agent without a policy ignores init_from (the default names the shipped one).
      if self.config.agent.init_from not in ('', 'none') and hasattr(self.agent, 'load_policy'):
        saved_policies.init_policy(self.agent, self.config.agent.init_from)
      return
    self.state = SearchState.from_json(meta['state'])
    self.calibration = Calibration.from_dict(meta['calibration'],
                                             self.evaluator_config)
    self.best_rows = self.store.rows_of(genotype_lib.genotype_id(self.state.best_genotype))
    if meta['reference'] is not None:
      # The binned curve (the learned predictor's input) is rebuilt from the best's rows.
      rebuilt = self.calibration.reference(self.best_rows, self.state.best_bpb, self.budget)
      self.reference = Reference(
          np.asarray(meta['reference']['features'], np.float64), meta['reference']['bpb'],
          None if rebuilt is None else rebuilt.bins)
    logging.info('resumed: %d trials, best val_bpb %.6f', self.state.trials,
                 self.state.best_bpb)

  # --- small parts -------------------------------------------------------------------

  @property
  def budget(self) -> float:
    return self.trial_config.budget_seconds

  def _room_left(self) -> int:
    """Ledger rows left before `max_trials` (a large number when there is no limit)."""
    max_trials = self.config.search.max_trials
    return 2**62 if max_trials <= 0 else max(0, max_trials - self.state.trials)

  def view(self) -> SearchView:
    """The search as the agents see it."""
    s = self.state
    history = tuple(HistoryEntry(**entry) for entry in s.history)
    mask = genotype_lib.edit_mask(s.best_genotype, self.space.max_params,
                                  self.space.max_step_flops)
    baseline = float(np.mean(s.baseline_bpbs)) if s.baseline_bpbs else math.nan
    return SearchView(s.best_genotype, s.best_bpb, s.sigma, s.trials,
                      s.since_improvement, history, mask, self.space, baseline)

  def _noise(self) -> keep_rule.Noise:
    return keep_rule.Noise(self.state.sigma, self.state.sigma_dof)

  def _add_repeats(self, genotype: dict, bpbs: list[float]) -> None:
    """Pools `bpbs`, runs of one genotype, into σ."""
    s = self.state
    s.repeats.setdefault(genotype_lib.genotype_id(genotype), []).extend(bpbs)
    noise = keep_rule.pooled(s.repeats.values(), self.config.search.min_sigma)
    s.sigma, s.sigma_dof = noise.sigma, noise.dof

  def _record(self, result: TrialResult, **fields) -> TrialRecord:
    """The next ledger row, from a trial's result and what the search made of it."""
    self.state.trials += 1
    return TrialRecord.from_result(result, trial=self.state.trials, sigma=self.state.sigma,
                                   budget_seconds=self.budget, **fields)

  def _candidate(self, proposal: Proposal) -> Candidate:
    parent = self.state.best_genotype
    if proposal.genotype is None:
      gene = genotype_lib.GENES[proposal.gene].name
      return Candidate(proposal, genotype_lib.apply_edit(parent, proposal.gene, proposal.value),
                       genotype_lib.describe_edit(parent, proposal.gene, proposal.value),
                       genotype_lib.value_index(parent, gene))
    # A whole genotype: described by how it differs from the best.
    return Candidate(proposal, dict(proposal.genotype),
                     genotype_lib.describe_diff(proposal.genotype, parent), -1)

  def _watchers(self, k: int) -> list[Optional[evaluator.Evaluator]]:
    """One self-evaluator per trial of the round (None when off). Built before the
    trials, so their one-off set-up stays off the trials' clocks."""
    if not self.evaluator_config.enabled:
      return [None] * k
    return [evaluator.Evaluator(self.evaluator_config, self.calibration, self.state.best_bpb,
                                keep_margin_bpb=0.0, budget_seconds=self.budget,
                                reference=self.reference) for _ in range(k)]

  def _commit(self, rows: list[TrialRecord]) -> None:
    """Checkpoint and ledger first; then what a person sees of the rows (the summary
    lines, a new best's block, TensorBoard, the refreshed report)."""
    self._save(rows)
    baseline = self.state.baseline_bpbs
    self.outputs.after_step(rows, float(np.mean(baseline)) if baseline else math.nan)

  # --- phases ------------------------------------------------------------------------

  def measure_noise(self) -> None:
    """Trains the baseline `noise_repeats` times (K at a time), reusing the runs a search
    of the same setting kept (`baseline_cache.py`); sets best_bpb and sigma."""
    s, search = self.state, self.config.search
    while len(s.baseline_bpbs) < search.noise_repeats and self._room_left() > 0:
      first = len(s.baseline_bpbs)
      wave = min(self.executor.parallel, search.noise_repeats - first, self._room_left())
      seeds = [self.trial_config.seed + first + i for i in range(wave)]
      results = [self.baselines.get(seed) for seed in seeds]
      reused = [r is not None for r in results]
      fresh = [i for i in range(wave) if not reused[i]]
      trained = self.executor.run([Job(s.best_genotype, seeds[i],
                                       label=f'trial {s.trials + 1 + i}') for i in fresh])
      for i, result in zip(fresh, trained):
        results[i] = result
        self.baselines.put(seeds[i], result)
      rows = []
      for i, result in enumerate(results):
        if result.status != 'ok':
          raise RuntimeError(f'the baseline genotype failed ({result.status}): {result.reason}')
        s.baseline_bpbs.append(result.val_bpb)
        s.best_bpb, s.best_runs = float(np.mean(s.baseline_bpbs)), len(s.baseline_bpbs)
        self._add_repeats(s.best_genotype, [result.val_bpb])
        row = self._record(result, status='keep', agent=AGENT_BASELINE, best_bpb=s.best_bpb,
                           description=f'baseline (noise run {first + i + 1}/'
                           f'{search.noise_repeats}{", reused" if reused[i] else ""})')
        self.calibration.update(row, budget_seconds=self.budget)
        self.best_rows.append(row)
        rows.append(row)
      self.reference = self.calibration.reference(self.best_rows, s.best_bpb, self.budget)
      self._commit(rows)
    self.store.export_best(s.best_genotype)
    logging.info('baseline val_bpb %.6f, sigma %.6f (%d degrees of freedom, floor %.6f)',
                 s.best_bpb, s.sigma, s.sigma_dof, search.min_sigma)

  def _train_round(self, candidates: list[Candidate], watches: list) -> list[Attempt]:
    """The candidates trained, then the re-runs of those inside the noise band (against
    the best the proposals were made against), as the ledger has room for."""
    s, seed = self.state, self.trial_config.seed
    firsts = self.executor.run([
        Job(c.genotype, seed, watch, f'trial {s.trials + 1 + i}')
        for i, (c, watch) in enumerate(zip(candidates, watches))])
    attempts = [Attempt(c, watch, first) for c, watch, first in zip(candidates, watches, firsts)]
    in_band = [a for a in attempts if a.first.status == 'ok' and keep_rule.first_run(
        s.best_bpb - a.first.val_bpb, self._noise(), s.best_runs,
        self.config.search.keep_alpha) == 'rerun']
    room = max(0, self._room_left() - len(candidates))
    rerun, left_out = in_band[:room], in_band[room:]
    number = {id(a): s.trials + 1 + i for i, a in enumerate(attempts)}   # trial of each first run
    seconds = self.executor.run([   # the second run of a genotype: the second seed
        Job(a.candidate.genotype, seed + 1, label=f're-run of trial {number[id(a)]}')
        for a in rerun])
    for attempt, second in zip(rerun, seconds):
      attempt.second = second
    for attempt in left_out:
      attempt.no_room = True
    return attempts

  def _decide(self, attempt: Attempt, start: RoundStart) -> tuple[str, Optional[float]]:
    """(status, the bpb it is judged by) of an attempt: the keep rule against the best
    as it stands now; the state's best, counters and history follow."""
    s, first, candidate = self.state, attempt.first, attempt.candidate
    second = (attempt.second.val_bpb
              if attempt.second is not None and attempt.second.status == 'ok' else None)
    if first.status == 'ok':
      status, bpb = keep_rule.decide(s.best_bpb, s.best_runs, first.val_bpb, second,
                                     attempt.second is not None, self._noise(),
                                     self.config.search.keep_alpha)
    else:
      status, bpb = first.status, (first.predicted_bpb if first.status == 'aborted' else None)
    s.proposals += 1
    if status == 'keep':
      s.best_genotype, s.best_bpb, s.since_improvement = candidate.genotype, float(bpb), 0
      s.best_runs = 2 if second is not None else 1
    else:
      s.since_improvement += 1
    p = candidate.proposal
    s.history.append(HistoryEntry(
        gene=p.gene, old_value=candidate.old_value, new_value=p.value, status=status, bpb=bpb,
        best_before=start.best_bpb, sigma=s.sigma,
        budget_fraction=first.train_seconds / self.budget, became_best=status == 'keep'
    ).to_json())
    s.history = s.history[-self.config.agent.history:]
    return status, bpb

  def _judge(self, attempt: Attempt, start: RoundStart) -> list[TrialRecord]:
    """The rows of one attempt (its run, and its re-run if any): the decision, the
    reward, and the calibration's lesson. An attempt left without the re-run it called
    for says so in its description."""
    status, bpb = self._decide(attempt, start)
    s, candidate, p = self.state, attempt.candidate, attempt.candidate.proposal
    reward = keep_rule.reward(start.best_bpb, bpb, s.sigma, self.config.search.reward_clip)
    paired = attempt.second is not None and attempt.second.status == 'ok'
    rows, first_trial = [], s.trials + 1
    for j, result in enumerate(attempt.results):
      note = candidate.description if j == 0 else \
          f'{candidate.description} (re-run, mean {bpb:.6f})'
      if attempt.no_room:
        note += ' (inside the noise band; max_trials left no row to re-run it)'
      rows.append(self._record(
          result, status=status, agent=self.agent.kind, description=note, best_bpb=s.best_bpb,
          reward=reward, log_prob=p.log_prob, critic=p.critic, edit=[p.gene, p.value],
          mean_bpb=bpb if paired else None, rerun_of=first_trial if j else None,
          predictions=([list(x) for x in attempt.watch.predictions]
                       if attempt.watch and j == 0 else []),
          progress_at_stop=min(1.0, result.train_seconds / self.budget)))
      if result.status == 'ok':
        self.calibration.update(rows[-1], start.reference, self.budget)
    return rows

  def step(self) -> None:
    """One round: K proposals (K = `parallel_trials`, fewer when `max_trials` is near)
    trained at once, one per device group; re-runs of those inside the noise band;
    then, in the order proposed, the keep rule, the rewards and the agent's lessons;
    then the checkpoint and the ledger. With K = 1 this is one proposal at a time."""
    s = self.state
    k = min(self.executor.parallel, self._room_left())
    view = self.view()
    candidates = [self._candidate(self.agent.propose(view)) for _ in range(k)]
    start = RoundStart(s.best_bpb, self.reference)
    attempts = self._train_round(candidates, self._watchers(k))
    per_candidate = [self._judge(attempt, start) for attempt in attempts]
    for a in attempts:   # the re-run pairs join σ, after the round's decisions
      if a.second is not None and a.first.status == 'ok' and a.second.status == 'ok':
        self._add_repeats(a.candidate.genotype, [a.first.val_bpb, a.second.val_bpb])
    next_view = self.view()
    for candidate, rows in zip(candidates, per_candidate):
      outcome = Outcome(candidate.genotype, rows[0].status, rows[0].outcome_bpb)
      metrics = self.agent.observe(view, candidate.proposal, rows[0].reward, next_view, outcome)
      if metrics:
        logging.info('agent update: %s', ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
        rows[-1].agent_metrics = metrics   # on the proposal whose lesson triggered it
      if rows[0].status == 'keep':
        self.best_rows = rows
    if any(rows[0].status == 'keep' for rows in per_candidate):
      self.reference = self.calibration.reference(self.best_rows, s.best_bpb, self.budget)
      self.store.export_best(s.best_genotype)
    self._commit([row for rows in per_candidate for row in rows])

  def run(self) -> SearchState:
    with self.stop:
      try:
        self.measure_noise()
        while self._room_left() > 0:
          self.step()
      except Interrupted:
        logging.info('interrupted: %d trials are recorded and checkpointed', self.state.trials)
      finally:
        self.outputs.close()
        self.executor.close()
        self.store.close()
    return self.state


def run(config, workdir: str) -> Optional[SearchState]:
  """Runs the search in `workdir` until `config.search.max_trials` trials (0: forever).
  On several processes, process 0 runs it and the others follow it (follower.py;
  returning None)."""
  if not distributed.is_leader():
    logging.info('process %d follows process 0: %d trials trained', jax.process_index(),
                 follower.follow(config))
    return None
  start = time.time()
  state = Search.open(config, workdir).run()
  logging.info('search stopped: %d trials in the workdir (%.0f s this run), best val_bpb %.6f',
               state.trials, time.time() - start, state.best_bpb)
  return state

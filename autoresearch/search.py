"""The perpetual search: propose an edit of the best recipe, train it, decide, learn.

    search.run(config, workdir)

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

import dataclasses
import math
import time
from typing import Callable, Optional

import jax
import numpy as np
from absl import logging

from autoresearch import agents, baseline_cache, data, distributed, evaluator, follower
from autoresearch import genotype as genotype_lib, keep_rule, outputs, signals, trial
from autoresearch import workdir_io
from autoresearch.executor import ConfigError, Executor, Interrupted, Job
from autoresearch.records import AGENT_BASELINE, TrialRecord
from autoresearch.store import FaultHook, Store, init_policy, no_fault
from autoresearch.trial_types import TrialConfig, TrialResult



@dataclasses.dataclass
class SearchState:
  """Everything the search needs to continue (checkpointed as a whole with the agent)."""
  trials: int = 0                 # ledger rows written
  proposals: int = 0              # edits proposed by the agent
  best_genotype: dict = dataclasses.field(default_factory=dict)
  best_bpb: float = math.inf
  best_runs: int = 0             # runs whose mean is best_bpb
  sigma: float = 0.0              # pooled σ of val_bpb (keep_rule.pooled), bits/byte
  sigma_dof: int = 0              # its degrees of freedom
  baseline_bpbs: list = dataclasses.field(default_factory=list)
  repeats: dict = dataclasses.field(default_factory=dict)  # genotype id -> val_bpb of each run
  history: list = dataclasses.field(default_factory=list)   # agents.HistoryEntry as JSON
  since_improvement: int = 0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, meta: dict) -> 'SearchState':
    return cls(**meta)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A proposal made concrete: the genotype to train and how it differs from the best."""
  proposal: agents.Proposal
  genotype: dict
  description: str
  old_value: int          # the edited gene's value index in the parent; -1: whole genotype


class Search:
  """One search in one workdir. `runner` (a `trial.run` stand-in) and `fault` (a hook
  called at named crash-test points) are for tests; `store` replaces the workdir's
  checkpoints and ledger (a `store.MemoryStore`: a search on a synthetic landscape that
  writes nothing; `workdir` then only holds what an agent keeps, e.g. Optuna's study),
  and `corpus` the config's (one loaded once for many such searches)."""

  def __init__(self, config, workdir: str, runner: Callable = trial.run,
               fault: FaultHook = no_fault, store=None, corpus: Optional[data.Corpus] = None):
    check_search_config(config.search)
    outputs.check_output_config(config.output)
    self.config, self.workdir = config, workdir
    self.trial_config = TrialConfig.from_config(config)   # refused before any file is made
    # A Store holds the workdir's lock until closed: closed here if the rest fails.
    self.store = store if store is not None else Store(workdir, config, fault)
    try:
      if store is None:
        trial.enable_compilation_cache(workdir_io.compilation_cache_dir(workdir),
                                       config.compilation_cache_mb)
      self._build(config, workdir, runner, fault, corpus)
    except BaseException:
      self.store.close()
      raise

  def _build(self, config, workdir: str, runner: Callable, fault: FaultHook,
             corpus: Optional[data.Corpus]) -> None:
    """The search's parts and its restored state (the rest of __init__)."""
    self.corpus = corpus if corpus is not None else data.corpus_from_config(config)
    self.stop = signals.GracefulStop(config.checkpoint.grace_seconds,
                                     'stopping the trial in flight; the saved state is complete')
    self.executor = Executor(self.corpus, self.trial_config, config.search.parallel_trials,
                             config.output.progress_bar, self.stop, runner, fault)
    self.space = agents.SearchSpace(self.trial_config.max_params, trial.max_step_flops(
        self.trial_config, self.executor.devices_per_trial))
    self.agent = agents.make(config.agent, config.search.seed, workdir)
    # A stand-in runner's or an in-memory search's runs are not kept for real searches.
    kept = runner is trial.run and isinstance(self.store, Store)
    self.baselines = (baseline_cache.BaselineCache.for_search(
        config, self.corpus, self.trial_config, self.executor.devices_per_trial)
        if kept else baseline_cache.BaselineCache(None))
    self.state = SearchState(best_genotype=genotype_lib.from_config(config))
    self.evaluator_config = evaluator.EvaluatorConfig.from_config(config)
    self.calibration = evaluator.Calibration.create(self.evaluator_config)
    self.reference: Optional[evaluator.Reference] = None  # the best's curve features
    self.best_rows: list[TrialRecord] = []   # ledger rows of the best genotype's runs
    logging.info('data: %s, bytes %s', self.corpus.description, self.corpus.byte_counts())
    self._restore()
    # What a person sees of each step; an in-memory search gets the lines only.
    self.outputs = outputs.StepOutputs(
        config.output, workdir, writes_files=isinstance(self.store, Store),
        first_trial=self.state.trials + 1, best_bpb=self.state.best_bpb,
        baseline_genotype=genotype_lib.from_config(config))

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
        init_policy(self.agent, self.config.agent.init_from)
      return
    self.state = SearchState.from_json(meta['state'])
    self.calibration = evaluator.Calibration.from_dict(meta['calibration'],
                                                       self.evaluator_config)
    self.best_rows = self.store.rows_of(genotype_lib.genotype_id(self.state.best_genotype))
    if meta['reference'] is not None:
      # The binned curve (the learned predictor's input) is rebuilt from the best's rows.
      rebuilt = self.calibration.reference(self.best_rows, self.state.best_bpb, self.budget)
      self.reference = evaluator.Reference(
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

  def view(self) -> agents.SearchView:
    """The search as the agents see it."""
    s = self.state
    history = tuple(agents.HistoryEntry(**entry) for entry in s.history)
    mask = genotype_lib.edit_mask(s.best_genotype, self.space.max_params,
                                  self.space.max_step_flops)
    baseline = float(np.mean(s.baseline_bpbs)) if s.baseline_bpbs else math.nan
    return agents.SearchView(s.best_genotype, s.best_bpb, s.sigma, s.trials,
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

  def _candidate(self, proposal: agents.Proposal) -> Candidate:
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

  def _train_round(self, candidates: list[Candidate], watches: list) -> tuple[list, dict, set]:
    """(first results, {index: re-run result}, indices left without the re-run they
    called for): the candidates, then the re-runs of those inside the noise band
    (against the best the proposals were made against), as the ledger has room for."""
    s, seed = self.state, self.trial_config.seed
    firsts = self.executor.run([
        Job(c.genotype, seed, watch, f'trial {s.trials + 1 + i}')
        for i, (c, watch) in enumerate(zip(candidates, watches))])
    in_band = [i for i, r in enumerate(firsts) if r.status == 'ok' and keep_rule.first_run(
        s.best_bpb - r.val_bpb, self._noise(), s.best_runs, self.config.search.keep_alpha)
        == 'rerun']
    reruns = in_band[:max(0, self._room_left() - len(candidates))]
    seconds = self.executor.run([   # the second run of a genotype: the second seed
        Job(candidates[i].genotype, seed + 1, label=f're-run of trial {s.trials + 1 + i}')
        for i in reruns])
    return firsts, dict(zip(reruns, seconds)), set(in_band) - set(reruns)

  def _judge(self, candidate: Candidate, results: list[TrialResult], rerun: bool,
             best_before: float, watch, reference_before,
             no_room: bool = False) -> list[TrialRecord]:
    """The rows of one candidate (its run, and its re-run if any): the keep rule
    against the best as it stands now, the reward, and the state's new best, history
    and calibration. `no_room`: it was inside the noise band but `max_trials` left no
    row for its re-run (its description says so)."""
    s, search, first = self.state, self.config.search, results[0]
    second = results[1].val_bpb if rerun and results[1].status == 'ok' else None
    if first.status == 'ok':
      status, bpb = keep_rule.decide(s.best_bpb, s.best_runs, first.val_bpb, second, rerun,
                                     self._noise(), search.keep_alpha)
    else:
      status, bpb = first.status, (first.predicted_bpb if first.status == 'aborted' else None)
    s.proposals += 1
    reward = keep_rule.reward(best_before, bpb, s.sigma, search.reward_clip)
    if status == 'keep':
      s.best_genotype, s.best_bpb, s.since_improvement = candidate.genotype, float(bpb), 0
      s.best_runs = 2 if second is not None else 1
    else:
      s.since_improvement += 1
    p = candidate.proposal
    s.history.append(agents.HistoryEntry(
        p.gene, candidate.old_value, p.value, status, bpb, best_before, s.sigma,
        first.train_seconds / self.budget, status == 'keep').to_json())
    s.history = s.history[-self.config.agent.history:]
    rows, first_trial = [], s.trials + 1
    for j, result in enumerate(results):
      note = candidate.description if j == 0 else \
          f'{candidate.description} (re-run, mean {bpb:.6f})'
      if no_room:
        note += ' (inside the noise band; max_trials left no row to re-run it)'
      rows.append(self._record(
          result, status=status, agent=self.agent.kind, description=note, best_bpb=s.best_bpb,
          reward=reward, log_prob=p.log_prob, critic=p.critic, edit=[p.gene, p.value],
          mean_bpb=bpb if second is not None else None,
          rerun_of=first_trial if j else None,
          predictions=[list(x) for x in watch.predictions] if watch and j == 0 else [],
          progress_at_stop=min(1.0, result.train_seconds / self.budget)))
      if result.status == 'ok':
        self.calibration.update(rows[-1], reference_before, self.budget)
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
    best_before, reference_before = s.best_bpb, self.reference
    watches = self._watchers(k)
    firsts, seconds, no_room = self._train_round(candidates, watches)
    per_candidate = []
    for i, candidate in enumerate(candidates):
      results = [firsts[i]] + ([seconds[i]] if i in seconds else [])
      per_candidate.append(self._judge(candidate, results, i in seconds, best_before,
                                       watches[i], reference_before, i in no_room))
    for i in seconds:   # the re-run pairs join σ, after the round's decisions
      if firsts[i].status == 'ok' and seconds[i].status == 'ok':
        self._add_repeats(candidates[i].genotype, [firsts[i].val_bpb, seconds[i].val_bpb])
    next_view = self.view()
    for candidate, rows in zip(candidates, per_candidate):
      outcome = agents.Outcome(candidate.genotype, rows[0].status, rows[0].outcome_bpb)
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


def check_search_config(search) -> None:
  """Raises ConfigError naming a `config.search` field whose value cannot work."""
  problems = []
  if search.noise_repeats < 2:
    problems.append(f'search.noise_repeats={search.noise_repeats}: σ needs at least 2 runs')
  if not 0.0 < search.keep_alpha < 1.0:
    problems.append(f'search.keep_alpha={search.keep_alpha}: a probability in (0, 1)')
  if not search.min_sigma >= 0.0:
    problems.append(f'search.min_sigma={search.min_sigma}: bits/byte, at least 0')
  if not search.reward_clip > 0.0:
    problems.append(f'search.reward_clip={search.reward_clip}: must be positive')
  if search.max_trials < 0:
    problems.append(f'search.max_trials={search.max_trials}: 0 (forever) or more')
  if problems:
    raise ConfigError('; '.join(problems))


def run(config, workdir: str, runner: Callable = trial.run,
        fault: FaultHook = no_fault) -> Optional[SearchState]:
  """Runs the search in `workdir` until `config.search.max_trials` trials (0: forever).
  On several processes, process 0 runs it and the others follow it (follower.py;
  returning None)."""
  if not distributed.is_leader():
    logging.info('process %d follows process 0: %d trials trained', jax.process_index(),
                 follower.follow(config))
    return None
  start = time.time()
  state = Search(config, workdir, runner, fault).run()
  logging.info('search stopped: %d trials in the workdir (%.0f s this run), best val_bpb %.6f',
               state.trials, time.time() - start, state.best_bpb)
  return state

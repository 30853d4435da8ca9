"""The perpetual search: propose an edit of the best recipe, train it, decide, learn.

    search.run(config, workdir)

1. **Noise.** The baseline is trained `noise_repeats` times with different seeds; σ is
   the standard deviation of its val_bpb (at least `min_sigma`), the best is their mean.
2. **Loop** (until `max_trials` ledger rows in total; 0 = forever): the agent proposes
   one edit of the best genotype; the trial trains it; the keep rule decides; the agent
   is told the reward; the ledger gets the row(s).
3. **Keep rule** (noise-aware). With gain = best_bpb - val_bpb:
   gain > keep_sigmas·σ: keep (new best). 0 < gain <= keep_sigmas·σ (inside the noise
   band but below the best): the genotype is trained again with a new seed and the mean
   m of the two runs decides: keep when best_bpb - m > keep_sigmas·σ/√2 (the standard
   error of a two-run mean). Both runs are in the ledger, with the same decision.
   Otherwise discard. A crash or an aborted trial never becomes the best.
4. **Reward** of an edit: r = clip((best_bpb_before - bpb) / σ, -reward_clip,
   +reward_clip), where bpb is the trial's val_bpb (the two-run mean after a re-run)
   or, for an aborted trial, the self-evaluator's predicted val_bpb; a crash, or an
   aborted trial without a prediction, gets the floor -reward_clip.
5. **Persistence.** After every step (one ledger row, or two for a re-run) the whole
   state is checkpointed *first*, with that step's rows inside it, and only then are the
   rows appended to the ledger (trials.jsonl, then results.tsv). So the ledger never
   holds a row the checkpoint lacks, and at start-up:
   - ledger rows < checkpoint counter: the missing rows come from the checkpoint;
   - ledger rows > checkpoint counter (only after falling back from a corrupt latest
     checkpoint): the extra rows move to trials.orphaned.jsonl and are re-run;
   - results.tsv is rebuilt from trials.jsonl when their row counts differ.
   A kill at any moment thus loses at most the trial in flight and duplicates none.
   SIGTERM/SIGINT stop the running trial at its next step; nothing is recorded for it
   (it is re-run after resume, from the same saved state, so it proposes the same edit)
   and the process exits 0 within `checkpoint.grace_seconds`. A second SIGINT exits at
   once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import signal
import threading
import time
from typing import Optional

import jax
import numpy as np
from absl import logging

from autoresearch import agents, checkpointing, distributed, evaluator, follower
from autoresearch import genotype as genotype_lib, ledger as ledger_lib, modes, trial


@dataclasses.dataclass
class SearchState:
  """Everything the search needs to continue (checkpointed as a whole with the agent)."""
  trials: int = 0                 # ledger rows written
  proposals: int = 0              # edits proposed by the agent
  best_genotype: dict = dataclasses.field(default_factory=dict)
  best_bpb: float = math.inf
  sigma: float = 0.0
  baseline_bpbs: list = dataclasses.field(default_factory=list)
  history: list = dataclasses.field(default_factory=list)   # policy history rows (lists)
  since_improvement: int = 0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, meta: dict) -> 'SearchState':
    return cls(**meta)


def reward(best_before: float, bpb: Optional[float], sigma: float, clip: float) -> float:
  """The PPO reward of one edit (see the module docstring)."""
  if bpb is None or not math.isfinite(bpb):
    return -clip
  return float(np.clip((best_before - bpb) / sigma, -clip, clip))


def decide(gain: float, sigma: float, keep_sigmas: float) -> str:
  """'keep', 'rerun' or 'discard' for a scored trial that gained `gain` bits over the best."""
  if gain > keep_sigmas * sigma:
    return 'keep'
  if gain > 0:
    return 'rerun'
  return 'discard'


def config_fingerprint(config) -> dict[str, str]:
  """Hashes of the parts of the config a search's results depend on. `max_trials` and
  the checkpoint settings may change between runs; `agent.init_from` only matters at
  the start."""
  def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
  search = {k: v for k, v in config.search.to_dict().items() if k != 'max_trials'}
  agent = {k: v for k, v in config.agent.to_dict().items() if k != 'init_from'}
  return {
      'data': digest(config.data.to_dict()),
      'trial': digest(config.trial.to_dict()),
      'baseline genotype': digest(genotype_lib.from_config(config)),
      'search space': digest([(g.name, g.values) for g in genotype_lib.GENES]),
      'search': digest(search),
      'agent': digest(agent),
  }


_FAULT_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
  """Crash-test hook: with AUTORESEARCH_KILL_AT=name:N in the environment the process
  kills itself (SIGKILL, as a preemption without notice would) the N-th time it
  reaches point `name`. `mid-...` points kill from a timer 5 ms later, inside the work
  that follows. Inert otherwise."""
  target = os.environ.get('AUTORESEARCH_KILL_AT')
  if not target or not target.startswith(name + ':'):
    return
  _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
  if _FAULT_COUNTS[name] != int(target.split(':')[1]):
    return
  kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
  if name.startswith('mid-'):
    threading.Timer(0.005, kill).start()
  else:
    kill()


class ConfigError(ValueError):
  """A configuration the search cannot run with; the message says why."""


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


class Interrupted(Exception):
  """A preemption signal arrived; the trial in flight is dropped."""


class Search:
  """One search in one workdir."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise checkpointing.CheckpointError(f'cannot create the workdir {workdir}: {e}') from e
    trial.enable_compilation_cache(os.path.join(workdir, 'jax_cache'))
    self.corpus = modes.load_corpus(config)
    self.trial_config = modes.trial_config(config)
    self.parallel, self.device_groups = device_groups(config.search.parallel_trials)
    per_trial = len(self.device_groups[0] or jax.devices())
    self.space = agents.SearchSpace(self.trial_config.max_params,
                                    trial.max_step_flops(self.trial_config, per_trial))
    self.ledger = ledger_lib.Ledger(workdir)
    self.agent = agents.make(config.agent, config.agent.history, config.search.seed,
                             self.space, workdir)
    self.state = SearchState(best_genotype=genotype_lib.from_config(config))
    self.fingerprint = config_fingerprint(config)
    self.evaluator_config = evaluator.EvaluatorConfig(**config.evaluator.to_dict())
    self.calibration = evaluator.Calibration.create(self.evaluator_config)
    self.reference: Optional[evaluator.Reference] = None  # the best's curve features
    self.checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                                   keep=config.checkpoint.keep)
    self.best_rows: list[dict] = []   # ledger rows of the best genotype's runs
    self.interrupt_time: Optional[float] = None
    self.watchdog: Optional[threading.Timer] = None
    logging.info('data: %s, bytes %s', self.corpus.description, self.corpus.byte_counts())
    self._restore()

  # --- persistence -------------------------------------------------------------------

  def _save(self, rows: list[dict]) -> None:
    """Checkpoint (with this step's rows), then the ledger."""
    arrays, agent_meta = self.agent.state_dict()
    reference = None if self.reference is None else {
        'features': self.reference.features.tolist(), 'bpb': self.reference.bpb}
    meta = {'state': self.state.to_json(), 'agent_kind': self.agent.kind,
            'agent': agent_meta, 'fingerprint': self.fingerprint, 'pending_rows': rows,
            'calibration': self.calibration.to_dict(), 'reference': reference}
    fault_point('mid-checkpoint')
    self.checkpointer.save(self.state.trials, {'agent': arrays}, meta)
    fault_point('after-checkpoint')
    for row in rows:
      self.ledger.append(row)

  def _restore(self) -> None:
    restored = self.checkpointer.restore({'agent': self.agent.state_dict()[0]})
    if restored is None:
      if self.config.agent.init_from:
        self._init_policy_from(self.config.agent.init_from)
      self._reconcile_ledger(checkpoint_rows=[])
      return
    step, arrays, meta = restored
    self._check_fingerprint(meta['fingerprint'])
    if meta['agent_kind'] != self.agent.kind:
      raise checkpointing.CheckpointError(
          f'{self.workdir} holds a search by agent {meta["agent_kind"]!r}, not '
          f'{self.agent.kind!r}; use another workdir')
    self.state = SearchState.from_json(meta['state'])
    self.agent.load_state_dict(arrays['agent'], meta['agent'])
    if meta.get('calibration') is not None:
      self.calibration = evaluator.Calibration.from_dict(meta['calibration'],
                                                         self.evaluator_config)
    if meta.get('reference') is not None:
      self.reference = evaluator.Reference(
          np.asarray(meta['reference']['features'], np.float64), meta['reference']['bpb'])
    self._reconcile_ledger(checkpoint_rows=meta['pending_rows'])
    best_id = genotype_lib.genotype_id(self.state.best_genotype)
    self.best_rows = [r for r in self.ledger.read_records()
                      if r['commit'] == best_id and r['status'] == 'keep']
    logging.info('resumed from checkpoint %d: %d trials, best val_bpb %.6f', step,
                 self.state.trials, self.state.best_bpb)

  def _check_fingerprint(self, saved: dict) -> None:
    changed = [part for part in self.fingerprint if saved.get(part) != self.fingerprint[part]]
    if not changed:
      return
    message = (f'the config differs from the one that started the search in {self.workdir} '
               f'in: {", ".join(changed)}')
    if not self.config.checkpoint.allow_config_change:
      raise checkpointing.CheckpointError(
          message + ' (pass --config.checkpoint.allow_config_change=True to continue anyway)')
    logging.warning('%s; continuing as allowed', message)

  def _reconcile_ledger(self, checkpoint_rows: list[dict]) -> None:
    """Makes the ledger hold exactly the checkpoint's trials 1..N (module docstring)."""
    records = self.ledger.read_records()
    n = self.state.trials
    if len(records) > n:
      orphans = records[n:]
      logging.warning('ledger rows %d..%d are newer than the checkpoint: moved to '
                      'trials.orphaned.jsonl, and those trials will run again', n + 1,
                      len(records))
      with open(os.path.join(self.workdir, 'trials.orphaned.jsonl'), 'a') as f:
        for record in orphans:
          f.write(json.dumps(record) + '\n')
      records = records[:n]
    missing = [row for row in checkpoint_rows if row['trial'] > len(records)]
    if len(records) + len(missing) != n:
      raise checkpointing.CheckpointError(
          f'the ledger in {self.workdir} has {len(records)} trials and the checkpoint '
          f'{n}; the rows in between are lost')
    self.ledger.rewrite(records)  # drops a torn line; rebuilds results.tsv when it differs
    for row in missing:
      self.ledger.append(row)

  def _init_policy_from(self, other_workdir: str) -> None:
    if not hasattr(self.agent, 'load_policy'):
      raise ValueError(f'agent.init_from needs a learning agent; agent.kind='
                       f'{self.agent.kind!r} has no policy')
    other = checkpointing.Checkpointer(os.path.join(other_workdir, 'checkpoints'))
    restored = other.restore({'agent': self.agent.state_dict()[0]})
    if restored is None:
      raise checkpointing.CheckpointError(f'agent.init_from: no checkpoint in {other_workdir}')
    self.agent.load_policy(restored[1]['agent'])
    logging.info('policy initialised from %s (checkpoint %d)', other_workdir, restored[0])

  def _export_best(self) -> None:
    """workdir/best_genotype.json: the best genotype, for --mode=train --genotype=..."""
    path = os.path.join(self.workdir, 'best_genotype.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(self.state.best_genotype, f, indent=1, sort_keys=True)
    os.replace(path + '.tmp', path)

  # --- signals -----------------------------------------------------------------------

  def _on_signal(self, signum, frame):
    if self.interrupt_time is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # second Ctrl-C: now
    if self.interrupt_time is None:
      self.interrupt_time = time.monotonic()
      grace = self.config.checkpoint.grace_seconds
      logging.warning('signal %d: stopping the trial in flight; the saved state is '
                      'complete (exit within %.0f s)', signum, grace)
      self.watchdog = threading.Timer(grace, lambda: os._exit(0))  # the saved state is whole
      self.watchdog.daemon = True
      self.watchdog.start()

  def _watch(self, reading: trial.LossReading,
             evaluator_watch: Optional[evaluator.Evaluator] = None) -> Optional[trial.Stop]:
    if reading.step == 1:
      fault_point('train')
    if reading.progress >= 1.0:
      fault_point('mid-eval')  # the last readings: evaluation is next
    if self.interrupt_time is not None:
      return trial.Stop('interrupted by a signal', status='interrupted')
    return None if evaluator_watch is None else evaluator_watch(reading)

  # --- one trial ---------------------------------------------------------------------

  def _train_many(self, jobs: list[tuple]) -> list[trial.TrialResult]:
    """Trains (genotype, seed, evaluator watch) jobs, at most `parallel_trials`, at
    once: job i on device group i, each in its own thread. On several processes the
    other processes are told the jobs first (see follower.py)."""
    if jobs and jax.process_count() > 1 and self.interrupt_time is None:
      distributed.broadcast_json({'jobs': [[genotype, seed] for genotype, seed, _ in jobs]})
    if self.parallel == 1:
      return [self._train(*job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
      futures = [pool.submit(self._train, *job, devices=group)
                 for job, group in zip(jobs, self.device_groups)]
      concurrent.futures.wait(futures)
    return [future.result() for future in futures]  # re-raises Interrupted

  def _train(self, genotype: dict, seed: int,
             evaluator_watch: Optional[evaluator.Evaluator] = None,
             devices: Optional[list] = None) -> trial.TrialResult:
    if self.interrupt_time is not None:
      raise Interrupted
    cfg = dataclasses.replace(self.trial_config, seed=seed)
    progress = None
    if self.config.search.progress_bar and self.parallel == 1:
      prediction = None
      if evaluator_watch is not None:
        prediction = lambda: (None if evaluator_watch.last_prediction is None else
                              evaluator_watch.last_prediction[1:3])
      progress = modes.ProgressLine(cfg.budget_seconds, genotype['batch_size'] *
                                    genotype['seq_len'], f'trial {self.state.trials + 1}',
                                    prediction)

    def watch(reading):
      if progress is not None:
        progress(reading)
      return self._watch(reading, evaluator_watch)

    fault_point('mid-compile')
    try:
      placement = {} if devices is None else {'devices': devices}  # None: all devices
      result = trial.run(genotype, self.corpus, cfg, watch=watch, **placement)
    finally:
      if progress is not None:
        progress.close()
    if self.interrupt_time is not None or result.status == 'interrupted':
      raise Interrupted
    return result

  def _row(self, result: trial.TrialResult, status: str, description: str, **extra) -> dict:
    self.state.trials += 1
    row = dict(result.to_dict(), commit=result.genotype_id, status=status,
               description=description, trial=self.state.trials, agent=self.agent.kind,
               memory_gb=result.peak_memory_gb)
    row.update(extra)
    return row

  def _log(self, row: dict) -> None:
    """The trial's one summary line, on stdout (what --quiet keeps)."""
    bpb = f'{row["val_bpb"]:.6f}' if row['val_bpb'] is not None else '-'
    if row['status'] == 'aborted' and row.get('predicted_bpb') is not None:
      bpb = f'~{row["predicted_bpb"]:.6f} (predicted)'
    print(f'trial {row["trial"]} | {row["agent"]} | {row["description"]} | val_bpb {bpb} | '
          f'{row["status"]} | best {row["best_bpb"]:.6f}', flush=True)

  def _room_left(self) -> int:
    """Ledger rows left before `max_trials` (a large number when there is no limit)."""
    max_trials = self.config.search.max_trials
    return 2**62 if max_trials <= 0 else max(0, max_trials - self.state.trials)

  # --- phases ------------------------------------------------------------------------

  def measure_noise(self) -> None:
    """Trains the baseline `noise_repeats` times (K at a time); sets best_bpb and sigma."""
    s, search = self.state, self.config.search
    while len(s.baseline_bpbs) < search.noise_repeats and self._room_left() > 0:
      first = len(s.baseline_bpbs)
      wave = min(self.parallel, search.noise_repeats - first, self._room_left())
      results = self._train_many([(s.best_genotype, self.trial_config.seed + first + i, None)
                                  for i in range(wave)])
      rows = []
      for i, result in enumerate(results):
        if result.status != 'ok':
          raise RuntimeError(f'the baseline genotype failed ({result.status}): {result.reason}')
        s.baseline_bpbs.append(result.val_bpb)
        s.best_bpb = float(np.mean(s.baseline_bpbs))
        spread = float(np.std(s.baseline_bpbs, ddof=1)) if len(s.baseline_bpbs) > 1 else 0.0
        s.sigma = max(spread, search.min_sigma)
        row = self._row(result, 'keep', f'baseline (noise run {first + i + 1}/'
                        f'{search.noise_repeats})', agent='baseline', best_bpb=s.best_bpb,
                        sigma=s.sigma)
        self.calibration.update(row, budget_seconds=self.trial_config.budget_seconds)
        self.best_rows.append(row)
        rows.append(row)
      self.reference = self.calibration.reference(self.best_rows, s.best_bpb,
                                                  self.trial_config.budget_seconds)
      self._save(rows)
      for row in rows:
        self._log(row)
    self._export_best()
    logging.info('baseline val_bpb %.6f, sigma %.6f (from %d runs, floor %.6f)',
                 s.best_bpb, s.sigma, len(s.baseline_bpbs), search.min_sigma)

  def observation(self):
    s = self.state
    history = [np.asarray(row, np.float32) for row in s.history]
    return agents.build_observation(s.best_genotype, history, self.config.agent.history,
                                    s.trials, s.since_improvement, s.best_bpb, self.space)

  def _candidate(self, parent: dict, proposal: agents.Proposal) -> tuple[dict, str, int]:
    """(genotype, description, the edited gene's old value index) of a proposal."""
    if proposal.genotype is None:
      genotype = genotype_lib.apply_edit(parent, proposal.gene, proposal.value)
      description = genotype_lib.describe_edit(parent, proposal.gene, proposal.value)
      return genotype, description, genotype_lib.value_index(
          parent, genotype_lib.GENES[proposal.gene].name)
    # A whole genotype: described by how it differs from the best.
    return dict(proposal.genotype), genotype_lib.describe_diff(proposal.genotype, parent), -1

  def step(self) -> None:
    """One round: K proposals (K = `parallel_trials`, fewer when `max_trials` is near)
    trained at once, one per device group; then, in the order proposed, the keep rule
    (re-runs inside the noise band are trained together after the round), the rewards,
    and the agent's lessons. With K = 1 this is one proposal at a time."""
    s, search = self.state, self.config.search
    budget = self.trial_config.budget_seconds
    k = min(self.parallel, self._room_left())
    obs = self.observation()
    proposals = [self.agent.propose(obs) for _ in range(k)]
    best_before, parent = s.best_bpb, s.best_genotype
    candidates = [self._candidate(parent, p) for p in proposals]
    watches = [None] * k
    if self.evaluator_config.enabled:
      # Built before the trials, so their one-off set-up stays off the trials' clocks.
      watches = [evaluator.Evaluator(self.evaluator_config, self.calibration, best_before,
                                     keep_margin_bpb=0.0, budget_seconds=budget,
                                     reference=self.reference) for _ in range(k)]
    reference_before = self.reference
    firsts = self._train_many([(genotype, self.trial_config.seed, watch)
                               for (genotype, _, _), watch in zip(candidates, watches)])
    # Inside the noise band (against the best the proposals were made against): re-run.
    in_band = [i for i, r in enumerate(firsts) if r.status == 'ok' and
               decide(best_before - r.val_bpb, s.sigma, search.keep_sigmas) == 'rerun']
    reruns = in_band[:max(0, self._room_left() - k)]  # as the ledger has room for
    seconds = self._train_many([(candidates[i][0], self.trial_config.seed + 10_000 +
                                 s.proposals + i, None) for i in reruns])
    second = dict(zip(reruns, seconds))

    rows, lessons, became_best = [], [], False
    for i, (proposal, (genotype, description, old_value)) in enumerate(zip(proposals, candidates)):
      first, results = firsts[i], [firsts[i]] + ([second[i]] if i in second else [])
      if first.status == 'ok':
        bpb, margin = first.val_bpb, search.keep_sigmas * s.sigma
        rerun_ok = i in second and second[i].status == 'ok'
        if rerun_ok:  # the two-run mean, against the standard error of a two-run mean
          bpb, margin = (first.val_bpb + second[i].val_bpb) / 2, margin / math.sqrt(2)
        # Against the best now: an earlier proposal of this round may have raised it.
        keep = s.best_bpb - bpb > margin and (i not in second or rerun_ok)
        status = 'keep' if keep else 'discard'
      else:
        status, bpb = first.status, (first.predicted_bpb if first.status == 'aborted' else None)
      s.proposals += 1
      r = reward(best_before, bpb, s.sigma, search.reward_clip)
      if status == 'keep':
        s.best_genotype, s.best_bpb, s.since_improvement = genotype, float(bpb), 0
      else:
        s.since_improvement += 1
      gain_sigmas = (best_before - bpb) / s.sigma if bpb is not None else -math.inf
      s.history.append(agents.history_row(
          proposal.gene, old_value, proposal.value, gain_sigmas, status,
          first.train_seconds / max(budget, 1e-9), status == 'keep').tolist())
      s.history = s.history[-self.config.agent.history:]
      lessons.append((proposal, r, agents.Outcome(genotype, status, bpb)))
      mine = []
      for j, result in enumerate(results):
        note = description if j == 0 else f'{description} (re-run, mean {bpb:.6f})'
        predictions = ([list(p) for p in watches[i].predictions]
                       if watches[i] is not None and j == 0 else [])
        mine.append(self._row(result, status, note, reward=r, log_prob=proposal.log_prob,
                              critic=proposal.critic, edit=[proposal.gene, proposal.value],
                              best_bpb=s.best_bpb, agent_metrics={}, predictions=predictions,
                              progress_at_stop=min(1.0, result.train_seconds / budget)))
        if result.status == 'ok':
          self.calibration.update(mine[-1], reference_before, budget)
      if status == 'keep':
        self.best_rows, became_best = mine, True
      rows += mine
    next_obs = self.observation()
    for proposal, r, outcome in lessons:
      metrics = self.agent.observe(obs, proposal, r, next_obs, outcome)
      if metrics:
        logging.info('agent update: %s', ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
        rows[-1]['agent_metrics'] = metrics
    if became_best:
      self.reference = self.calibration.reference(self.best_rows, s.best_bpb, budget)
      self._export_best()
    self._save(rows)
    for row in rows:
      self._log(row)

  def run(self) -> SearchState:
    handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
      self.measure_noise()
      while self._room_left() > 0:
        self.step()
    except Interrupted:
      logging.info('interrupted: %d trials are recorded and checkpointed', self.state.trials)
    finally:
      for sig, handler in handlers.items():
        signal.signal(sig, handler)
      if self.watchdog is not None:
        self.watchdog.cancel()  # exiting in time by ourselves
      if jax.process_count() > 1:
        distributed.broadcast_json({'stop': True})
      self.checkpointer.close()
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
  state = Search(config, workdir).run()
  logging.info('search stopped: %d trials in the workdir (%.0f s this run), best val_bpb %.6f',
               state.trials, time.time() - start, state.best_bpb)
  return state

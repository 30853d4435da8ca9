"""The search's memory in its workdir: the checkpoint first, the ledger second.

    store = Store(workdir, config, fault)
    restored = store.restore(agent)        # None for a new search; reconciles the ledger
    store.save(step, agent, meta, rows)    # checkpoint (with the rows), then the ledger

After every step (one ledger row, or two for a re-run) the whole state is checkpointed
*first*, with that step's rows inside it, and only then are the rows appended to the
ledger (trials.jsonl, then results.tsv). So the ledger never holds a row the checkpoint
lacks, and at start-up:
- ledger rows < checkpoint counter: the missing rows come from the checkpoint;
- ledger rows > checkpoint counter (only after falling back from a corrupt latest
  checkpoint): the extra rows move to trials.orphaned.jsonl and are re-run;
- results.tsv is rebuilt from trials.jsonl when their row counts differ.
A kill at any moment thus loses at most the trial in flight and duplicates none. A
checkpoint written by another config (the fingerprint), agent or checkpoint format is
refused with what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Optional

from absl import logging

from autoresearch import checkpointing, data, genotype as genotype_lib, ledger as ledger_lib
from autoresearch.records import TrialRecord

# 2: raw outcome history (agents.HistoryEntry) and typed ledger rows (records.py).
CHECKPOINT_FORMAT = 2
FaultHook = Callable[[str], None]   # called with the name of each crash-test point


def no_fault(point: str) -> None:
  """The production fault hook: does nothing."""


def config_fingerprint(config) -> dict[str, str]:
  """Hashes of the parts of the config a search's results depend on. `max_trials` and
  the checkpoint settings may change between runs; `agent.init_from` only matters at
  the start."""
  def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
  search = {k: v for k, v in config.search.to_dict().items() if k != 'max_trials'}
  agent = {k: v for k, v in config.agent.to_dict().items() if k != 'init_from'}
  return {
      'data': digest([config.data.to_dict(), data.SPLIT_VERSION]),
      'trial': digest(config.trial.to_dict()),
      'baseline genotype': digest(genotype_lib.from_config(config)),
      'search space': digest([(g.name, g.values) for g in genotype_lib.GENES]),
      'search': digest(search),
      'agent': digest(agent),
  }


class Store:
  """Checkpoints and ledger of one workdir (see the module docstring)."""

  def __init__(self, workdir: str, config, fault: FaultHook = no_fault):
    self.workdir, self.config, self.fault = workdir, config, fault
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise checkpointing.CheckpointError(f'cannot create the workdir {workdir}: {e}') from e
    self.ledger = ledger_lib.Ledger(workdir)
    self.fingerprint = config_fingerprint(config)
    self.checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                                   keep=config.checkpoint.keep)

  def save(self, step: int, agent, meta: dict, rows: list[TrialRecord]) -> None:
    """Checkpoints the agent and `meta` (with this step's rows), then appends the rows
    to the ledger."""
    arrays, agent_meta = agent.state_dict()
    meta = dict(meta, format=CHECKPOINT_FORMAT, agent_kind=agent.kind, agent=agent_meta,
                fingerprint=self.fingerprint, pending_rows=[r.to_dict() for r in rows])
    self.fault('mid-checkpoint')
    self.checkpointer.save(step, {'agent': arrays}, meta)
    self.fault('after-checkpoint')
    for row in rows:
      self.ledger.append(row)

  def restore(self, agent, trials_of: Callable[[dict], int]) -> Optional[dict]:
    """The saved meta (the agent restored in place), or None for a new search. Either
    way the ledger is made to hold exactly the checkpoint's rows; `trials_of(meta)` is
    the number of rows the checkpoint accounts for."""
    restored = self.checkpointer.restore({'agent': agent.state_dict()[0]})
    if restored is None:
      self._reconcile(trials=0, checkpoint_rows=[])
      return None
    step, arrays, meta = restored
    if meta.get('format') != CHECKPOINT_FORMAT:
      raise checkpointing.CheckpointError(
          f'the checkpoint in {self.workdir} has format {meta.get("format", 1)}, this version '
          f'reads format {CHECKPOINT_FORMAT}; continue it with the version that wrote it, or '
          f'use another workdir')
    self._check_fingerprint(meta['fingerprint'])
    if meta['agent_kind'] != agent.kind:
      raise checkpointing.CheckpointError(
          f'{self.workdir} holds a search by agent {meta["agent_kind"]!r}, not '
          f'{agent.kind!r}; use another workdir')
    agent.load_state_dict(arrays['agent'], meta['agent'])
    self._reconcile(trials_of(meta), [TrialRecord.from_dict(r) for r in meta['pending_rows']])
    logging.info('resumed from checkpoint %d', step)
    return meta

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

  def _reconcile(self, trials: int, checkpoint_rows: list[TrialRecord]) -> None:
    """Makes the ledger hold exactly the checkpoint's trials 1..N (module docstring)."""
    records = self.ledger.read_records()
    if len(records) > trials:
      logging.warning('ledger rows %d..%d are newer than the checkpoint: moved to '
                      'trials.orphaned.jsonl, and those trials will run again', trials + 1,
                      len(records))
      with open(os.path.join(self.workdir, 'trials.orphaned.jsonl'), 'a') as f:
        for record in records[trials:]:
          f.write(json.dumps(record.to_dict()) + '\n')
      records = records[:trials]
    missing = [row for row in checkpoint_rows if row.trial > len(records)]
    if len(records) + len(missing) != trials:
      raise checkpointing.CheckpointError(
          f'the ledger in {self.workdir} has {len(records)} trials and the checkpoint '
          f'{trials}; the rows in between are lost')
    self.ledger.rewrite(records)  # drops a torn line; rebuilds results.tsv when it differs
    for row in missing:
      self.ledger.append(row)

  def export_best(self, genotype: dict) -> None:
    """workdir/best_genotype.json: the best genotype, for --mode=train --genotype=..."""
    path = os.path.join(self.workdir, 'best_genotype.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(genotype, f, indent=1, sort_keys=True)
    os.replace(path + '.tmp', path)

  def rows_of(self, genotype_id: str) -> list[TrialRecord]:
    """The kept ledger rows of one genotype (the best's runs, after a resume)."""
    return [r for r in self.ledger.read_records()
            if r.genotype_id == genotype_id and r.status == 'keep']

  def close(self) -> None:
    self.checkpointer.close()


class MemoryStore:
  """The `Store` interface with nothing written: a search held in memory (on synthetic
  landscapes: pretraining, tests, benchmarks). Its ledger rows are kept in `rows`."""

  def __init__(self):
    self.rows: list[TrialRecord] = []

  def save(self, step: int, agent, meta: dict, rows: list[TrialRecord]) -> None:
    self.rows.extend(rows)

  def restore(self, agent, trials_of: Callable[[dict], int]) -> Optional[dict]:
    return None

  def export_best(self, genotype: dict) -> None:
    pass

  def rows_of(self, genotype_id: str) -> list[TrialRecord]:
    return [r for r in self.rows if r.genotype_id == genotype_id and r.status == 'keep']

  def close(self) -> None:
    pass


def init_policy(agent, source: str) -> None:
  """Starts the policy of `agent` (a learning agent: one with `load_policy`) from
  `source`: a shipped policy folder (policies.py) or the workdir of an earlier search
  (its newest checkpoint's policy)."""
  from autoresearch import policies   # JAX-side; only learning agents get here
  folder = policies.resolve(source)
  if policies.is_policy(folder):
    agent.load_policy(policies.load(folder, agent))
    logging.info('policy initialised from %s', folder)
    return
  other = checkpointing.Checkpointer(os.path.join(folder, 'checkpoints'))
  restored = other.restore({'agent': agent.state_dict()[0]})
  if restored is None:
    raise checkpointing.CheckpointError(
        f'agent.init_from: {source} is neither a policy folder nor a search workdir with a '
        'checkpoint')
  agent.load_policy(restored[1]['agent'])
  logging.info('policy initialised from %s (checkpoint %d)', folder, restored[0])

"""The search's memory in its workdir: the checkpoint first, the ledger second.

    store = Store(workdir, config)         # locks the workdir (lock.py)
    restored = store.restore(agent)        # None for a new search; reconciles the ledger
    store.save(step, agent, meta, rows)    # checkpoint (with the rows), then the ledger
    store.close()                          # releases the lock

The workdir (local or gs://; every file through `workdir_io`) has one writer: the Store
holds its lock from start to close. After every step (one ledger row, or two for a
re-run) the whole state is checkpointed *first*, with that step's rows inside it, and
only then are the rows appended to the ledger (trials.jsonl, then results.tsv). So the
ledger never holds a row the checkpoint lacks, and at start-up (`reconcile.py`):
- ledger rows < checkpoint counter: the missing rows come from the checkpoint;
- ledger rows > checkpoint counter, only after falling back from an unreadable newest
  checkpoint, which accounts for them: they move to trials.orphaned.jsonl and are
  re-run, and the unreadable step moves to checkpoints.unreadable/;
- results.tsv is rebuilt from trials.jsonl when their row counts differ;
- a ledger nothing explains (trial numbers twice or missing, rows newer than every
  checkpoint) is refused naming the rows, and left as it is.
What was done is logged in one line. A kill at any moment thus loses at most the trial
in flight and duplicates none. A failed write (a full disk) raises WorkdirError with one
line; the last complete checkpoint stays. A checkpoint written by another config (the
fingerprint), agent or checkpoint format is refused with what differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Optional, Protocol

from absl import logging

from autoresearch.data import corpora
from autoresearch.runtime import faults
from autoresearch.space import genotype as genotype_lib
from autoresearch.workdir import (checkpointing, io as workdir_io, ledger as ledger_lib,
                                  lock as workdir_lock, reconcile)
from autoresearch.workdir.records import TrialRecord


# 2: raw outcome history (api.HistoryEntry) and typed ledger rows (records.py).
CHECKPOINT_FORMAT = 2
def config_fingerprint(config) -> dict[str, str]:
  """Hashes of the parts of the config a search's results depend on. `max_trials`,
  `baseline_cache` and the checkpoint settings may change between runs;
  `agent.init_from` only matters at the start."""
  def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
  search = {k: v for k, v in config.search.to_dict().items()
            if k not in ('max_trials', 'baseline_cache')}
  agent = {k: v for k, v in config.agent.to_dict().items() if k != 'init_from'}
  return {
      'data': digest([config.data.to_dict(), corpora.SPLIT_VERSION]),
      'trial': digest(config.trial.to_dict()),
      'baseline genotype': digest(genotype_lib.from_config(config)),
      'search space': digest([(g.name, g.values) for g in genotype_lib.GENES]),
      'search': digest(search),
      'agent': digest(agent),
  }


def _trials(rows: list[TrialRecord]) -> str:
  first, last = rows[0].trial, rows[-1].trial
  return f'trial {first}' if first == last else f'trials {first}..{last}'


class SearchStore(Protocol):
  """What the search keeps of itself: `Store` (a workdir) or `MemoryStore` (nothing
  written). `persistent`: whether anything outlives the process (the workdir's
  report, plot and TensorBoard are written only then)."""
  workdir: str
  persistent: bool

  def save(self, step: int, agent, meta: dict, rows: list[TrialRecord]) -> None: ...

  def restore(self, agent, trials_of: Callable[[dict], int]) -> Optional[dict]: ...

  def export_best(self, genotype: dict) -> None: ...

  def rows_of(self, genotype_id: str) -> list[TrialRecord]: ...

  def close(self) -> None: ...


class Store:
  """Checkpoints and ledger of one workdir (see the module docstring)."""

  persistent = True

  def __init__(self, workdir: str, config):
    self.workdir, self.config = workdir, config
    self.root = workdir_io.path(workdir)
    workdir_io.makedirs(self.root)
    self.lock = workdir_lock.acquire(workdir)   # before anything else is read or written
    try:
      self.ledger = ledger_lib.Ledger(workdir)
      self.fingerprint = config_fingerprint(config)
      self.checkpointer = checkpointing.Checkpointer(str(self.root / 'checkpoints'),
                                                     keep=config.checkpoint.keep)
    except BaseException:
      self.lock.release()
      raise

  def save(self, step: int, agent, meta: dict, rows: list[TrialRecord]) -> None:
    """Checkpoints the agent and `meta` (with this step's rows), then appends the rows
    to the ledger. CheckpointError when the checkpoint cannot be written (the previous
    one stays), WorkdirError when the ledger cannot (the checkpoint holds the rows: the
    next start writes them)."""
    arrays, agent_meta = agent.state_dict()
    meta = dict(meta, format=CHECKPOINT_FORMAT, agent_kind=agent.kind, agent=agent_meta,
                fingerprint=self.fingerprint, pending_rows=[r.to_dict() for r in rows])
    faults.point('mid-checkpoint')
    self.checkpointer.save(step, {'agent': arrays}, meta)
    faults.point('after-checkpoint')
    for row in rows:
      try:
        faults.point('ledger-write')
        self.ledger.append(row)
      except OSError as e:
        raise workdir_io.WorkdirError(
            f'could not write trial {row.trial} to the ledger in {self.workdir}: '
            f'{workdir_io.reason(e)} (checkpoint {step} holds it; the next start writes '
            'it)') from e

  def restore(self, agent, trials_of: Callable[[dict], int]) -> Optional[dict]:
    """The saved meta (the agent restored in place), or None for a new search. Either
    way the ledger is made to hold exactly the checkpoint's rows; `trials_of(meta)` is
    the number of rows the checkpoint accounts for."""
    restored = self.checkpointer.restore({'agent': agent.state_dict()[0]})
    if restored is None:
      self._reconcile(0, 0, [])
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
    self._reconcile(step, trials_of(meta),
                    [TrialRecord.from_dict(r) for r in meta['pending_rows']])
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

  def _reconcile(self, step: int, trials: int, checkpoint_rows: list[TrialRecord]) -> None:
    """Makes the ledger hold exactly the checkpoint's trials 1..N, or refuses a ledger
    that no checkpoint explains (reconcile.py); logs what it did in one line."""
    unreadable = self.checkpointer.unreadable
    try:
      plan = reconcile.plan(self.ledger.read_records(), trials, checkpoint_rows, unreadable)
    except ValueError as e:   # a row of another schema, or a line that is not JSON
      raise workdir_io.WorkdirError(f'trials.jsonl in {self.workdir}: {e}') from e
    done = []
    try:
      if plan.orphaned:
        for record in plan.orphaned:
          workdir_io.append_line(self.root / 'trials.orphaned.jsonl',
                                 json.dumps(record.to_dict(), allow_nan=True))
        done.append(f'ledger {_trials(plan.orphaned)} (of unreadable checkpoint '
                    f'{plan.explained_by}) moved to trials.orphaned.jsonl, to run again')
      rewritten = self.ledger.rewrite(plan.keep)   # drops a torn line; rebuilds results.tsv
      done += [d for d in rewritten if not (plan.orphaned and d == 'trials.jsonl rewritten')]
      for row in plan.append:
        self.ledger.append(row)
      if plan.append:
        done.append(f'{_trials(plan.append)} written to the ledger from the checkpoint')
      for skipped in unreadable:   # after the ledger: until then they explain its rows
        where = self.checkpointer.set_aside(skipped, str(self.root / 'checkpoints.unreadable'))
        done.append(f'unreadable checkpoint {skipped} {where}')
    except OSError as e:
      raise workdir_io.WorkdirError(f'could not reconcile the ledger in {self.workdir}: '
                                    f'{workdir_io.reason(e)}') from e
    if step:
      done = done or ['the ledger matches']
      line = (f'{self.workdir}: resumed from checkpoint {step} ({trials} trials); '
              + '; '.join(done))
    else:
      line = f'{self.workdir}: a new search' + ''.join(f'; {d}' for d in done)
    (logging.warning if plan.orphaned or unreadable else logging.info)('%s', line)

  def export_best(self, genotype: dict) -> None:
    """workdir/best_genotype.json: the best genotype, for --mode=train --genotype=..."""
    try:
      workdir_io.write_atomic(self.root / 'best_genotype.json',
                              json.dumps(genotype, indent=1, sort_keys=True))
    except OSError as e:
      raise workdir_io.WorkdirError(f'could not write best_genotype.json in {self.workdir}: '
                                    f'{workdir_io.reason(e)}') from e

  def rows_of(self, genotype_id: str) -> list[TrialRecord]:
    """The kept ledger rows of one genotype (the best's runs, after a resume)."""
    return [r for r in self.ledger.read_records()
            if r.genotype_id == genotype_id and r.status == 'keep']

  def close(self) -> None:
    """Closes the checkpoints and releases the workdir's lock (idempotent)."""
    checkpointer, self.checkpointer = self.checkpointer, None
    try:
      if checkpointer is not None:
        checkpointer.close()
    finally:
      self.lock.release()


class MemoryStore:
  """The `Store` interface with nothing written: a search held in memory (on synthetic
  landscapes: pretraining, tests, benchmarks). Its ledger rows are kept in `rows`;
  `workdir` only holds what an agent keeps there (Optuna's study), if anything."""

  persistent = False

  def __init__(self, workdir: str = ''):
    self.workdir = workdir
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

"""Baseline runs kept across searches, so a new search of the same setting starts with its
first agent trial instead of `noise_repeats` trainings of the baseline.

    cache = BaselineCache.for_search(config, corpus, trial_config, devices_per_trial)
    result = cache.get(seed)          # a TrialResult, or None
    cache.put(seed, result)

A run is reused only where it would be the same run: the key hashes everything the
baseline's val_bpb depends on — the data config and split version, the corpus
fingerprint, the trial config (all of it but the seed, which names the entry), the
baseline genotype, the source of the model and trainer (`models/` and `autoresearch/`),
JAX's version, the backend, the device kind and the devices per trial. Under
`trial.clock='flops'` a reused run is the very run a fresh one would be; under 'wall' it
is one more draw of the same distribution on the same kind of device.

`search.baseline_cache`: '' = this user's cache folder (`workdir_io.local_cache_dir`),
'none' = off, else a folder (local or gs://). An entry is one JSON file per seed,
written whole in one step; an entry that cannot be read is ignored with a warning and
trained again (and overwritten). Only the production runner's results are kept; with
several processes the cache is off (each host would read its own disk).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Optional

import jax
from absl import logging

from autoresearch import PROJECT_FOLDER
from autoresearch.data import corpora
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.results import TrialResult
from autoresearch.workdir import io as workdir_io


OFF = 'none'
_PACKAGES = ('models', 'autoresearch')   # source the baseline's result depends on


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
  """sha256 of the project's Python source in `_PACKAGES` (a code change is a new key)."""
  h = hashlib.sha256()
  for package in _PACKAGES:
    for path in sorted(pathlib.Path(PROJECT_FOLDER, package).rglob('*.py')):
      h.update(path.relative_to(PROJECT_FOLDER).as_posix().encode())
      h.update(path.read_bytes())
  return h.hexdigest()


def cache_key(config, corpus: corpora.Corpus, trial_config: TrialConfig,
              devices_per_trial: int) -> str:
  """The hex digest naming the entries of one setting (see the module docstring)."""
  trial_fields = {k: v for k, v in dataclasses.asdict(trial_config).items() if k != 'seed'}
  parts = {
      'data': [config.data.to_dict(), corpora.SPLIT_VERSION, corpus.fingerprint],
      'trial': trial_fields,
      'baseline': genotype_lib.from_config(config),
      'source': source_digest(),
      'jax': [jax.__version__, jax.default_backend(), jax.devices()[0].device_kind,
              devices_per_trial],
  }
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class BaselineCache:
  """The entries of one key under one folder; `enabled` False: get finds nothing and
  put keeps nothing."""

  def __init__(self, folder: Optional[str], key: str = ''):
    self.enabled = folder is not None
    self.folder = workdir_io.path(folder, key[:24]) if self.enabled else None

  @classmethod
  def for_search(cls, config, corpus: corpora.Corpus, trial_config: TrialConfig,
                 devices_per_trial: int) -> 'BaselineCache':
    """The cache `config.search.baseline_cache` names (off for several processes)."""
    setting = config.search.baseline_cache
    if setting == OFF or jax.process_count() > 1:
      return cls(None)
    folder = setting or workdir_io.local_cache_dir('baselines')
    return cls(folder, cache_key(config, corpus, trial_config, devices_per_trial))

  def _file(self, seed: int):
    return self.folder / f'seed_{seed}.json'

  def get(self, seed: int) -> Optional[TrialResult]:
    """The kept 'ok' run of the baseline with `seed`, or None."""
    if not self.enabled:
      return None
    file = self._file(seed)
    try:
      if not file.exists():
        return None
      result = TrialResult(**json.loads(file.read_text()))
      if result.status != 'ok' or result.val_bpb is None:
        raise ValueError(f'status {result.status!r}, val_bpb {result.val_bpb}')
      return result
    except (OSError, ValueError, TypeError) as e:   # unreadable, not JSON, wrong fields
      logging.warning('baseline cache: ignoring %s (%s); training that run again',
                      file, workdir_io.reason(e) if isinstance(e, OSError) else e)
      return None

  def put(self, seed: int, result: TrialResult) -> None:
    """Keeps an 'ok' run; a failure to write is a warning (the search goes on)."""
    if not self.enabled or result.status != 'ok':
      return
    try:
      workdir_io.makedirs(self.folder)
      workdir_io.write_atomic(self._file(seed), json.dumps(result.to_dict()))
    except (OSError, workdir_io.WorkdirError) as e:
      logging.warning('baseline cache: could not keep the run of seed %d in %s: %s',
                      seed, self.folder, workdir_io.reason(e))

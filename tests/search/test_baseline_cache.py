"""Baseline runs reused by the next search of the same setting, and only of that setting."""

import dataclasses
import json

import pytest

from autoresearch.data import corpora
from autoresearch.search import baseline_cache, loop
from autoresearch.search.executor import Executor
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.results import TrialResult
from autoresearch.workdir import ledger as ledger_lib
from configs import tiny


def _config(cache_folder, max_trials=2):
  config = tiny.get_config()
  config.trial.budget_seconds = 0.5
  config.trial.clock = 'flops'      # a fresh run would be the very same run
  config.search.noise_repeats = 2
  config.search.max_trials = max_trials
  config.search.baseline_cache = str(cache_folder)
  config.agent.kind = 'random'
  config.evaluator.enabled = False
  config.output.progress_bar = False
  return config


def _counting_runs(monkeypatch):
  """The jobs every Executor.run is given, in order."""
  jobs, real_run = [], Executor.run

  def run(self, batch):
    jobs.extend(batch)
    return real_run(self, batch)
  monkeypatch.setattr(Executor, 'run', run)
  return jobs


def test_a_second_search_of_the_same_setting_reuses_the_baseline_runs(tmp_path, monkeypatch):
  jobs = _counting_runs(monkeypatch)
  loop.run(_config(tmp_path / 'cache'), str(tmp_path / 'a'))
  assert len(jobs) == 2
  first = ledger_lib.read_records(str(tmp_path / 'a' / 'trials.jsonl'))
  loop.run(_config(tmp_path / 'cache', max_trials=3), str(tmp_path / 'b'))
  second = ledger_lib.read_records(str(tmp_path / 'b' / 'trials.jsonl'))
  assert len(jobs) == 3, 'the second search trained the baseline again'
  assert [r.description for r in second[:2]] == [
      'baseline (noise run 1/2, reused)', 'baseline (noise run 2/2, reused)']
  assert [r.val_bpb for r in second[:2]] == [r.val_bpb for r in first]
  assert second[0].sigma == first[0].sigma and second[2].agent == 'random'
  assert jobs[2].genotype != first[0].genotype   # the third job is the agent's edit


@pytest.mark.slow
def test_another_setting_or_a_corrupt_entry_is_trained_again(tmp_path, monkeypatch):
  jobs = _counting_runs(monkeypatch)
  cache = tmp_path / 'cache'
  loop.run(_config(cache), str(tmp_path / 'a'))
  entries = sorted(cache.glob('*/seed_*.json'))
  assert len(entries) == 2
  entries[0].write_text('{"genotype_id": "trunc')       # a half-written or damaged entry
  loop.run(_config(cache), str(tmp_path / 'b'))
  rows = ledger_lib.read_records(str(tmp_path / 'b' / 'trials.jsonl'))
  assert [r.description.endswith('reused)') for r in rows] == [False, True]
  assert len(jobs) == 3 and json.loads(entries[0].read_text())['status'] == 'ok'  # rewritten
  other = _config(cache)
  other.trial.val_bytes = 4_096   # what is scored changes the result: a new key
  loop.run(other, str(tmp_path / 'c'))
  assert len(jobs) == 5 and len(list(cache.glob('*/seed_*.json'))) == 4


def test_the_key_names_what_the_result_depends_on_and_not_the_seed_or_search():
  config = _config('unused')
  corpus = corpora.corpus_from_config(config)
  trial_config = TrialConfig.from_config(config)
  key = baseline_cache.cache_key(config, corpus, trial_config, 1)
  reseeded = dataclasses.replace(trial_config, seed=trial_config.seed + 7)
  assert baseline_cache.cache_key(config, corpus, reseeded, 1) == key   # the seed names the entry
  config.agent.kind = 'tpe'
  assert baseline_cache.cache_key(config, corpus, trial_config, 1) == key
  longer = dataclasses.replace(trial_config, budget_seconds=1.0)
  assert baseline_cache.cache_key(config, corpus, longer, 1) != key
  assert baseline_cache.cache_key(config, corpus, trial_config, 2) != key
  config.genotype.d_model = 64
  assert baseline_cache.cache_key(config, corpus, trial_config, 1) != key


def test_a_stand_in_runner_keeps_nothing_and_off_means_off(tmp_path):
  def fake_run(genotype, corpus, cfg, watch=None, **_):
    return TrialResult(genotype_id='x', genotype=genotype, status='ok', val_bpb=3.0)
  loop.Search.open(_config(tmp_path / 'cache'), str(tmp_path / 'a'), run_trial=fake_run).run()
  assert not (tmp_path / 'cache').exists()
  off = baseline_cache.BaselineCache(None)
  off.put(0, TrialResult(genotype_id='x', genotype={}, status='ok', val_bpb=3.0))
  assert off.get(0) is None

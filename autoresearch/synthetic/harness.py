"""Whole searches on a synthetic landscape: the real search loop, held in memory, with
a landscape standing in for training (pretraining, tests, benchmarks).

    config = harness.search_config(config, seed, max_trials)
    s = harness.search_on(landscape, config)      # s.state, s.agent, s.store.rows
"""

from __future__ import annotations

import contextlib
import io

from autoresearch.agents import factory
from autoresearch.data import corpora
from autoresearch.search import loop
from autoresearch.synthetic import landscape as landscape_lib
from autoresearch.workdir import store


def search_config(config, seed: int, max_trials: int):
  """A copy of `config` for a search of `max_trials` trials on a landscape: seed `seed`,
  no progress bar, no self-evaluator (a landscape trial has no loss curve to watch)."""
  config = config.copy_and_resolve_references()
  config.search.seed, config.search.max_trials = seed, max_trials
  config.output.progress_bar = False
  config.evaluator.enabled = False
  return config


def search_on(landscape: landscape_lib.Landscape, config, corpus=None, workdir: str = '',
              agent=None, quiet: bool = True):
  """The real search loop (`loop.Search`) on `landscape`, held in memory (nothing is
  written; `workdir` only for agents that keep files, e.g. Optuna's study), run to
  `config.search.max_trials`. `agent`, when given, acts instead of the one the config
  names, as it is (the config's `agent.init_from` is not applied to it); `corpus`, when
  given, saves loading the config's. `quiet` keeps the per-trial lines off stdout.
  Returns the Search (its `state`, `agent` and `store.rows`)."""
  if agent is None:
    agent = factory.make(config.agent, config.search.seed, workdir)
  else:
    config = config.copy_and_resolve_references()
    config.agent.init_from = 'none'
  corpus = corpus if corpus is not None else corpora.corpus_from_config(config)
  run_trial = landscape_lib.make_runner(landscape, config.trial.max_params)
  s = loop.Search(config, store.MemoryStore(workdir), corpus, agent, run_trial)
  with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
    s.run()
  return s

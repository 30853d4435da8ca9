"""Strict JAX for every test (no implicit rank promotion), and the fixtures several
test modules share."""

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture(scope='session')
def stdlib_corpus():
  """The embedded default corpus, loaded once for every module that reads it."""
  from autoresearch.data import corpora
  return corpora.load_corpus('pystdlib')


@pytest.fixture(autouse=True)
def fresh_programs():
  """Each test compiles its own programs: one that patches what a step computes must not
  be handed another test's compiled step (autoresearch/trial/programs.py)."""
  from autoresearch.trial import programs
  programs.CACHE.clear()


@pytest.fixture(autouse=True, scope='session')
def corpus_once_per_setting():
  """Every search a test runs loads its corpus from the config (about 1 s: the splits'
  near-duplicate clustering); one load per data setting serves the whole session. A
  setting that fails to load is not cached, so its error is raised every time."""
  import json
  from autoresearch.data import corpora
  original, loaded = corpora.corpus_from_config, {}

  def corpus_from_config(config):
    key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if key not in loaded:
      loaded[key] = original(config)
    return loaded[key]
  corpora.corpus_from_config = corpus_from_config
  yield
  corpora.corpus_from_config = original

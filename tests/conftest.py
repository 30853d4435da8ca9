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
  from autoresearch import data
  return data.load_corpus('pystdlib')

"""Strict JAX for every test: no implicit rank promotion."""

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
jax.config.update('jax_numpy_rank_promotion', 'raise')

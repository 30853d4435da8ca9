"""JAX's persistent compilation cache of a workdir: its size is checked, and past its cap
the oldest entries go."""

import os
import subprocess
import sys

import pytest

from autoresearch.trial import runner
from autoresearch.trial.config import ConfigError
from tests.helpers import ROOT


def test_a_negative_compilation_cache_size_is_refused(tmp_path):
  with pytest.raises(ConfigError, match='compilation_cache_mb=-1'):
    runner.enable_compilation_cache(str(tmp_path), -1)


_COMPILE_EIGHT = '''
import os, sys
import jax, jax.numpy as jnp
from autoresearch.trial import runner
folder = sys.argv[1]
runner.enable_compilation_cache(folder, float(sys.argv[2]))
x = jnp.ones((32, 32))
written = []   # cache entries in the order they were written
for k in range(8):
  jax.jit(lambda x, k=k: jnp.tanh(x @ x.T + k) * (k + 1))(x).block_until_ready()
  written += sorted(n for n in os.listdir(folder) if n.endswith('-cache') and n not in written)
print(' '.join(written))
'''


def _cache(folder, max_mb):
  """(entries in the order written, {entry: bytes} of those left) after `_COMPILE_EIGHT`."""
  proc = subprocess.run([sys.executable, '-c', _COMPILE_EIGHT, str(folder), str(max_mb)],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  left = {n: os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
          if n.endswith('-cache')}
  return proc.stdout.split(), left


@pytest.mark.slow
def test_the_compilation_cache_keeps_the_newest_entries_within_its_cap(tmp_path):
  written, left = _cache(tmp_path / 'big', 100.0)
  assert len(written) >= 8 and sorted(written) == sorted(left)   # nothing pruned under 100 MB
  cap = sum(left.values()) / 2   # bytes: room for about half of them
  written, left = _cache(tmp_path / 'capped', cap / 2**20)
  assert len(written) >= 8 and 0 < len(left) < len(written)
  assert sum(left.values()) <= cap
  assert sorted(left) == sorted(written[-len(left):])   # the oldest were the ones pruned

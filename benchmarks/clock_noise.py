"""Does a trial's val_bpb depend on the machine's load? The wall clock against a
reproducible clock (`trial.clock`: 'modelled', the search-quality benchmark's, or
'flops').

    python benchmarks/clock_noise.py [--clock=modelled] [--budget_seconds=20] [--seeds=4]
        [--burners=0] [--config=configs/default.py]

Trains the config's baseline genotype (the default: configs/default.py) for
`--budget_seconds` under each clock, with seeds 0..`--seeds`-1, once on the machine as
it is ("idle") and once while `--burners` other processes (0: one per core) each keep a
core busy with single-threaded numpy matmuls ("loaded"). Seeds are interleaved (seed 0
idle, seed 0 loaded, seed 1 idle, ...) so that slow drifts of the machine hit both
conditions alike. Each trial prints a line with its steps, training seconds on its
clock, the machine's seconds of training, and the cores other processes (burners
included) kept busy meanwhile (from /proc, Linux only).

Per clock: the idle seed-to-seed σ of val_bpb, and the shift loaded - idle of the mean
val_bpb, in bits per byte and in units of that σ. `idle_wall_flops_per_second` is the
model FLOP/s the idle wall-clock trials trained at: the rate to compare with
`trial.reference_flops_per_second`. The last line is `loaded_shift_sigmas: X`, the
reproducible clock's |shift| in idle σ (goal: at most 1).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from autoresearch.trial.results import TrialResult  # noqa: E402
from benchmarks.timing import ForeignLoad, cores, define_config_flag, print_figure  # noqa: E402
from models import gpt  # noqa: E402

FLAGS = define_config_flag()
flags.DEFINE_float('budget_seconds', 20.0, 'Training seconds of every trial, on its clock.')
flags.DEFINE_integer('seeds', 4, 'Seeds per (clock, load) condition.')
flags.DEFINE_integer('burners', 0, 'Competing busy processes when loaded; 0: one per core.')
flags.DEFINE_enum('clock', 'modelled', ['modelled', 'flops'], 'The reproducible clock.')

# One core's worth of work: single-threaded BLAS, matmuls forever (ended by the benchmark).
_BURN = ('import numpy as np\n'
         'a = np.random.default_rng(0).standard_normal((384, 384), dtype=np.float32)\n'
         'while True:\n'
         '  a = np.tanh(a @ a)\n')
_SINGLE_THREAD = {name: '1' for name in (
    'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMEXPR_NUM_THREADS')}


class Burners:
  """`n` processes each keeping a core busy, for as long as the `with` block runs."""

  def __init__(self, n: int):
    self.n, self.procs = n, []

  def __enter__(self):
    env = dict(os.environ, **_SINGLE_THREAD)
    self.procs = [subprocess.Popen([sys.executable, '-c', _BURN], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(self.n)]
    time.sleep(1.0)  # numpy imported, every burner spinning
    return self

  def __exit__(self, *exc):
    for proc in self.procs:
      proc.kill()
      proc.wait()


def _trial(genotype, corpus, cfg: TrialConfig, load: str) -> TrialResult:
  foreign = ForeignLoad()
  result = runner.run(genotype, corpus, cfg)
  if result.status != 'ok':
    raise RuntimeError(f'{cfg.clock} {load} seed {cfg.seed}: {result.status}: {result.reason}')
  busy = foreign.cores()
  busy_text = 'n/a' if busy is None else f'{busy:.2f}'
  print(f'trial: clock={cfg.clock} load={load} seed={cfg.seed} val_bpb={result.val_bpb:.6f} '
        f'steps={result.steps} train_seconds={result.train_seconds:.2f} '
        f'wall_train_seconds={result.wall_train_seconds:.2f} '
        f'other_busy_cores={busy_text}', flush=True)
  return result


def _shift(clock: str, idle: list, loaded: list) -> float:
  """Prints the clock's figures; returns |loaded - idle| mean val_bpb in idle σ."""
  sigma = statistics.stdev(r.val_bpb for r in idle)
  shift = statistics.mean(r.val_bpb for r in loaded) - statistics.mean(r.val_bpb for r in idle)
  print_figure(f'{clock}_idle_mean_bpb', f'{statistics.mean(r.val_bpb for r in idle):.6f}')
  print_figure(f'{clock}_loaded_mean_bpb', f'{statistics.mean(r.val_bpb for r in loaded):.6f}')
  print_figure(f'{clock}_idle_sigma_bpb', f'{sigma:.6f}')
  print_figure(f'{clock}_steps_idle_loaded', f'{statistics.mean(r.steps for r in idle):.1f} '
               f'{statistics.mean(r.steps for r in loaded):.1f}')
  print_figure(f'{clock}_shift_bpb', f'{shift:+.6f}')
  signed = shift / sigma if sigma > 0 else (0.0 if shift == 0 else math.copysign(math.inf, shift))
  print_figure(f'{clock}_shift_sigmas', f'{signed:+.3f}')
  return abs(signed)


def main(argv):
  del argv
  if FLAGS.seeds < 2:
    raise app.UsageError('--seeds must be at least 2 (the idle σ needs two)')
  config = FLAGS.config
  config.trial.budget_seconds = FLAGS.budget_seconds
  base = TrialConfig.from_config(config)
  runner.enable_compilation_cache(tempfile.mkdtemp(prefix='clock_noise_cache_'),
                                  config.compilation_cache_mb)
  corpus = corpora.corpus_from_config(config)
  genotype = genotype_lib.from_config(config)
  step_flops = (gpt.flops_per_token(genotype_lib.model_config(genotype, base.compute_dtype)) *
                genotype['batch_size'] * genotype['seq_len'])
  burners = FLAGS.burners or cores()
  print_figure('setup', f'budget {base.budget_seconds:g} s, {FLAGS.seeds} seeds, {burners} '
               f'burners on {cores()} cores, reference '
               f'{base.reference_flops_per_second:.4g} FLOP/s, {step_flops:.4g} FLOPs a step')
  clocks = ('wall', FLAGS.clock)
  runs = {(clock, load): [] for clock in clocks for load in ('idle', 'loaded')}
  for seed in range(FLAGS.seeds):
    for load in ('idle', 'loaded'):
      with Burners(burners if load == 'loaded' else 0):
        for clock in clocks:
          cfg = dataclasses.replace(base, clock=clock, seed=seed)
          runs[clock, load].append(_trial(genotype, corpus, cfg, load))
  idle_rate = statistics.mean(r.steps * step_flops / r.wall_train_seconds
                              for r in runs['wall', 'idle'])
  print_figure('idle_wall_flops_per_second', f'{idle_rate:.4g}')
  _shift('wall', runs['wall', 'idle'], runs['wall', 'loaded'])
  sigmas = _shift(FLAGS.clock, runs[FLAGS.clock, 'idle'], runs[FLAGS.clock, 'loaded'])
  print_figure('loaded_shift_sigmas', f'{sigmas:.3f}')


if __name__ == '__main__':
  app.run(main)

"""Training-step throughput of the baseline genotype: JAX (ours) against PyTorch, and MFU.

    python benchmarks/step_throughput.py [--seconds=20] [--config=configs/default.py]
        [--rounds=4] [--attentions=explicit,xla] [--inline] [--config.genotype.d_model=192 ...]

One run does, in order:

1. Measures the fp32 matmul ceiling of this machine with
   `autoresearch.hardware.measure_matmul_flops('float32')` (a large jitted matmul;
   the same ceiling `trial` divides by on CPUs), at the start and again before each
   round; the best sample is the ceiling.
2. Builds the config's baseline genotype with `runner.build`, the very function
   `runner.run` compiles a trial with (on one device), and reports its compile seconds
   (the train and eval steps, as a trial's compile_seconds), with the attention kernel
   `trial.attention` names ('auto': the backend's, `attention_kernel:`). With
   `--attentions`, the same genotype also with each other kernel listed, timed in the
   same rounds, so that kernels compare within one run on a shared machine
   (`attention_<kind>_vs_<auto's kind>:`, tokens/s over tokens/s).
3. Where PyTorch can be imported (it is not a dependency of the project), builds the
   same model in PyTorch (token embedding, RMSNorm with scale, causal attention with
   RoPE at the same head count and head dim through `F.scaled_dot_product_attention`,
   tanh-GELU MLP of the same ratio, untied head; AdamW with the same per-group
   learning rates, betas, eps and weight decay, global grad-norm clip, the same LR
   schedule). PyTorch runs eagerly on the CPU with `torch.set_num_threads(cores)`, no
   `torch.compile`.
4. Times both. The machines this runs on are shared and noisy (other processes come
   and go for tens of seconds), so the timing is interleaved: `--rounds` rounds per
   framework, alternating JAX, PyTorch, JAX, PyTorch, ..., each round
   `--seconds / --rounds` long after a short untimed warm-up of its own (which also
   lets the other framework's worker threads go idle). Each framework's figure is its
   best round, the one least disturbed. Each round also reports how many cores other
   processes kept busy meanwhile (from /proc, Linux only): a figure well above 0 means
   that round was measured on a busy machine. Every loop follows the trial's dispatch
   pattern (step t is dispatched, then step t-1's loss is read) on batches of
   `windows.sample_batch` from the pystdlib corpus: the JAX loops take them from the
   trial's prefetch thread (`autoresearch.prefetch`, sampled and placed ahead), the
   PyTorch loop and, with `--inline`, a JAX loop as the trial ran before the prefetch
   thread (`jax_inline`) sample each inside the loop.

`host_ms_per_step` is the host's time per step outside the device computation: the
loop's time less the time it waited for a loss (a step's result), over the steps; a
host that keeps ahead of the device shows a figure well under `jax_step_ms`.
`host_batch_ms` is what sampling and placing one batch costs when done inline.

Every figure is printed as a `key: value` line; the last line is `mfu: X`, the JAX
step's model FLOP/s (`models.gpt.flops_per_token` x tokens/s, matmuls only) over the
measured matmul ceiling, as a fraction. `vs_pytorch` is JAX tokens/s over PyTorch
tokens/s (above 1: ours is faster).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.data import windows  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import hardware  # noqa: E402
from autoresearch.trial import placement, prefetch  # noqa: E402
from autoresearch.trial import runner as trial_runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks.timing import ForeignLoad, cores, define_config_flag, print_figure  # noqa: E402
from benchmarks.torch_twin import TorchStep, torch, torch_unsupported  # noqa: E402
from models import gpt  # noqa: E402

FLAGS = define_config_flag()
flags.DEFINE_float('seconds', 20.0, 'Timed seconds per framework (split over --rounds).')
flags.DEFINE_integer('rounds', 4, 'Alternating timed rounds per framework; the best counts.')
flags.DEFINE_float('warmup_seconds', 1.0, 'Untimed warm-up before each round.')
flags.DEFINE_list('attentions', [], 'Other attention kernels to time beside the config\'s '
                  '(explicit, xla, cudnn), in the same rounds.')
flags.DEFINE_bool('inline', False, 'Also time the JAX step with batches sampled inline '
                  '(the loop before the prefetch thread).')

_WARMUP_MIN_STEPS = 3
_QUIET_CORES = 0.25  # a round with other processes busier than this was disturbed


class _Clock:
  """Training-time progress shared by a framework's rounds (drives the LR schedule)."""

  def __init__(self, total_seconds: float):
    self.total, self.spent = total_seconds, 0.0

  def progress(self, round_elapsed: float) -> float:
    return (self.spent + round_elapsed) / self.total


def _timed_round(runner, next_batch, seconds, warmup_seconds, clock: _Clock):
  """Warm-up, then `seconds` of steps of `runner` (step(batch, progress) -> loss handle;
  read_loss waits for it) on batches from `next_batch()`. Returns (steps, elapsed
  seconds, last loss, cores other processes used, seconds spent waiting for losses)."""
  start = time.perf_counter()
  steps, loss = 0, None
  while steps < _WARMUP_MIN_STEPS or time.perf_counter() - start < warmup_seconds:
    loss = runner.step(next_batch(), clock.progress(0.0))
    steps += 1
  runner.read_loss(loss)

  load = ForeignLoad()
  clock_start = time.perf_counter()
  steps, pending, last, waited = 0, None, float('nan'), 0.0
  while True:
    elapsed = time.perf_counter() - clock_start
    if elapsed >= seconds:
      break
    loss = runner.step(next_batch(), clock.progress(elapsed))
    steps += 1
    if pending is not None:
      wait_start = time.perf_counter()
      last = runner.read_loss(pending)  # waits for step t-1 only
      waited += time.perf_counter() - wait_start
    pending = loss
  if pending is not None:
    wait_start = time.perf_counter()
    last = runner.read_loss(pending)
    waited += time.perf_counter() - wait_start
  elapsed = time.perf_counter() - clock_start
  clock.spent += elapsed
  return steps, elapsed, last, load.cores(), waited


def _matmul_ceiling(seconds: float) -> float:
  """FLOP/s of the fp32 (1024 x 1024) matmul `trial` takes as the CPU ceiling."""
  return hardware.measure_matmul_flops('float32', size=1024, seconds=seconds)


# ---------------------------------------------------------------------------
# JAX: the trial's own step.

class JaxStep:
  """The trial's compiled training step for `genotype`, built by `runner.build` as
  `runner.run` builds it, on one device (the ceiling MFU divides by is one device's),
  with its state. `prefetch`: batches come from the trial's prefetch thread, placed
  ahead; else each is sampled and placed in the loop."""

  def __init__(self, genotype, trial_cfg: TrialConfig, corpus: corpora.Corpus,
               prefetch_batches: bool = True):
    self.placement = placement.Placement.over(jax.devices()[:1], trial_cfg.fsdp)
    built = trial_runner.build(genotype_lib.make(genotype), corpus, trial_cfg, self.placement)
    # The trial's step takes the state as lists of leaves and the recipe's numbers as inputs.
    self.train_step, self.values = built.train_step, built.values
    self.params = jax.tree_util.tree_leaves(built.params)
    self.opt_state = jax.tree_util.tree_leaves(built.opt_state)
    self.compile_seconds = built.compile_seconds
    self.num_params = built.num_params
    self.model_cfg = built.model_cfg
    self.prefetch_batches = prefetch_batches

  def sample(self, rng, split, batch_size, seq_len):
    """One batch sampled and placed on the device, as the trial's loop makes it."""
    return self.placement.put(windows.sample_batch(rng, split, batch_size, seq_len),
                              self.placement.batch)

  def step(self, batch, progress):
    self.params, self.opt_state, loss = self.train_step(
        self.params, self.opt_state, batch, np.float32(progress), self.values)
    return loss

  @staticmethod
  def read_loss(loss) -> float:
    return float(loss)


def _feed(runner, seed, split, batch_size, seq_len):
  """(next_batch, close) for a round of `runner`: the trial's prefetch thread for a JAX
  step that prefetches, else sampling inline (placing too, for JAX)."""
  if isinstance(runner, JaxStep) and runner.prefetch_batches:
    batches = prefetch.Prefetcher(
        lambda rng: runner.sample(rng, split, batch_size, seq_len), seed)
    return batches.next, batches.close
  rng = np.random.default_rng(seed)
  sample = runner.sample if isinstance(runner, JaxStep) else windows.sample_batch
  return (lambda: sample(rng, split, batch_size, seq_len)), (lambda: None)


def _host_batch_ms(runner: JaxStep, split, batch_size, seq_len, n: int = 50) -> float:
  """Milliseconds to sample and place one batch inline (what the loop paid per step
  before batches were prefetched), the median of `n`."""
  rng, times = np.random.default_rng(0), []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(runner.sample(rng, split, batch_size, seq_len))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


# ---------------------------------------------------------------------------

def _jax_runners(genotype, trial_cfg, corpus):
  """[(name, JaxStep)]: 'jax' with the config's kernel ('auto' resolved), then
  'jax_inline' with --inline, then 'jax_<kind>' for each other kernel of --attentions."""
  main_step = JaxStep(genotype, trial_cfg, corpus)
  runners = [('jax', main_step)]
  if FLAGS.inline:
    runners.append(('jax_inline', JaxStep(genotype, trial_cfg, corpus, prefetch_batches=False)))
  for kind in [k for k in FLAGS.attentions if k != main_step.model_cfg.attention]:
    cfg = dataclasses.replace(trial_cfg, attention=kind)
    runners.append((f'jax_{kind}', JaxStep(genotype, cfg, corpus)))
  return runners


def _torch_runner(genotype, trial_cfg, n_cores):
  """[('torch', TorchStep)] where PyTorch can mirror the genotype, else []; and a note."""
  if torch is None:
    return [], 'PyTorch not importable'
  note = torch_unsupported(genotype, trial_cfg)
  if note:
    return [], f'genotype not mirrored in PyTorch ({note})'
  torch.set_num_threads(n_cores)
  torch_step = TorchStep(genotype, trial_cfg)
  print_figure('torch_version', torch.__version__)
  print_figure('torch_mode', f'eager (no torch.compile), CPU, {torch.get_num_threads()} '
               'threads, F.scaled_dot_product_attention(is_causal=True), AdamW(foreach=True)')
  print_figure('torch_params', torch_step.num_params)
  return [('torch', torch_step)], ''


def _rounds(runners, corpus, batch_size, seq_len, seed, ceilings):
  """Alternating timed rounds, each runner once a round; the ceiling is measured again
  before each round. Returns {name: dict(best tokens/s, steps, seconds, waited, quiet)}
  and whether the load on the machine could be read."""
  rounds = max(1, FLAGS.rounds)
  per_round = FLAGS.seconds / rounds
  stats = {name: dict(best=0.0, steps=0, seconds=0.0, waited=0.0, quiet=0) for name, _ in runners}
  clocks = {name: _Clock(FLAGS.seconds) for name, _ in runners}
  measured_load = False
  for r in range(rounds):
    ceilings.append(_matmul_ceiling(0.5))
    for name, runner in runners:
      next_batch, close = _feed(runner, seed + 1000 * r, corpus.train, batch_size, seq_len)
      try:
        steps, elapsed, loss, foreign, waited = _timed_round(
            runner, next_batch, per_round, FLAGS.warmup_seconds, clocks[name])
      finally:
        close()
      tps = steps * batch_size * seq_len / elapsed
      st = stats[name]
      st['best'] = max(st['best'], tps)
      st['steps'] += steps
      st['seconds'] += elapsed
      st['waited'] += waited
      busy = '' if foreign is None else f', other processes busy {foreign:.2f} cores'
      if foreign is not None:
        measured_load = True
        st['quiet'] += foreign < _QUIET_CORES
      print_figure(f'{name}_round{r + 1}', f'{tps:,.0f} tokens/s, '
                   f'{1e3 * elapsed / steps:.2f} ms/step, '
                   f'host {1e3 * (elapsed - waited) / steps:.2f} ms/step, {steps} steps in '
                   f'{elapsed:.1f} s, loss {loss:.3f}{busy}')
  if measured_load:
    # On a busy machine PyTorch's spinning OpenMP threads degrade far more than XLA's
    # pool, so vs_pytorch from busy rounds overstates ours.
    print_figure('quiet_rounds', ', '.join(f'{name} {stats[name]["quiet"]}/{rounds}'
                                           for name, _ in runners)
                 + f' (other processes below {_QUIET_CORES} cores; with none, rerun)')
  return stats


def _host_ms_per_step(st) -> float:
  """A runner's host milliseconds per step: its rounds' time less its waits for losses."""
  return 1e3 * (st['seconds'] - st['waited']) / st['steps']


def _report(stats, tokens_per_step, flops_per_token, ceiling, torch_note, auto_kind):
  """The summary lines; the last is `mfu:`."""
  for name, st in stats.items():
    if name == 'torch':
      continue
    print_figure(f'{name}_tokens_per_s', f'{st["best"]:.0f}')
    print_figure(f'{name}_host_ms_per_step', f'{_host_ms_per_step(st):.3f}')
    if name.startswith('jax_') and name != 'jax_inline':
      print_figure(f'attention_{name[4:]}_vs_{auto_kind}',
                   f'{st["best"] / stats["jax"]["best"]:.3f}')
  if 'jax_inline' in stats:
    print_figure('prefetch_vs_inline',
                 f'{stats["jax"]["best"] / stats["jax_inline"]["best"]:.3f}')
  jax_tps = stats['jax']['best']
  jax_flops = flops_per_token * jax_tps
  print_figure('jax_steps', stats['jax']['steps'])
  print_figure('jax_step_ms', f'{1e3 * tokens_per_step / jax_tps:.2f}')
  print_figure('jax_model_gflops', f'{jax_flops / 1e9:.2f}')
  if 'torch' in stats:
    torch_tps = stats['torch']['best']
    print_figure('torch_steps', stats['torch']['steps'])
    print_figure('torch_tokens_per_s', f'{torch_tps:.0f}')
    print_figure('torch_step_ms', f'{1e3 * tokens_per_step / torch_tps:.2f}')
    print_figure('torch_model_gflops', f'{flops_per_token * torch_tps / 1e9:.2f}')
    print_figure('torch_mfu', f'{flops_per_token * torch_tps / ceiling:.3f}')
    print_figure('vs_pytorch', f'{jax_tps / torch_tps:.3f}')
  else:
    print_figure('vs_pytorch', f'n/a ({torch_note})')
  print_figure('host_ms_per_step', f'{_host_ms_per_step(stats["jax"]):.3f}')
  mfu = jax_flops / ceiling
  print_figure('mfu', f'{mfu:.3f}' if math.isfinite(mfu) else 'nan')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  n_cores = cores()
  print_figure('device', f'{jax.default_backend()} {hardware.device_kind()} x{len(jax.devices())}')
  print_figure('cores', n_cores)
  print_figure('jax_version', jax.__version__)

  # 1. The matmul ceiling, before anything else loads the machine; measured again before
  # each round, the best sample counts (a busy machine only ever lowers it).
  ceilings = [_matmul_ceiling(1.0)]
  print_figure('matmul_gflops_fp32_start', f'{ceilings[0] / 1e9:.1f}')

  # 2. The baseline genotype and the trial's compiled step (one per kernel asked for).
  genotype = genotype_lib.from_config(config)
  genotype_lib.check(genotype)
  trial_cfg = TrialConfig.from_config(config)
  batch_size, seq_len = genotype['batch_size'], genotype['seq_len']
  corpus = corpora.load_corpus('pystdlib')
  runners = _jax_runners(genotype, trial_cfg, corpus)
  jax_step = runners[0][1]
  flops_per_token = gpt.flops_per_token(jax_step.model_cfg)
  print_figure('genotype_id', genotype_lib.genotype_id(genotype))
  print_figure('shape', f'batch {batch_size} x seq {seq_len}, {genotype["n_layers"]} layers, '
               f'd_model {genotype["d_model"]}, {genotype["n_heads"]} heads of '
               f'{jax_step.model_cfg.head_dim} ({genotype["n_kv_heads"]} kv), '
               f'{genotype["activation"]} x{genotype["mlp_ratio"]:g}, {genotype["optimizer"]}')
  print_figure('compute_dtype', trial_cfg.compute_dtype)
  print_figure('attention_kernel',
               f'{jax_step.model_cfg.attention} (trial.attention={trial_cfg.attention})')
  print_figure('params', jax_step.num_params)
  print_figure('tokens_per_step', batch_size * seq_len)
  print_figure('flops_per_token_M', f'{flops_per_token / 1e6:.3f}')
  for name, runner in runners:
    print_figure(f'{name}_compile_seconds', f'{runner.compile_seconds:.2f}')
  batch_ms = _host_batch_ms(jax_step, corpus.train, batch_size, seq_len)
  print_figure('host_batch_ms', f'{batch_ms:.3f}')

  # 3. The PyTorch twin, when it can be had; 4. alternating rounds, the best counts.
  torch_runners, torch_note = _torch_runner(genotype, trial_cfg, n_cores)
  stats = _rounds(runners + torch_runners, corpus, batch_size, seq_len, trial_cfg.seed, ceilings)
  ceiling = max(ceilings)
  print_figure('matmul_gflops_fp32_samples', ', '.join(f'{c / 1e9:.0f}' for c in ceilings))
  print_figure('matmul_gflops_fp32', f'{ceiling / 1e9:.1f}')
  _report(stats, batch_size * seq_len, flops_per_token, ceiling, torch_note,
          jax_step.model_cfg.attention)


if __name__ == '__main__':
  app.run(main)

"""Where a training step's time goes: the default genotype's step taken apart on this machine.

    python benchmarks/step_breakdown.py [--config=configs/default.py] [--rounds=5] [--steps=20]

Times, on the trial's own placement, in alternating rounds (the best round of each
counts: this machine is shared), each call waited for:
- `forward`: the loss alone;
- `forward_backward`: the loss and its gradient;
- `step`: the trial's compiled train step (`runner.build`): gradient, optimizer update,
  schedule, the parameters written back;
- `dispatch`: the host's seconds to hand the step to the device (the call returns
  before the step ends), what overlaps the device in a trial.
Beside them: the model's matmul FLOPs (`gpt.flops_per_token`, what MFU counts) at the
fp32 matmul ceiling measured here (`hardware.measure_matmul_flops`), and XLA's own
count of the step's (and the forward's) FLOPs and bytes accessed (`cost_analysis`): a
step that moves far more bytes than its matmuls need is bound by memory, not by them. Last line `step_mfu: X`, the
model's matmul FLOP/s over the ceiling.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from autoresearch.data import corpora, windows  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import hardware, runner, steps  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from autoresearch.trial.placement import Placement  # noqa: E402
from benchmarks import timing  # noqa: E402
from models import gpt  # noqa: E402

FLAGS = timing.define_config_flag()
flags.DEFINE_integer('rounds', 5, 'Alternating rounds of each measurement.')
flags.DEFINE_integer('steps', 20, 'Calls timed per measurement and round.')


def _seconds_per_call(fn, steps: int) -> float:
  jax.block_until_ready(fn())   # compiled and warm
  start = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / steps


def _measurements(built, batch):
  """name -> a call of that part of the step."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: gpt.GPT(built.model_cfg, nnx.Rngs(0))))
  params = jax.tree_util.tree_map(jnp.copy, built.params)   # the step donates its own
  progress = jnp.float32(0.5)
  loss = jax.jit(lambda p, b: steps._loss_fn(graphdef, p, b, progress)[0])
  grad = jax.jit(jax.value_and_grad(lambda p, b: steps._loss_fn(graphdef, p, b, progress)[0]))
  state = {'params': jax.tree_util.tree_leaves(built.params),
           'opt': jax.tree_util.tree_leaves(built.opt_state)}

  def step():
    state['params'], state['opt'], out = built.train_step(
        state['params'], state['opt'], batch, np.float32(0.5), built.values)
    return out

  def dispatch():
    start = time.perf_counter()
    out = step()
    state['dispatch'] = time.perf_counter() - start
    return out
  state['forward_cost'] = _cost(loss.lower(params, batch).compile())
  return {'forward': lambda: loss(params, batch), 'forward_backward': lambda: grad(params, batch),
          'step': step}, dispatch, state


def _cost(compiled) -> dict:
  """XLA's cost analysis of a compiled program (flops, bytes accessed, ...)."""
  cost = compiled.cost_analysis()
  return cost[0] if isinstance(cost, list) else cost


def main(argv):
  del argv
  config = FLAGS.config
  cfg = TrialConfig.from_config(config)
  genotype = genotype_lib.from_config(config)
  corpus = corpora.corpus_from_config(config)
  placement = Placement.over(jax.devices()[:1], cfg.fsdp)
  built = runner.build(genotype, corpus, cfg, placement)
  batch = placement.put(windows.sample_batch(np.random.default_rng(0), corpus.train,
                                             built.batch_size, built.seq_len), placement.batch)
  calls, dispatch, state = _measurements(built, batch)
  best = {name: float('inf') for name in list(calls) + ['dispatch']}
  ceiling = 0.0
  for _ in range(FLAGS.rounds):
    ceiling = max(ceiling, hardware.measure_matmul_flops('float32', seconds=0.5))
    for name, fn in calls.items():
      best[name] = min(best[name], _seconds_per_call(fn, FLAGS.steps))
    dispatched = []
    for _ in range(FLAGS.steps):
      jax.block_until_ready(dispatch())
      dispatched.append(state['dispatch'])
    best['dispatch'] = min(best['dispatch'], float(np.median(dispatched)))
  flops = gpt.flops_per_token(built.model_cfg) * built.batch_size * built.seq_len
  cost = _cost(built.train_step)
  timing.print_figure('matmul_gflops_fp32', f'{ceiling / 1e9:.1f}')
  for name in ('forward', 'forward_backward', 'step', 'dispatch'):
    timing.print_figure(f'{name}_ms', f'{1e3 * best[name]:.2f}')
  timing.print_figure('matmul_ideal_step_ms', f'{1e3 * flops / ceiling:.2f}')
  timing.print_figure('backward_over_forward',
                      f'{(best["forward_backward"] - best["forward"]) / best["forward"]:.2f}')
  timing.print_figure('optimizer_share_of_step',
                      f'{(best["step"] - best["forward_backward"]) / best["step"]:.3f}')
  timing.print_figure('xla_flops_over_model_matmul_flops', f'{cost.get("flops", 0.0) / flops:.3f}')
  timing.print_figure('xla_bytes_accessed_mb', f'{cost.get("bytes accessed", 0.0) / 1e6:.1f}')
  timing.print_figure('xla_forward_bytes_accessed_mb',
                      f'{state["forward_cost"].get("bytes accessed", 0.0) / 1e6:.1f}')
  timing.print_figure('step_mfu', f'{flops / best["step"] / ceiling:.3f}')


if __name__ == '__main__':
  app.run(main)

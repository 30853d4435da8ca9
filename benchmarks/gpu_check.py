"""Accelerator check: the config's baseline on one device, then data-parallel on all.

    python benchmarks/gpu_check.py --config=configs/h100.py [--budget_seconds=60]
        [--dp_steps=20] [--matmul_size=8192] [--config.trial.micro_batch_size=16 ...]
    python benchmarks/gpu_check.py --summarize_search=WORKDIR   # a search's key: value lines

Run through benchmarks/gpu_check.sh on a GPU host. In order:

1. The matmul ceiling of one device in the config's compute dtype (bf16 for h100.py),
   measured with `hardware.measure_matmul_flops` at --matmul_size: what the card does,
   not its datasheet (the trials' MFU divides by the same measurement).
2. The attention kernels: a small bf16 GPT's logits under the kernel 'auto' picks here
   (cuDNN flash attention where its probe runs) against the explicit einsums, windows
   and GQA included; `attention_agrees: yes` within bf16's precision.
3. The baseline genotype as `--mode=trial` trains it (compile outside the budget, the
   loop of `autoresearch/trial/runner.py`), on one device for --budget_seconds.
4. The same genotype data-parallel over all local devices for --dp_steps steps (skipped
   on a host with one device: step 3 already ran the mesh over it).

Each trial prints tokens/s (from its first loss reading to its last, so the first
step's one-off costs are left out), compile seconds, the memory its train step needs
per device (XLA's memory analysis of the compiled step) and MFU: model FLOP/s
(`gpt.flops_per_token` x tokens/s) over (devices x the measured ceiling). The data
source defaults to the embedded pystdlib corpus, so the check needs no download; the
throughput does not depend on the bytes. The last line is `mfu: X`, the one-device
baseline's, as a fraction.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import statistics
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import hardware  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from autoresearch.trial.results import TrialResult  # noqa: E402
from models import gpt  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/h100.py', 'Configuration file.')
flags.DEFINE_float('budget_seconds', 60.0, 'Training seconds of the one-device baseline.')
flags.DEFINE_integer('dp_steps', 20, 'Steps of the data-parallel trial over all local devices.')
flags.DEFINE_integer('matmul_size', 8192, 'Side of the square matmul that measures the ceiling.')
flags.DEFINE_bool('allow_cpu', False, 'Run even when JAX sees no accelerator (a logic check).')
flags.DEFINE_string('summarize_search', '', 'Only print the key: value lines of the search '
                    'in this workdir (its results.tsv), then exit.')

# bf16 keeps 8 mantissa bits: the kernels' logits agree to a few of its steps.
_BF16_TOLERANCE = 0.05


def steady_tokens_per_s(result: TrialResult, tokens_per_step: int) -> float:
  """Tokens/s between the first and the last loss reading (the first step's one-off
  costs left out), or over the whole training time when there are too few readings."""
  curve = result.loss_curve
  if len(curve) >= 3 and curve[-1][0] > curve[0][0]:
    return (curve[-1][1] - curve[0][1]) * tokens_per_step / (curve[-1][0] - curve[0][0])
  return result.tokens / result.train_seconds if result.train_seconds else 0.0


def report(name: str, result: TrialResult, model_cfg, tokens_per_step: int,
           ceiling: float, devices: int):
  """Prints one trial's figures; returns (MFU over `devices` x `ceiling`, tokens/s)."""
  tokens_per_s = steady_tokens_per_s(result, tokens_per_step)
  mfu = gpt.flops_per_token(model_cfg) * tokens_per_s / (devices * ceiling)
  print(f'{name}_devices: {devices}')
  print(f'{name}_status: {result.status} {result.reason or ""}'.rstrip())
  print(f'{name}_steps: {result.steps}')
  print(f'{name}_train_seconds: {result.train_seconds:.1f}')
  print(f'{name}_compile_seconds: {result.compile_seconds:.1f}')
  print(f'{name}_tokens_per_s: {tokens_per_s:,.0f}')
  print(f'{name}_memory_gb_per_device: {result.peak_memory_gb:.2f}')
  print(f'{name}_trial_mfu_percent: {result.mfu_percent:.2f}')  # whole training time
  datasheet = hardware.datasheet_flops(model_cfg.compute_dtype)
  if datasheet:
    print(f'{name}_mfu_vs_datasheet: {mfu * ceiling / datasheet:.4f}')
  print(f'{name}_mfu: {mfu:.4f}')
  return mfu, tokens_per_s


def attention_check(dtype: str) -> None:
  """Logits of a small GPT (GQA, a short window, RoPE, QK-norm) under the kernel 'auto'
  picks on this device against the explicit einsums, in `dtype`."""
  cfg = gpt.GPTConfig(seq_len=512, n_layers=2, d_model=256, n_heads=2, n_kv_heads=1,
                      qk_norm=True, window_pattern='SL', short_window=128, compute_dtype=dtype)
  auto = gpt.resolve_attention(cfg)
  tokens = jax.random.randint(jax.random.key(0), (4, cfg.seq_len), 0, cfg.vocab_size)
  logits = {}
  for kind in sorted({'explicit', auto.attention}):
    graphdef, params = nnx.split(gpt.GPT(dataclasses.replace(cfg, attention=kind), nnx.Rngs(0)))
    forward = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t).astype(jnp.float32))
    logits[kind] = np.asarray(forward(params, tokens))
  diff = float(np.max(np.abs(logits[auto.attention] - logits['explicit'])))
  scale = max(1.0, float(np.max(np.abs(logits['explicit']))))
  print(f'attention_kernel_auto: {auto.attention}')
  print(f'attention_max_abs_diff_vs_explicit: {diff:.4g} (logits up to {scale:.3g})')
  print(f'attention_agrees: {"yes" if diff <= _BF16_TOLERANCE * scale else "no"}')


def summarize_search(workdir: str) -> None:
  """key: value lines of the search in `workdir`, from its results.tsv."""
  path = os.path.join(workdir, 'results.tsv')
  if not os.path.exists(path):
    sys.exit(f'gpu_check: no {path}: the search wrote no trial')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f, delimiter='\t'))
  scored = [float(r['val_bpb']) for r in rows if r['status'] in ('keep', 'discard')]
  statuses = collections.Counter(r['status'] for r in rows)
  print(f'search_trials: {len(rows)}')
  print('search_statuses: ' + (', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))
                               or 'none'))
  print(f'search_best_val_bpb: {min(scored):.4f}' if scored else 'search_best_val_bpb: none')
  if rows:
    print(f'search_median_total_seconds: '
          f'{statistics.median(float(r["total_seconds"]) for r in rows):.1f}')


def main(argv):
  del argv
  if FLAGS.summarize_search:
    summarize_search(FLAGS.summarize_search)
    return
  config = FLAGS.config
  devices = jax.local_devices()
  print(f'jax: {jax.__version__}, backend: {jax.default_backend()}')
  print(f'devices: {len(devices)} x {devices[0].device_kind}')
  if jax.default_backend() == 'cpu' and not FLAGS.allow_cpu:
    sys.exit('gpu_check: JAX sees no GPU (backend cpu); install jax[cuda12] or pass --allow_cpu')
  dtype = config.trial.compute_dtype
  ceiling = hardware.measure_matmul_flops(dtype, size=FLAGS.matmul_size)
  print(f'matmul_ceiling_tflops_{dtype}: {ceiling / 1e12:.1f} (one device, {FLAGS.matmul_size}^2)')
  attention_check(dtype)

  corpus = corpora.corpus_from_config(config)
  genotype = genotype_lib.from_config(config)
  cfg = dataclasses.replace(TrialConfig.from_config(config),
                            budget_seconds=FLAGS.budget_seconds)
  model_cfg = gpt.resolve_attention(dataclasses.replace(
      genotype_lib.model_config(genotype, dtype), attention=cfg.attention))
  tokens_per_step = genotype['batch_size'] * genotype['seq_len']
  print(f'genotype: {genotype_lib.genotype_id(genotype)}, params_M: '
        f'{gpt.count_params(model_cfg) / 1e6:.3f}, tokens_per_step: {tokens_per_step:,}')
  print(f'baseline_attention_kernel: {model_cfg.attention}')
  result = runner.run(genotype, corpus, cfg, devices=devices[:1])
  print(f'baseline_val_bpb: {result.val_bpb}')
  mfu, tokens_per_s = report('baseline', result, model_cfg, tokens_per_step, ceiling, 1)

  if len(devices) > 1:
    dp_cfg = dataclasses.replace(cfg, max_steps=FLAGS.dp_steps)
    dp = runner.run(genotype, corpus, dp_cfg, devices=devices)
    _, dp_tokens_per_s = report('data_parallel', dp, model_cfg, tokens_per_step, ceiling,
                                len(devices))
    if tokens_per_s:
      print(f'data_parallel_scaling: {dp_tokens_per_s / (len(devices) * tokens_per_s):.3f}')
  else:
    print('data_parallel: skipped (one local device)')
  print(f'mfu: {mfu:.4f}')
  if result.status != 'ok':
    sys.exit(f'gpu_check: the baseline did not train ({result.status}): {result.reason}')


if __name__ == '__main__':
  app.run(main)

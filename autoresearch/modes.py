"""Shared set-up of the entry modes, and `--mode=trial`: train the baseline once."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Optional

import jax
import tqdm
from absl import logging

from autoresearch import data, distributed, genotype as genotype_lib, trial


def log_devices() -> None:
  devices = jax.devices()
  logging.info('JAX %s on %d %s device(s): %s; process %d of %d', jax.__version__,
               len(devices), jax.default_backend(), devices[0].device_kind,
               jax.process_index(), jax.process_count())


def load_corpus(config) -> data.Corpus:
  """The corpus named by `config.data`."""
  d = config.data
  return data.load_corpus(d.source, path=d.path or None, cache_dir=d.cache_dir or None,
                          val_fraction=d.val_fraction, test_fraction=d.test_fraction)


def trial_config(config) -> trial.TrialConfig:
  return trial.TrialConfig(**config.trial.to_dict())


class ProgressLine:
  """A watcher that shows a trial's progress: a tqdm bar on a terminal (step, loss,
  tokens/s, seconds left, and the self-evaluator's predicted val_bpb once it has one),
  an absl log line every 10 s otherwise. `prediction` returns (mean, std) or None."""

  def __init__(self, budget_seconds: float, tokens_per_step: int, label: str = 'trial',
               prediction: Optional[Callable[[], Optional[tuple]]] = None, stream=sys.stderr):
    self.budget, self.tokens_per_step = budget_seconds, tokens_per_step
    self.prediction = prediction
    self.bar = None
    if stream.isatty():
      self.bar = tqdm.tqdm(total=round(budget_seconds, 1), desc=label, unit='s', file=stream,
                           leave=False, bar_format='{desc} {bar} {n:.0f}/{total:.0f} s{postfix}')
    self.last_logged = -float('inf')

  def __call__(self, reading: trial.LossReading):
    tokens_per_s = reading.step * self.tokens_per_step / max(reading.seconds, 1e-9)
    fields = {'step': reading.step, 'loss': f'{reading.loss:.4f}',
              'tok/s': f'{tokens_per_s:,.0f}',
              'left': f'{max(self.budget - reading.seconds, 0):.0f}s'}
    predicted = self.prediction() if self.prediction else None
    if predicted is not None:
      fields['pred_bpb'] = f'{predicted[0]:.3f}±{predicted[1]:.3f}'
    if self.bar is not None:
      self.bar.n = min(reading.seconds, self.budget)
      self.bar.set_postfix(fields, refresh=False)
      self.bar.update(0)
    elif time.perf_counter() - self.last_logged >= 10.0:
      self.last_logged = time.perf_counter()
      logging.info(' | '.join(f'{k} {v}' for k, v in fields.items()))
    return None

  def close(self):
    if self.bar is not None:
      self.bar.close()


def print_summary(result: trial.TrialResult, corpus: data.Corpus) -> None:
  """The run's `key: value` lines (greppable, as in karpathy/autoresearch)."""
  entropy = corpus.unigram_entropy_bits()
  fmt = lambda x: 'nan' if x is None else f'{x:.6f}'
  lines = {
      'val_bpb': fmt(result.val_bpb),
      'unigram_entropy_bpb': f'{entropy:.6f}',
      'val_bpb_over_unigram': fmt(None if result.val_bpb is None else result.val_bpb / entropy),
      'status': result.status,
      'reason': result.reason or '-',
      'genotype_id': result.genotype_id,
      'data': corpus.description,
      'train_seconds': f'{result.train_seconds:.1f}',
      'compile_seconds': f'{result.compile_seconds:.1f}',
      'eval_seconds': f'{result.eval_seconds:.1f}',
      'total_seconds': f'{result.total_seconds:.1f}',
      'steps': result.steps,
      'tokens_M': f'{result.tokens / 1e6:.2f}',
      'params_M': f'{result.params / 1e6:.3f}',
      'mfu_percent': f'{result.mfu_percent:.2f}',
  }
  print('---')
  for key, value in lines.items():
    print(f'{key}: {value}')


def run_trial(config, workdir: str) -> trial.TrialResult:
  """Trains the config's baseline genotype once; writes workdir/trial.json."""
  os.makedirs(workdir, exist_ok=True)
  trial.enable_compilation_cache(os.path.join(workdir, 'jax_cache'))
  corpus = load_corpus(config)
  genotype = genotype_lib.from_config(config)
  cfg = trial_config(config)
  logging.info('data: %s, bytes %s', corpus.description, corpus.byte_counts())
  progress = ProgressLine(cfg.budget_seconds, genotype['batch_size'] * genotype['seq_len'])
  result = trial.run(genotype, corpus, cfg, watch=progress)
  progress.close()
  if distributed.is_leader():  # on several hosts, process 0 speaks for all
    with open(os.path.join(workdir, 'trial.json'), 'w') as f:
      json.dump(result.to_dict(), f)
    print_summary(result, corpus)
  return result



def run_train(config, workdir: str) -> dict:
  """Trains the genotype of `config.genotype_json` (e.g. a search's best_genotype.json)
  and the baseline `config.genotype` under the same budget and seed, and prints both
  on the val and the held-out test split: does the discovery hold?"""
  if not config.genotype_json:
    raise genotype_lib.InvalidGenotype('--mode=train needs --genotype=PATH (a JSON genotype)')
  os.makedirs(workdir, exist_ok=True)
  trial.enable_compilation_cache(os.path.join(workdir, 'jax_cache'))
  corpus = load_corpus(config)
  cfg = trial_config(config)
  candidate = genotype_lib.from_config(config)
  baseline = genotype_lib.make(dict(config.genotype))
  logging.info('training %s vs the baseline for %.0f s each, seed %d',
               genotype_lib.describe_diff(candidate, baseline), cfg.budget_seconds, cfg.seed)
  results = {}
  for name, genotype in (('candidate', candidate), ('baseline', baseline)):
    progress = ProgressLine(cfg.budget_seconds, genotype['batch_size'] * genotype['seq_len'])
    results[name] = trial.run(genotype, corpus, cfg, watch=progress, score_test=True)
    progress.close()
  if distributed.is_leader():
    with open(os.path.join(workdir, 'train.json'), 'w') as f:
      json.dump({k: r.to_dict() for k, r in results.items()}, f)
  fmt = lambda x: 'nan' if x is None else f'{x:.6f}'
  lines = {'genotype': genotype_lib.describe_diff(candidate, baseline),
           'budget_seconds': f'{cfg.budget_seconds:g}', 'seed': cfg.seed}
  for name, r in results.items():
    lines.update({f'{name}_status': r.status, f'{name}_val_bpb': fmt(r.val_bpb),
                  f'{name}_test_bpb': fmt(r.test_bpb), f'{name}_steps': r.steps})
  c, b = results['candidate'], results['baseline']
  for split in ('val', 'test'):
    cv, bv = getattr(c, f'{split}_bpb'), getattr(b, f'{split}_bpb')
    lines[f'{split}_gain_bpb'] = fmt(None if cv is None or bv is None else bv - cv)
  if distributed.is_leader():
    print('---')
    for key, value in lines.items():
      print(f'{key}: {value}')
  return lines

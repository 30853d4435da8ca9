"""The entry modes besides the search: `--mode=trial` trains the baseline once,
`--mode=train` a genotype against the baseline on val and test."""

from __future__ import annotations

import json

import jax
from absl import logging

from autoresearch.data import corpora
from autoresearch.runtime import distributed
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import runner
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.results import TrialResult
from autoresearch.views import progress
from autoresearch.workdir import io as workdir_io


def log_devices() -> None:
  devices = jax.devices()
  logging.info('JAX %s on %d %s device(s): %s; process %d of %d', jax.__version__,
               len(devices), jax.default_backend(), devices[0].device_kind,
               jax.process_index(), jax.process_count())


def print_summary(result: TrialResult, corpus: corpora.Corpus) -> None:
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


def _run_with_progress(genotype, corpus, cfg, score_test: bool = False) -> TrialResult:
  bar = progress.ProgressLine(cfg.budget_seconds, genotype['batch_size'] * genotype['seq_len'])
  try:
    return runner.run(genotype, corpus, cfg, watch=bar, score_test=score_test)
  finally:
    bar.close()


def _prepare(config, workdir: str) -> tuple[corpora.Corpus, TrialConfig]:
  """The workdir and its compilation cache made; (the corpus, the trial settings)."""
  workdir_io.makedirs(workdir_io.path(workdir))
  runner.enable_compilation_cache(workdir_io.compilation_cache_dir(workdir),
                                  config.compilation_cache_mb)
  return corpora.corpus_from_config(config), TrialConfig.from_config(config)


def run_trial(config, workdir: str) -> TrialResult:
  """Trains the config's baseline genotype once; writes workdir/trial.json."""
  corpus, cfg = _prepare(config, workdir)
  genotype = genotype_lib.from_config(config)
  logging.info('data: %s, bytes %s', corpus.description, corpus.byte_counts())
  result = _run_with_progress(genotype, corpus, cfg)
  if distributed.is_leader():  # on several hosts, process 0 speaks for all
    workdir_io.write_atomic(workdir_io.path(workdir, 'trial.json'), json.dumps(result.to_dict()))
    print_summary(result, corpus)
  return result


def run_train(config, workdir: str) -> dict:
  """Trains the genotype of `config.genotype_json` (e.g. a search's best_genotype.json)
  and the baseline `config.genotype` under the same budget and seed, and prints both
  on the val and the held-out test split: does the discovery hold?"""
  if not config.genotype_json:
    raise genotype_lib.InvalidGenotype('--mode=train needs --genotype=PATH (a JSON genotype)')
  corpus, cfg = _prepare(config, workdir)
  candidate = genotype_lib.from_config(config)
  baseline = genotype_lib.make(dict(config.genotype))
  logging.info('training %s vs the baseline for %.0f s each, seed %d',
               genotype_lib.describe_diff(candidate, baseline), cfg.budget_seconds, cfg.seed)
  results = {}
  for name, genotype in (('candidate', candidate), ('baseline', baseline)):
    results[name] = _run_with_progress(genotype, corpus, cfg, score_test=True)
  if distributed.is_leader():
    workdir_io.write_atomic(workdir_io.path(workdir, 'train.json'),
                            json.dumps({k: r.to_dict() for k, r in results.items()}))
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

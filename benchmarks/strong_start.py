"""A strong starting recipe for the search-quality benchmark: the best genotype known at
the CPU presets' budget, re-trained and confirmed, so that a search can also be judged
on the gains autoresearch users chase (a few percent over a tuned recipe) and not only
on how fast it leaves the default.

    python benchmarks/strong_start.py [--trials=benchmarks/results/budget_agreement/trials.jsonl]
        [--out=benchmarks/results/strong_start]

The candidates are the recorded trials in `--trials` at the preset's budget
(`search_quality.CPU_BUDGET_SECONDS`) whose every seed finished; the one with the lowest
seed-mean val_bpb is re-trained with the benchmark's re-training seeds
(`search_quality.RETRAIN_SEEDS`, which no search and no recording uses) beside the
default baseline, on val and test, under the `cpu` preset's config. Writes
<out>/genotype.json (the `cpu_strong` preset's start) and <out>/confirmed.json. Last
line: `strong_start_gain_val: X`, the re-trained baseline's mean val_bpb minus the
strong start's (bits per byte; positive: the start is better).
"""

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false '
                      'intra_op_parallelism_threads=1')

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks import search_quality  # noqa: E402
from benchmarks.timing import print_figure  # noqa: E402

flags.DEFINE_string('trials', 'benchmarks/results/budget_agreement/trials.jsonl',
                    'Recorded trials (JSON lines with id, budget_seconds, seed, status, '
                    'val_bpb, genotype).')
flags.DEFINE_string('out', 'benchmarks/results/strong_start', 'Output folder.')
FLAGS = flags.FLAGS


def best_recorded(rows: list[dict], budget: float) -> tuple[dict, float, int]:
  """(genotype, seed-mean val_bpb, seeds) of the lowest mean among the genotypes whose
  every recorded trial at `budget` finished with a finite val_bpb."""
  by_id = {}
  for r in rows:
    if r['budget_seconds'] == budget:
      by_id.setdefault(r['id'], []).append(r)
  finished = {i: rs for i, rs in by_id.items()
              if all(r['status'] == 'ok' and np.isfinite(r['val_bpb'] or np.nan) for r in rs)}
  if not finished:
    raise ValueError(f'no recorded genotype finished every trial at {budget:g} s')
  best = min(finished, key=lambda i: np.mean([r['val_bpb'] for r in finished[i]]))
  runs = finished[best]
  return runs[0]['genotype'], float(np.mean([r['val_bpb'] for r in runs])), len(runs)


def retrained(genotype: dict, corpus, cfg: TrialConfig) -> list[dict]:
  out = []
  for seed in search_quality.RETRAIN_SEEDS:
    r = runner.run(genotype, corpus, dataclasses.replace(cfg, seed=seed), score_test=True)
    out.append({'seed': seed, 'status': r.status, 'val_bpb': r.val_bpb, 'test_bpb': r.test_bpb,
                'steps': r.steps})
    logging.warning('%s seed %d: %s val %s test %s', genotype_lib.genotype_id(genotype), seed,
                    r.status, r.val_bpb, r.test_bpb)
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(FLAGS.trials) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  preset = search_quality.PRESETS['cpu']
  config = search_quality.base_config(preset, FLAGS.out)
  cfg = TrialConfig.from_config(config)
  genotype, recorded, seeds = best_recorded(rows, cfg.budget_seconds)
  baseline = genotype_lib.from_config(config)
  corpus = corpora.corpus_from_config(config)
  confirmed = {'genotype': genotype, 'id': genotype_lib.genotype_id(genotype),
               'recorded_val_bpb': recorded, 'recorded_seeds': seeds,
               'candidates_from': FLAGS.trials, 'budget_seconds': cfg.budget_seconds,
               'strong': retrained(genotype, corpus, cfg),
               'baseline': retrained(baseline, corpus, cfg)}
  with open(os.path.join(FLAGS.out, 'confirmed.json'), 'w') as f:
    json.dump(confirmed, f, indent=1)
  with open(os.path.join(FLAGS.out, 'genotype.json'), 'w') as f:
    json.dump(genotype, f, indent=1, sort_keys=True)
  means = {k: {s: float(np.mean([r[s] for r in confirmed[k]])) for s in ('val_bpb', 'test_bpb')}
           for k in ('strong', 'baseline')}
  print_figure('strong_start',
               f'{confirmed["id"]}: {genotype_lib.describe_diff(genotype, baseline)}')
  print_figure('recorded_val_bpb', f'{recorded:.4f} ({seeds} seeds)')
  for k in ('strong', 'baseline'):
    print_figure(f'{k}_retrained', f'val {means[k]["val_bpb"]:.4f} test {means[k]["test_bpb"]:.4f}')
  print_figure('strong_start_gain_val',
               f'{means["baseline"]["val_bpb"] - means["strong"]["val_bpb"]:+.4f}')


if __name__ == '__main__':
  app.run(main)

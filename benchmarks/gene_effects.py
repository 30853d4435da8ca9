"""What each speedrun gene does to the baseline, measured: the baseline with the gene on
against without, on paired seeds, each trial trained afresh through the normal runner.

    python benchmarks/gene_effects.py --lane=0 --lanes=2 &   # one process per core:
    python benchmarks/gene_effects.py --lane=1 --lanes=2 &   # taskset -c 0 / -c 1
    python benchmarks/gene_effects.py --report               # the table, when both end

A gene added later is measured in its own sitting, its baseline re-trained beside it
(machine load moves a wall-clock trial's steps): e.g. `--genes=batch_warmup --seeds=5
--out=benchmarks/results/gene_effects/batch_warmup.jsonl` on both lanes.

A gene that reads nothing in the baseline is measured in the smallest context where it
does, against that context without it: NorMuon on Muon, cautious weight decay at
weight_decay 0.1, growing windows with a short-window layer (window_pattern SL).
Defaults: `configs/default.py` (60 s budgets on the machine's clock, the stdlib
corpus), seeds 0-2. Every trial is a line of `--out` (JSONL), written when it ends, so
a stopped run continues where it was: the lanes split the (arm, seed) pairs between
them and skip those already there. At 60 s a trial costs about 75-85 s of one core:
10 arms x 3 seeds is about 40 core-minutes.

Prints per gene: the mean paired difference (on - off) of val_bpb with its t-interval
(95%), n, the exact sign-flip p (at n = 3 it is at least 0.25), and the steps each arm
trained (a gene that slows a step trains fewer); the last line
`genes_with_a_resolved_gain: k of n` (interval below 0).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks import stats  # noqa: E402


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line (defined when run as a script: importing the module loads no config)."""
  config_flags.DEFINE_config_file('config', 'configs/default.py', 'Configuration file.')
  flags.DEFINE_integer('seeds', 3, 'Paired seeds per gene (trial seeds 0..seeds-1).')
  flags.DEFINE_integer('lane', 0, 'This process trains the pairs i with i % lanes == lane.')
  flags.DEFINE_integer('lanes', 1, 'Processes sharing the work (one per core).')
  flags.DEFINE_string('out', 'benchmarks/results/gene_effects/trials.jsonl', 'JSONL of trials.')
  flags.DEFINE_bool('report', False, 'Only print the table of what --out holds.')
  flags.DEFINE_list('genes', list(GENES), 'The genes measured (each with its off arm).')

# gene: (the context it is measured in, the gene's value when on).
GENES = {
    'unet_skips': ({}, True),
    'bigram_buckets': ({}, 4096),
    'mtp_weight': ({}, 0.3),
    'window_warmup': ({'window_pattern': 'SL'}, 0.5),
    'cautious_wd': ({'weight_decay': 0.1}, True),
    'normuon': ({'optimizer': 'muon'}, True),
    'batch_warmup': ({}, 0.5),
}


def arms(genes=tuple(GENES)) -> dict[str, dict]:
  """Arm name -> the changes to the baseline genotype it trains, for `genes`."""
  out = {'baseline': {}}
  for gene in genes:
    context, on = GENES[gene]
    off_name = 'baseline' if not context else ','.join(f'{k}={v}' for k, v in context.items())
    out[off_name] = dict(context)
    out[f'{gene}={on}' + (f' ({off_name})' if context else '')] = dict(context, **{gene: on})
  return out


def pair_of(gene: str) -> tuple[str, str]:
  """(the arm without the gene, the arm with it)."""
  names = list(arms())
  on = next(n for n in names if n.startswith(f'{gene}='))
  context = GENES[gene][0]
  off = 'baseline' if not context else ','.join(f'{k}={v}' for k, v in context.items())
  return off, on


def _done(path: str) -> dict[tuple[str, int], dict]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {(r['arm'], r['seed']): r for r in rows}


def run_lane(config, out: str, seeds: int, lane: int, lanes: int, genes) -> None:
  """Trains this lane's (arm, seed) pairs of `genes` that `out` lacks, appending each
  as it ends."""
  os.makedirs(os.path.dirname(out), exist_ok=True)
  corpus = corpora.corpus_from_config(config)
  base = genotype_lib.from_config(config)
  work = list(itertools.product(range(seeds), arms(genes).items()))
  for i, (seed, (name, changes)) in enumerate(work):
    if i % lanes != lane or (name, seed) in _done(out):
      continue
    cfg = dataclasses.replace(TrialConfig.from_config(config), seed=seed)
    result = runner.run(dict(base, **changes), corpus, cfg)
    row = {'arm': name, 'seed': seed, 'changes': changes, 'status': result.status,
           'reason': result.reason, 'val_bpb': result.val_bpb, 'steps': result.steps,
           'train_seconds': result.train_seconds, 'total_seconds': result.total_seconds}
    with open(out, 'a') as f:
      f.write(json.dumps(row) + '\n')
    print(f'{name} seed {seed}: {result.status} val_bpb {result.val_bpb} steps {result.steps}',
          flush=True)


def report(out: str, genes=tuple(GENES)) -> None:
  """One line per gene of `genes` from `out`, then the count of resolved gains."""
  done = _done(out)
  resolved, measured = 0, 0
  for gene in genes:
    off, on = pair_of(gene)
    seeds = sorted(s for (a, s) in done if a == on and (off, s) in done)
    diffs = [done[(on, s)]['val_bpb'] - done[(off, s)]['val_bpb'] for s in seeds
             if done[(on, s)]['status'] == done[(off, s)]['status'] == 'ok']
    if len(diffs) < 2:
      print(f'{gene}: {len(diffs)} paired seeds so far')
      continue
    measured += 1
    ci = stats.t_interval(diffs)
    resolved += ci.high < 0
    steps = [statistics.mean(done[(a, s)]['steps'] for s in seeds) for a in (off, on)]
    print(f'{gene}: {on} vs {off}: {ci.mean:+.4f} bpb [{ci.low:+.4f}, {ci.high:+.4f}] '
          f't95, n={ci.n}, exact sign-flip p={stats.exact_sign_flip_p(diffs):.3f}, '
          f'steps {steps[0]:.0f} -> {steps[1]:.0f}')
  print(f'genes_with_a_resolved_gain: {resolved} of {measured}')


def main(argv):
  del argv
  if not FLAGS.report:
    unknown = sorted(set(FLAGS.genes) - set(GENES))
    if unknown:
      raise app.UsageError(f'--genes: unknown {unknown}; known: {list(GENES)}')
    run_lane(FLAGS.config, FLAGS.out, FLAGS.seeds, FLAGS.lane, FLAGS.lanes, FLAGS.genes)
  report(FLAGS.out, FLAGS.genes)


if __name__ == '__main__':
  _define_flags()
  app.run(main)

"""Which training budget ranks genotypes as a longer one does? The shortest budget whose
ranking agrees with 60 s is the one the search-quality benchmark should run at.

    python benchmarks/budget_agreement.py [--lanes=2] [--genotypes=32]
        [--results=benchmarks/results/budget_agreement] [--report_only]

The genotypes (`design`, seed 0), each valid under the search-quality caps at 16 s:
- the baseline (configs/default.py);
- the bests the committed 4 s search-quality runs found (benchmarks/results/
  search_quality_cpu_4s_flops): their runs kept only the bests' ids, so the searches of
  random_global and CMA-ES are replayed with the code that ran them (`REPLAY_COMMIT`,
  on a synthetic landscape: neither agent's proposals depend on the outcomes there,
  random search never and CMA-ES until its first generation completes) and a proposal
  whose id is a run's best is that best;
- single-gene edits a search of this space makes early (narrower and wider, shallower
  and deeper, smaller and larger batches, shorter and longer sequences, the learning
  rates, Muon, the speedrun genes that paid at 60 s);
- multi-gene moves of 3 to 8 genes around the baseline, and uniformly random genotypes.

Each is trained at 4, 16 and 60 s (and 120 s, the first `--long_genotypes`), with 2
seeds no search uses, on the modelled clock (`trial.clock='modelled'`), in lanes pinned
to one core each. Rows go to <results>/trials.jsonl as they finish (a rerun trains only
what is missing), each with the trial's whole result (loss curve, compile, eval and
total seconds). A trial that fails or diverges ranks last at its budget.

Reported: Spearman's rank correlation of the genotypes' seed-mean val_bpb between every
two budgets, over all genotypes and over the better half at 60 s, and the budget chosen:
the shortest whose correlation with 60 s over all genotypes is at least `THRESHOLD`.
Last lines: `budget_agreement_spearman: X` (the chosen budget against 60 s) and
`benchmark_budget_seconds: B`.
"""

import dataclasses
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One XLA thread per lane, as the search-quality benchmark's lanes run.
os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false '
                      'intra_op_parallelism_threads=1')

import filelock  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks.timing import REPO_ROOT, print_figure, spawn_lanes  # noqa: E402
from configs import default  # noqa: E402

flags.DEFINE_integer('lanes', 2, 'Worker processes, one core each.')
flags.DEFINE_integer('lane', -1, 'Internal: run as worker LANE of LANES.')
flags.DEFINE_integer('genotypes', 32, 'Genotypes in the design.')
flags.DEFINE_integer('long_genotypes', 12, 'The first this many are trained at 120 s too.')
flags.DEFINE_bool('report_only', False, 'Report from the trials there are.')
flags.DEFINE_string('results', 'benchmarks/results/budget_agreement', 'Output folder.')
FLAGS = flags.FLAGS

BUDGETS = (4.0, 16.0, 60.0)
LONG_BUDGET = 120.0
REFERENCE_BUDGET = 60.0
THRESHOLD = 0.8
SEEDS = (7001, 7002)           # no search trains with these
CAP_BUDGET = 16.0              # the design's genotypes are valid under the caps at this budget
VAL_BYTES = 32_768             # as the search-quality CPU preset scores
DESIGN_SEED = 0
# The code that ran the committed search-quality CPU runs, and what is replayed of them.
REPLAY_COMMIT = '7bf2cf8'
REPLAY_RUNS = 'benchmarks/results/search_quality_cpu_4s_flops/per_run'
REPLAY_ARMS = ('random_global', 'cmaes')
REPLAY_TRIALS = 40
_SINGLE_EDITS = (
    ('d_model', 32), ('d_model', 64), ('d_model', 256), ('n_layers', 1), ('n_layers', 4),
    ('batch_size', 8), ('batch_size', 32), ('seq_len', 64), ('seq_len', 256),
    ('matrix_lr', 1e-3), ('matrix_lr', 1e-2), ('embed_lr', 3e-2), ('optimizer', 'muon'),
    ('bigram_buckets', 4096), ('batch_warmup', 0.5), ('warmdown_frac', 0.5),
)


def trial_config() -> TrialConfig:
  config = default.get_config()
  config.trial.clock, config.trial.val_bytes = 'modelled', VAL_BYTES
  config.trial.max_step_fraction = 0.0   # every design genotype trains at every budget
  return TrialConfig.from_config(config)


# Runs in the tree of REPLAY_COMMIT: prints the genotypes an arm's search proposed, in order.
_REPLAY = '''
import json, sys, tempfile
import jax
from autoresearch import landscape
from benchmarks import search_quality
arm, seed, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
preset = search_quality.PRESETS['cpu']
config = search_quality.base_config(preset, tempfile.mkdtemp())
config.search.baseline_cache = 'none'
config = search_quality.arm_config(config, arm, seed)
config = landscape.search_config(config, seed=seed, max_trials=trials)
s = landscape.search_on(landscape.draw(jax.random.key(0), config.trial.budget_seconds), config,
                        workdir=tempfile.mkdtemp())
print(json.dumps([dict(row.genotype) for row in s.store.rows]))
'''


def replayed_bests(results: str) -> list[dict]:
  """The committed runs' final bests (`REPLAY_ARMS`), replayed once and kept in
  <results>/replayed_bests.json as {'arm', 'seed', 'id', 'genotype'}; a run whose best
  is not among the replayed proposals is listed with genotype None."""
  path = os.path.join(results, 'replayed_bests.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  from benchmarks.trial_overhead import old_code
  code = old_code(REPLAY_COMMIT)
  found = []
  for arm in REPLAY_ARMS:
    for seed in range(10):
      with open(os.path.join(REPO_ROOT, REPLAY_RUNS, f'{arm}_seed{seed}.json')) as f:
        best_id = json.load(f)['snapshots']['1.0']
      out = subprocess.run([sys.executable, '-c', _REPLAY, arm, str(seed), str(REPLAY_TRIALS)],
                           cwd=code, capture_output=True, text=True, check=True)
      proposed = json.loads(out.stdout.strip().splitlines()[-1])
      match = [g for g in proposed if genotype_lib.genotype_id(g) == best_id]
      found.append({'arm': arm, 'seed': seed, 'id': best_id,
                    'genotype': genotype_lib.make(match[0]) if match else None})
  with open(path, 'w') as f:
    json.dump(found, f, indent=1)
  return found


def design(results: str, count: int, cfg: TrialConfig) -> list[dict]:
  """`count` distinct genotypes (module docstring), the replayed bests first."""
  capped = dataclasses.replace(cfg, budget_seconds=CAP_BUDGET, max_step_fraction=0.05)
  max_flops = runner.max_step_flops(capped)

  def valid(g):
    return genotype_lib.is_valid(g, cfg.max_params, max_flops)[0]
  base = genotype_lib.from_config(default.get_config())
  chosen = [base]
  chosen += [r['genotype'] for r in replayed_bests(results) if r['genotype'] is not None]
  chosen += [genotype_lib.make({**base, name: value}) for name, value in _SINGLE_EDITS]
  rng = np.random.default_rng(DESIGN_SEED)
  moves = 0
  while len({genotype_lib.genotype_id(g) for g in chosen if valid(g)}) < count:
    if moves < 6:
      g = dict(base)
      for _ in range(rng.integers(3, 9)):
        g = genotype_lib.apply_edit(g, *genotype_lib.random_edit(rng, g, cfg.max_params,
                                                                 max_flops))
      moves += 1
    else:
      g = genotype_lib.random_genotype(rng, cfg.max_params, max_flops)
    chosen.append(genotype_lib.make(g))
  unique = {}
  for g in chosen:
    if valid(g):
      unique.setdefault(genotype_lib.genotype_id(g), g)
  return list(unique.values())[:count]


def _done(path: str) -> set:
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {(r['id'], r['budget_seconds'], r['seed']) for r in map(json.loads, f)}


def lane_main(lane: int, lanes: int) -> None:
  cfg = trial_config()
  corpus = corpora.corpus_from_config(default.get_config())
  path = os.path.join(FLAGS.results, 'trials.jsonl')
  genotypes = design(FLAGS.results, FLAGS.genotypes, cfg)
  for index in range(lane, len(genotypes), lanes):
    genotype, gid = genotypes[index], genotype_lib.genotype_id(genotypes[index])
    budgets = BUDGETS + ((LONG_BUDGET,) if index < FLAGS.long_genotypes else ())
    for budget in budgets:
      for seed in SEEDS:
        if (gid, budget, seed) in _done(path):
          continue
        result = runner.run(genotype, corpus,
                            dataclasses.replace(cfg, budget_seconds=budget, seed=seed))
        row = {'id': gid, 'index': index, 'budget_seconds': budget, 'seed': seed,
               **result.to_dict()}   # the loss curve and the fixed costs too
        logging.warning('lane %d: #%d %s %gs seed %d: %s %s steps=%d wall=%.1fs', lane, index,
                        gid, budget, seed, result.status, result.val_bpb, result.steps,
                        result.wall_train_seconds)
        with filelock.FileLock(path + '.lock'):
          with open(path, 'a') as f:
            f.write(json.dumps(row) + '\n')


def mean_bpb(rows: list[dict]) -> dict:
  """(genotype id, budget) -> seed-mean val_bpb over its finished seeds (inf: a failed or
  diverged trial, which ranks last)."""
  runs = {}
  for r in rows:
    ok = r['status'] == 'ok' and r['val_bpb'] is not None and np.isfinite(r['val_bpb'])
    runs.setdefault((r['id'], r['budget_seconds']), []).append(r['val_bpb'] if ok else np.inf)
  return {key: float(np.mean(v)) for key, v in runs.items() if len(v) == len(SEEDS)}


def spearman(means: dict, a: float, b: float, ids=None) -> tuple[float, int]:
  """(Spearman's rho of the genotypes' means at budgets a and b, genotypes compared)."""
  from scipy import stats
  both = sorted(i for (i, budget) in means if budget == a and (i, b) in means
                and (ids is None or i in ids))
  if len(both) < 3:
    return float('nan'), len(both)
  rho = stats.spearmanr([means[i, a] for i in both], [means[i, b] for i in both])[0]
  return float(rho), len(both)


def report(results: str) -> None:
  with open(os.path.join(results, 'trials.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  means = mean_bpb(rows)
  at_reference = sorted((m, i) for (i, b), m in means.items() if b == REFERENCE_BUDGET)
  better_half = {i for _, i in at_reference[:len(at_reference) // 2]}
  budgets = sorted({b for (_, b) in means})
  lines = ['| budget a | budget b | Spearman (all) | n | Spearman (better half at 60 s) | n |',
           '|---|---|---|---|---|---|']
  for k, a in enumerate(budgets):
    for b in budgets[k + 1:]:
      rho, n = spearman(means, a, b)
      rho_half, n_half = spearman(means, a, b, better_half)
      lines.append(f'| {a:g} s | {b:g} s | {rho:.3f} | {n} | {rho_half:.3f} | {n_half} |')
  table = '\n'.join(lines)
  print(table)
  with open(os.path.join(results, 'table.md'), 'w') as f:
    f.write(table + '\n')
  chosen = next((b for b in budgets if b < REFERENCE_BUDGET and
                 spearman(means, b, REFERENCE_BUDGET)[0] >= THRESHOLD), REFERENCE_BUDGET)
  rho = 1.0 if chosen == REFERENCE_BUDGET else spearman(means, chosen, REFERENCE_BUDGET)[0]
  print_figure('genotypes_at_reference', len(at_reference))
  print_figure('budget_agreement_spearman', f'{rho:.3f}')
  print_figure('benchmark_budget_seconds', f'{chosen:g}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(FLAGS.results, exist_ok=True)
  if FLAGS.lane >= 0:
    lane_main(FLAGS.lane, FLAGS.lanes)
    return
  if not FLAGS.report_only:
    design(FLAGS.results, FLAGS.genotypes, trial_config())   # replays once, before the lanes
    spawn_lanes(__file__, FLAGS.lanes, [
        f'--genotypes={FLAGS.genotypes}', f'--long_genotypes={FLAGS.long_genotypes}',
        f'--results={FLAGS.results}'])
  report(FLAGS.results)


if __name__ == '__main__':
  app.run(main)

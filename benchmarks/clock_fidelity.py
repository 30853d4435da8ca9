"""How well does the modelled clock (`trial.clock='modelled'`) charge a step what it
really costs? Measures the idle wall seconds of a step for a design of genotypes that
spans the space, fits `trial.step_cost` to three quarters of them and scores the fit on
the quarter it never saw.

    python benchmarks/clock_fidelity.py [--lanes=2] [--genotypes=60]
        [--results=benchmarks/results/clock_fidelity] [--fit_only]

The design (seed 0): the baseline; each of depth, width, batch and sequence length at
the smallest and the largest value the cap allows; every categorical value of the
architecture and optimizer genes (attention patterns, positions, activations, norms,
Muon and NorMuon, the speedrun genes) set alone on the baseline; the rest uniformly
random valid genotypes. All have `batch_warmup` off (its half steps are charged by
the same model at half the tokens). Every genotype is capped at `--max_step_flops`.

Each genotype is trained once on the wall clock (the normal trial runner) in a lane:
`--lanes` worker processes, each pinned to one core with XLA on one thread, as the
search-quality benchmark runs them. Its step's idle wall seconds are the steady state
of its loss curve, (t_last - t_first) / (steps_last - steps_first): the first step's
one-off costs are a trial's fixed cost, not a step's. Measurements are appended to
<results>/steps.jsonl as they finish (a rerun measures only what is missing).

The fit: non-negative least squares of the relative error over the fitting three
quarters (`step_cost.fit`), on 'flops' and the subset of the other features (at most
`MAX_EXTRA_FEATURES`) whose leave-one-out p90 on those genotypes is smallest;
<results>/fit.json holds the coefficients, and the held-out errors are printed per
genotype beside the p90 of a fit of FLOPs alone (the old clock's model). The last line
is `clock_error_p90: X`, the 90th percentile of |modelled - idle wall| / idle wall on
the held-out genotypes (goal: at most 0.10).
"""

import itertools
import json
import os
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
from autoresearch.trial import runner, step_cost  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks.timing import print_figure, spawn_lanes  # noqa: E402
from configs import default  # noqa: E402

flags.DEFINE_integer('lanes', 2, 'Worker processes, one core each.')
flags.DEFINE_integer('lane', -1, 'Internal: run as worker LANE of LANES.')
flags.DEFINE_integer('genotypes', 60, 'Genotypes in the design (a quarter held out).')
flags.DEFINE_float('max_step_flops', 8e10, 'Model FLOPs cap of a design genotype\'s step.')
flags.DEFINE_float('min_seconds', 4.0, 'Training seconds of a measurement, at least.')
flags.DEFINE_integer('min_steps', 8, 'Steps of a measurement, at least.')
flags.DEFINE_bool('fit_only', False, 'Fit and report from the measurements there are.')
flags.DEFINE_string('results', 'benchmarks/results/clock_fidelity', 'Output folder.')
FLAGS = flags.FLAGS

DESIGN_SEED = 0
HELD_OUT_FRACTION = 0.25
MAX_EXTRA_FEATURES = 4   # features of the fit beside 'flops', at most
# An a-priori lane rate (model FLOP/s of one core) that sizes each measurement's budget.
_GUESS_FLOPS_PER_SECOND = 1.5e10
_CATEGORICAL = {
    'position': ['learned'], 'qk_norm': [True], 'window_pattern': ['SL', 'SSL', 'SSSL'],
    'value_embeds': [True], 'activation': ['relu2', 'swiglu'], 'norm': ['rms', 'layernorm'],
    'residual_mix': [True], 'logit_softcap': [15.0], 'tie_embeddings': [True],
    'zero_init_proj': [True], 'optimizer': ['muon'], 'unet_skips': [True],
    'window_warmup': [0.5], 'bigram_buckets': [16384], 'mtp_weight': [0.3],
    'cautious_wd': [True], 'n_kv_heads': [1],
}


def _valid(genotype, max_params: int) -> bool:
  return genotype_lib.is_valid(genotype, max_params, FLAGS.max_step_flops)[0]


def design(baseline: dict, count: int, max_params: int) -> list[dict]:
  """`count` distinct valid genotypes spanning the space (module docstring)."""
  base = {**baseline, 'batch_warmup': 0.0}
  chosen = [base]
  for name in ('n_layers', 'd_model', 'batch_size', 'seq_len'):
    valid = [v for v in genotype_lib.GENE_BY_NAME[name].values
             if _valid({**base, name: v}, max_params)]
    chosen += [{**base, name: valid[0]}, {**base, name: valid[-1]}]
  for name, values in _CATEGORICAL.items():
    chosen += [{**base, name: v} for v in values]
  chosen += [{**base, 'optimizer': 'muon', 'normuon': True},
             {**base, 'window_pattern': 'SSSL', 'short_window': 16}]
  chosen = [genotype_lib.make(g) for g in chosen if _valid(g, max_params)]
  rng = np.random.default_rng(DESIGN_SEED)
  while len(chosen) < count:
    candidate = {**genotype_lib.random_genotype(rng, max_params, FLAGS.max_step_flops),
                 'batch_warmup': 0.0}
    chosen.append(genotype_lib.make(candidate))
  unique = {genotype_lib.genotype_id(g): g for g in chosen}
  return list(unique.values())[:count]


def held_out_ids(ids: list[str]) -> set[str]:
  """The quarter of the design the fit never sees (a seeded draw)."""
  rng = np.random.default_rng(DESIGN_SEED + 1)
  return set(rng.choice(sorted(ids), int(round(len(ids) * HELD_OUT_FRACTION)), replace=False))


def _config():
  config = default.get_config()
  config.trial.clock, config.trial.val_bytes = 'wall', 8192
  config.trial.max_step_fraction = 0.0
  return config


def measure(genotype: dict, corpus, base: TrialConfig) -> dict:
  """One wall-clock trial of `genotype`; its steady-state seconds a step."""
  guess = genotype_lib.step_flops(genotype) / _GUESS_FLOPS_PER_SECOND + 0.002
  budget = max(FLAGS.min_seconds, FLAGS.min_steps * guess)
  cfg = base.__class__(**{**base.__dict__, 'budget_seconds': budget})
  result = runner.run(genotype, corpus, cfg)
  row = {'id': genotype_lib.genotype_id(genotype), 'genotype': genotype,
         'status': result.status, 'reason': result.reason, 'steps': result.steps,
         'budget_seconds': budget, 'wall_train_seconds': result.wall_train_seconds}
  curve = result.loss_curve or []
  if result.status == 'ok' and len(curve) >= 3:
    (t0, n0, _), (t1, n1, _) = curve[0], curve[-1]
    row['step_seconds'] = (t1 - t0) / (n1 - n0)
  return row


def _done(path: str) -> set[str]:
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {json.loads(line)['id'] for line in f if line.strip()}


def lane_main(lane: int, lanes: int) -> None:
  config = _config()
  base = TrialConfig.from_config(config)
  corpus = corpora.corpus_from_config(config)
  path = os.path.join(FLAGS.results, 'steps.jsonl')
  genotypes = design(genotype_lib.from_config(config), FLAGS.genotypes, base.max_params)
  for genotype in genotypes[lane::lanes]:
    if genotype_lib.genotype_id(genotype) in _done(path):
      continue
    row = measure(genotype, corpus, base)
    logging.warning('lane %d: %s %s steps=%d step_seconds=%s', lane, row['id'], row['status'],
                    row['steps'], row.get('step_seconds'))
    with filelock.FileLock(path + '.lock'):
      with open(path, 'a') as f:
        f.write(json.dumps(row) + '\n')


def _fit(rows: list[dict], features) -> dict:
  return step_cost.fit([r['counts'] for r in rows], [r['step_seconds'] for r in rows], features)


def _relative_errors(coefficients: dict, rows: list[dict]) -> np.ndarray:
  return np.array([step_cost.seconds(coefficients, r['counts']) / r['step_seconds'] - 1
                   for r in rows])


def leave_one_out_p90(rows: list[dict], features: tuple) -> float:
  """The 90th percentile of |relative error| of each row predicted by a fit of the others."""
  errors = [abs(_relative_errors(_fit(rows[:i] + rows[i + 1:], features), rows[i:i + 1])[0])
            for i in range(len(rows))]
  return float(np.percentile(errors, 90))


def select_features(rows: list[dict]) -> tuple:
  """The features of the fit: 'flops' and up to `MAX_EXTRA_FEATURES` others, the subset
  with the smallest leave-one-out p90 on the fitting rows (the held-out rows play no
  part)."""
  others = [f for f in step_cost.FEATURES if f != 'flops']
  subsets = [('flops',) + extra for k in range(MAX_EXTRA_FEATURES + 1)
             for extra in itertools.combinations(others, k)]
  return min(subsets, key=lambda features: (leave_one_out_p90(rows, features), len(features)))


def report() -> None:
  with open(os.path.join(FLAGS.results, 'steps.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [dict(r, counts=step_cost.genotype_features(r['genotype'])) for r in rows
          if 'step_seconds' in r]
  held = held_out_ids([r['id'] for r in rows])
  fitting = [r for r in rows if r['id'] not in held]
  testing = [r for r in rows if r['id'] in held]
  features = select_features(fitting)
  coefficients = _fit(fitting, features)
  with open(os.path.join(FLAGS.results, 'fit.json'), 'w') as f:
    json.dump({'coefficients': coefficients, 'features': features,
               'fitted_on': sorted(r['id'] for r in fitting), 'held_out': sorted(held)},
              f, indent=1)
  for name, value in coefficients.items():
    print_figure(f'coefficient_{name}', f'{value:.4g}')
  print_figure('fit_leave_one_out_p90', f'{leave_one_out_p90(fitting, features):.3f}')
  for r, error in zip(testing, _relative_errors(coefficients, testing)):
    print(f'held_out {r["id"]} wall {r["step_seconds"] * 1e3:8.2f} ms modelled '
          f'{step_cost.seconds(coefficients, r["counts"]) * 1e3:8.2f} ms '
          f'error {error:+.3f}')
  for part, chosen in (('fit', fitting), ('held_out', testing)):
    print_figure(f'{part}_genotypes', len(chosen))
    print_figure(f'{part}_error_median',
                 f'{np.median(np.abs(_relative_errors(coefficients, chosen))):.3f}')
  flops_only = _fit(fitting, ('flops',))
  print_figure('flops_only_error_p90',
               f'{np.percentile(np.abs(_relative_errors(flops_only, testing)), 90):.3f}')
  print_figure('clock_error_p90',
               f'{np.percentile(np.abs(_relative_errors(coefficients, testing)), 90):.3f}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(FLAGS.results, exist_ok=True)
  if FLAGS.lane >= 0:
    lane_main(FLAGS.lane, FLAGS.lanes)
    return
  if not FLAGS.fit_only:
    spawn_lanes(__file__, FLAGS.lanes, [
        f'--genotypes={FLAGS.genotypes}', f'--results={FLAGS.results}',
        f'--max_step_flops={FLAGS.max_step_flops}'])
  report()


if __name__ == '__main__':
  app.run(main)

"""Search quality: the PPO agent against the baselines and its own ablations, paired by
seed, on a clock that does not depend on the machine's load.

Each (arm, seed) is one fresh search in its own workdir, run with the main job's code
(trial runner, self-evaluator, keep rule, ledger, checkpoints) until it has spent
`run_seconds` of *modelled* time:

- Training runs on `trial.clock='modelled'`: each step is charged the seconds the
  fitted cost model gives it (`trial.step_cost`, benchmarks/clock_fidelity.py), so a
  trial's outcome is the same on an idle or a busy machine.
- Each trial is charged its training seconds on that clock plus the fixed costs it
  paid, at the rate measured on one lane of the reference machine
  (`Preset.setup_seconds`: build, compile and placement, paid by every trial that got
  as far as compiling, or `Preset.cached_setup_seconds` when a recent trial of the run
  compiled the same programs (`charges`); `Preset.eval_seconds`: scoring, paid by
  every trial trained to its end; and `ROW_SECONDS` of bookkeeping, paid by every row,
  an invalid genotype refused at once included). Trials run until the charge reaches
  `run_seconds`; the row that crosses it is cut from the run's trajectory, its claims
  and its bests (its result came after the run ended). The baseline's noise runs are
  not charged (every arm of a seed shares them: the baseline cache keeps them, so they
  are trained once per seed).
- The CPU presets (`cpu`, `cpu_text`) train 16 s per trial, the shortest budget whose
  ranking of genotypes agrees with 60 s (benchmarks/budget_agreement.py), measure σ
  with 5 baseline runs, and run `CPU_RUN_SECONDS` = 1,341 modelled seconds: 52 rows of
  trials that all compile, so CMA-ES completes 3 generations (46 trials) and random
  search makes about 50; an agent whose edits reuse programs (PPO, random edits)
  makes up to about 75, so PPO updates at least 5 times. A run costs about 30 minutes
  of one lane (its trials, the 12 re-trainings of its snapshots, and for the first arm
  of a seed the 5 noise runs), so the full preset (9 arms x 10 seeds) is about 22 hours
  of both cores. `cpu_strong` is `cpu` started from a strong recipe instead of the
  default (`Preset.start`; benchmarks/strong_start.py makes it).
- Arms: ppo (the default agent), random (edits of the best), random_global, evolution,
  tpe, cmaes, and three ablations of PPO: ppo_frozen (its pretrained policy at
  learning rate 0), ppo_scratch (no pretrained policy), ppo_noeval (the self-evaluator
  off). Their order is shuffled per seed.
- The best genotype of each run at 0, 1/2 and all of its modelled time is re-trained
  with `RETRAIN_SEEDS` fresh seeds (seeds no search used) on val and on test; a run's
  improvement is the re-trained baseline's mean minus the re-trained best's mean (the
  search's own estimate of its best is a maximum of noisy values, so it is not used).

Runs go to `--lanes` worker processes, each pinned to one core with XLA on one thread,
seeds split between them; `--check_lanes` shows that a trial gives the same val_bpb
alone and beside a busy lane. Finished runs are kept in <results>/per_run/ and
re-trained trials in <results>/retrain/ (an interrupted benchmark continues from its
workdirs; another invocation with more --seeds adds runs). The statistics, table and
plot are `search_quality_report.py`'s. Last lines: `seeds_per_agent: N` (the fewest
finished seeds of any arm) and `ppo_vs_best_baseline_ci_low: X`, the lower end of the
bootstrap 95% interval of PPO's re-trained improvement minus that of the best other
(non-PPO) agent, paired by seed, bits per byte.

  python benchmarks/search_quality.py --preset=cpu [--seeds=10] [--lanes=2]
      [--arms=ppo,random] [--results=benchmarks/results/search_quality_cpu]
"""

import collections
import dataclasses
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One XLA thread per lane: a lane's arithmetic is then the same whatever runs beside it.
os.environ.setdefault('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false '
                      'intra_op_parallelism_threads=1')

import filelock  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.search import loop  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from benchmarks import search_quality_report as report  # noqa: E402
from benchmarks.timing import REPO_ROOT, spawn_lanes  # noqa: E402
from configs import default, h100, tiny  # noqa: E402
from models import optim  # noqa: E402

AGENTS = ('ppo', 'random', 'random_global', 'evolution', 'tpe', 'cmaes')
ABLATIONS = ('ppo_frozen', 'ppo_scratch', 'ppo_noeval')
ARMS = AGENTS + ABLATIONS
SNAPSHOTS = (0.0, 0.5, 1.0)     # fractions of a run's modelled time its best is read at
RETRAIN_SEEDS = (90_001, 90_002, 90_003)   # no search trains with these
# Modelled seconds of the bookkeeping every ledger row pays: the checkpoint save after
# each trial (0.090 s, benchmarks/checkpoint_cost.py), the proposal and the ledger write.
ROW_SECONDS = 0.1
# Compiled programs a trial process keeps (the default `trial.program_cache_entries`).
PROGRAM_CACHE_ENTRIES = default.get_config().trial.program_cache_entries


@dataclasses.dataclass(frozen=True)
class Preset:
  config_module: object
  overrides: dict         # dotted config field -> value
  run_seconds: float      # modelled seconds of agent trials per run
  seeds: int
  setup_seconds: float    # modelled seconds a trial pays before training (0: its own wall)
  eval_seconds: float     # modelled seconds of scoring a trained trial
  cached_setup_seconds: float = 0.0   # modelled seconds of a trial whose programs are cached
  corpus: str = ''        # '' = the config's; 'pydoc' = the interpreter's reference manual
  start: str = ''         # '' = the config's baseline; else a genotype JSON (repository path)


CPU_BUDGET_SECONDS = 16.0   # the shortest agreeing with 60 s (benchmarks/budget_agreement.py)
# Fixed costs on one lane, medians of budget_agreement.py's first 40 trials (val 32 KiB):
# set-up of a trial whose programs are new (compile is all of it) or cached, and scoring.
CPU_SETUP_SECONDS, CPU_CACHED_SETUP_SECONDS, CPU_EVAL_SECONDS = 8.8, 0.02, 0.9
# Rows when every trial compiles: CMA-ES's population for 40 genes is 4 + floor(3 ln 40)
# = 15, so its start-up trial and 3 generations are 46; keep-rule re-runs take rows too.
CPU_RUN_ROWS = 52
CPU_RUN_SECONDS = CPU_RUN_ROWS * (CPU_BUDGET_SECONDS + CPU_SETUP_SECONDS + CPU_EVAL_SECONDS
                                  + ROW_SECONDS)
_CPU = {'trial.clock': 'modelled', 'trial.budget_seconds': CPU_BUDGET_SECONDS,
        'trial.val_bytes': 32_768, 'search.noise_repeats': 5}
PRESETS = {
    'cpu': Preset(default, _CPU, CPU_RUN_SECONDS, 10, CPU_SETUP_SECONDS, CPU_EVAL_SECONDS,
                  CPU_CACHED_SETUP_SECONDS),
    'cpu_text': Preset(default, {**_CPU, 'data.val_fraction': 0.1, 'data.test_fraction': 0.1},
                       CPU_RUN_SECONDS, 10, CPU_SETUP_SECONDS, CPU_EVAL_SECONDS,
                       CPU_CACHED_SETUP_SECONDS, corpus='pydoc'),
    # The strong start: the best genotype known at the budget (benchmarks/strong_start.py).
    'cpu_strong': Preset(default, _CPU, CPU_RUN_SECONDS, 10, CPU_SETUP_SECONDS,
                         CPU_EVAL_SECONDS, CPU_CACHED_SETUP_SECONDS,
                         start='benchmarks/results/strong_start/genotype.json'),
    'full': Preset(h100, {'trial.clock': 'flops'}, 8 * 3600.0, 3, 0.0, 0.0),
    'tiny': Preset(tiny, {'trial.clock': 'flops', 'trial.budget_seconds': 0.5,
                          'search.noise_repeats': 2}, 3.0, 2, 1.0, 0.2, 0.1),
}

flags.DEFINE_enum('preset', 'cpu', list(PRESETS), 'Config, run length and seeds.')
flags.DEFINE_list('arms', list(ARMS), f'Arms to run, from {ARMS}.')
flags.DEFINE_integer('seeds', 0, 'Seeds per arm; 0: the preset\'s.')
flags.DEFINE_integer('lanes', 2, 'Worker processes, one core each.')
flags.DEFINE_integer('lane', -1, 'Internal: run as worker LANE of LANES.')
flags.DEFINE_bool('check_lanes', False, 'Train one trial alone and beside a busy lane; compare.')
flags.DEFINE_integer('trial_once', -1, 'Internal: train the baseline once with this seed, '
                     'print its result as JSON.')
flags.DEFINE_string('results', '',
                    'Results folder; default benchmarks/results/search_quality_<preset>.')
FLAGS = flags.FLAGS


def pydoc_corpus(folder: str) -> str:
  """The interpreter's language reference (pydoc's topics: English prose with code), one
  file per topic, written to `folder` once; returns it."""
  import pydoc_data.topics
  os.makedirs(folder, exist_ok=True)
  for name, text in sorted(pydoc_data.topics.topics.items()):
    path = os.path.join(folder, f'{name}.txt')
    if not os.path.exists(path):
      with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
      os.replace(path + '.tmp', path)
  return folder


def base_config(preset: Preset, results: str):
  """The preset's config, shared by every arm (before the arm's own changes)."""
  config = preset.config_module.get_config()
  for dotted, value in preset.overrides.items():
    section, field = dotted.split('.')
    config[section][field] = value
  if preset.corpus == 'pydoc':
    config.data.source, config.data.path = 'text', pydoc_corpus(os.path.join(results, 'corpus'))
  if preset.start:
    config.genotype_json = os.path.join(REPO_ROOT, preset.start)
  config.search.baseline_cache = os.path.join(results, 'baseline_cache')
  config.output.progress_bar = False
  config.output.live_report = config.output.tensorboard = False
  return config


def arm_config(config, arm: str, seed: int):
  """The search config of one arm and seed."""
  config = config.copy_and_resolve_references()
  config.agent.kind = arm.split('_')[0] if arm.startswith('ppo') else arm
  if arm == 'ppo_frozen':
    config.agent.ppo.learning_rate = 0.0
  if arm == 'ppo_scratch':
    config.agent.init_from = 'none'
  if arm == 'ppo_noeval':
    config.evaluator.enabled = False
  config.search.seed = seed
  config.trial.seed = 1000 * seed   # baseline runs seeds 1000s, 1000s+1, ...; edits 1000s
  return config


def program_signature(genotype) -> tuple:
  """What a trial's compiled programs depend on among the genes (`trial.programs.
  ProgramKey`): two genotypes with one signature share programs, so the second compiles
  nothing."""
  return (genotype_lib.model_config(genotype),
          optim.program_config(genotype_lib.optim_config(genotype)),
          genotype['batch_size'], genotype['seq_len'], bool(genotype['batch_warmup']))


def charges(rows, preset: Preset, cache_entries: int = PROGRAM_CACHE_ENTRIES) -> list[float]:
  """Modelled seconds of each ledger row (see the module docstring): a row that built
  its trial pays `setup_seconds`, or `cached_setup_seconds` when the programs of one of
  the `cache_entries` signatures trained most recently in the run serve it (as
  `trial.program_cache_entries` keeps them), so the charge depends on the run alone.
  The baseline's runs are not charged and serve nothing (a later arm of the seed reads
  them from the baseline cache, compiling nothing)."""
  if preset.setup_seconds == 0.0 and preset.eval_seconds == 0.0:
    return [row.total_seconds for row in rows]
  recent = collections.OrderedDict()
  out = []
  for row in rows:
    setup = 0.0
    if not row.is_baseline and (row.steps > 0 or row.compile_seconds > 0):
      signature = program_signature(genotype_lib.make(row.genotype))
      setup = preset.cached_setup_seconds if signature in recent else preset.setup_seconds
      recent[signature] = None
      recent.move_to_end(signature)
      while len(recent) > cache_entries:
        recent.popitem(last=False)
    out.append(ROW_SECONDS + row.train_seconds + setup
               + (preset.eval_seconds if row.scored else 0.0))
  return out


def spent_seconds(rows, preset: Preset) -> float:
  """Modelled seconds of a run's rows (the baseline's runs are not charged)."""
  return sum(c for row, c in zip(rows, charges(rows, preset)) if not row.is_baseline)


def trajectory(rows, preset: Preset) -> list[dict]:
  """Per row that finished within the run's modelled time: modelled seconds when it
  finished (0 for the baseline's runs), status, val_bpb, the search's best after it and
  the best genotype. The row that crosses the run's end is cut: its result came after
  the run ended, so neither it nor a keep it made counts."""
  spent, points, best = 0.0, [], None
  for row, cost in zip(rows, charges(rows, preset)):
    if not row.is_baseline:
      spent += cost
    if spent > preset.run_seconds:
      break
    if row.status == 'keep':
      best = row.genotype
    points.append({'trial': row.trial, 'seconds': spent, 'proposer': row.agent,
                   'status': row.status, 'val_bpb': row.val_bpb, 'best_bpb': row.best_bpb,
                   'best_genotype': best})
  return points


def search_run(preset: Preset, config, arm: str, seed: int, workdir: str) -> dict:
  """One search until its modelled time is spent (resuming its workdir if there is one)."""
  s = loop.Search.open(arm_config(config, arm, seed), workdir)
  try:
    s.measure_noise()
    while spent_seconds(s.store.ledger.read_records(), preset) < preset.run_seconds:
      s.step()
    rows = s.store.ledger.read_records()
  finally:
    s.store.close()
  points = trajectory(rows, preset)
  snapshots = {}
  for fraction in SNAPSHOTS:
    within = [p for p in points if p['seconds'] <= fraction * preset.run_seconds]
    snapshots[str(fraction)] = within[-1]['best_genotype']
  for p in points:
    p['best_genotype'] = genotype_lib.genotype_id(p['best_genotype'])
  return {'arm': arm, 'seed': seed, 'run_seconds': preset.run_seconds,
          'baseline_bpb': float(np.mean(s.state.baseline_bpbs)),
          'search_best_bpb': points[-1]['best_bpb'], 'points': points, 'snapshots': snapshots}


def retrained(genotype: dict, corpus, config, results: str) -> list[dict]:
  """val and test bpb of `genotype` trained once per RETRAIN_SEEDS (kept in
  <results>/retrain/, one file per genotype and seed; a lock lets one lane train it)."""
  folder = os.path.join(results, 'retrain')
  os.makedirs(folder, exist_ok=True)
  out = []
  for seed in RETRAIN_SEEDS:
    path = os.path.join(folder, f'{genotype_lib.genotype_id(genotype)}_{seed}.json')
    with filelock.FileLock(path + '.lock'):
      if not os.path.exists(path):
        cfg = dataclasses.replace(TrialConfig.from_config(config), seed=seed)
        r = runner.run(genotype, corpus, cfg, score_test=True)
        kept = {'status': r.status, 'val_bpb': r.val_bpb, 'test_bpb': r.test_bpb,
                'steps': r.steps, 'reason': r.reason}
        with open(path + '.tmp', 'w') as f:
          json.dump(kept, f)
        os.replace(path + '.tmp', path)
      with open(path) as f:
        out.append(json.load(f))
  return out


def work(preset: Preset, seeds: range, arms: list[str]) -> list[tuple[int, str]]:
  """(seed, arm) in running order: seed by seed, arms shuffled per seed."""
  items = []
  for seed in seeds:
    order = np.random.default_rng(seed).permutation(len(ARMS))
    items += [(seed, ARMS[i]) for i in order if ARMS[i] in arms]
  return items


def run_path(results: str, arm: str, seed: int) -> str:
  return os.path.join(results, 'per_run', f'{arm}_seed{seed}.json')


def lane_main(preset: Preset, results: str, seeds: range, arms: list[str], lane: int,
              lanes: int) -> None:
  """A worker: the runs of its seeds, then the re-training of their snapshots."""
  config = base_config(preset, results)
  corpus = corpora.corpus_from_config(config)
  runner.enable_compilation_cache(os.path.join(results, 'workdirs', 'jax_cache'), 2048.0)
  baseline = genotype_lib.from_config(config)
  for seed, arm in work(preset, seeds, arms):
    if seed % lanes != lane or os.path.exists(run_path(results, arm, seed)):
      continue
    start = time.monotonic()
    run = search_run(preset, config, arm, seed,
                     os.path.join(results, 'workdirs', f'{arm}_seed{seed}'))
    run['retrained'] = {'baseline': retrained(baseline, corpus, config, results)}
    for fraction, genotype in run['snapshots'].items():
      run['retrained'][fraction] = retrained(genotype, corpus, config, results)
    run['snapshots'] = {k: genotype_lib.genotype_id(g) for k, g in run['snapshots'].items()}
    run['wall_seconds'] = time.monotonic() - start
    path = run_path(results, arm, seed)
    with open(path + '.tmp', 'w') as f:
      json.dump(run, f)
    os.replace(path + '.tmp', path)
    print(f'lane {lane}: {arm} seed {seed}: {len(run["points"])} trials, re-trained gain '
          f'{report.run_gain(run, "1.0", "val_bpb"):+.4f} bpb, {run["wall_seconds"]:.0f} s',
          flush=True)


def check_lanes(extra: list[str]) -> None:
  """One trial alone on core 0, then the same trial with another training on core 1:
  prints both results and `lanes_identical: yes|no`."""
  cores = sorted(os.sched_getaffinity(0))

  def start(seed, core):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), f'--trial_once={seed}']
                            + extra, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}))
  alone = json.loads(start(777, cores[0]).communicate()[0].splitlines()[-1])
  pair = [start(777, cores[0]), start(778, cores[-1])]
  beside = json.loads(pair[0].communicate()[0].splitlines()[-1])
  pair[1].communicate()
  print(f'alone: {alone}')
  print(f'beside a busy lane: {beside}')
  print(f'lanes_identical: {"yes" if alone == beside else "no"}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  preset = PRESETS[FLAGS.preset]
  unknown = sorted(set(FLAGS.arms) - set(ARMS))
  if unknown:
    raise app.UsageError(f'unknown arms {unknown}; known: {ARMS}')
  results = os.path.abspath(FLAGS.results or os.path.join(
      'benchmarks', 'results', f'search_quality_{FLAGS.preset}'))
  os.makedirs(os.path.join(results, 'per_run'), exist_ok=True)
  seeds = range(FLAGS.seeds or preset.seeds)
  if FLAGS.trial_once >= 0:
    config = base_config(preset, results)
    cfg = dataclasses.replace(TrialConfig.from_config(config), seed=FLAGS.trial_once)
    r = runner.run(genotype_lib.from_config(config), corpora.corpus_from_config(config), cfg)
    print(json.dumps({'val_bpb': r.val_bpb, 'steps': r.steps, 'loss': r.final_train_loss}))
    return
  if FLAGS.check_lanes:
    check_lanes([f'--preset={FLAGS.preset}', f'--results={results}'])
    return
  if FLAGS.lane >= 0:
    lane_main(preset, results, seeds, FLAGS.arms, FLAGS.lane, FLAGS.lanes)
    return
  started = time.time()
  spawn_lanes(__file__, FLAGS.lanes, [f'--preset={FLAGS.preset}',
                                      f'--arms={",".join(FLAGS.arms)}',
                                      f'--seeds={len(seeds)}', f'--results={results}'])
  runs = [json.load(open(run_path(results, arm, seed))) for seed, arm in work(
      preset, seeds, FLAGS.arms) if os.path.exists(run_path(results, arm, seed))]
  for line in report.write(runs, FLAGS.arms, results, FLAGS.preset, preset,
                           time.time() - started):
    print(line)


if __name__ == '__main__':
  app.run(main)

"""Search quality: the PPO agent against the baselines, same budget, same trials.

For each seed, and for each agent in turn (agents interleaved, so a slow spell of a
shared machine does not fall on one agent's runs only), a fresh search runs in its own
workdir for the same wall-clock budget on the same config: the trial runner, the
self-evaluator, the keep rule, the ledger and the checkpoints are those of the main
job. A run counts the trials that finished within its budget (and the noise runs of the
baseline, which every run has, even where they outlast a short budget); the best-so-far
val_bpb is the search's own best (noise-aware keep rule) after each of them.

Outputs, in --results:
  trajectories.tsv     every trial of every run: agent, seed, trial, seconds, status,
                       val_bpb, best_bpb
  search_quality.png   best-so-far val_bpb against hours, one line per agent (mean over
                       seeds) with the spread (min..max over seeds) as a band
  table.md             agent, final best val_bpb mean ± std, improvement over the
                       baseline, trials run, aborted %, crashed %; with the machine,
                       the date and the preset
  per_run/*.json       one finished run each: a rerun skips the runs already there
The last line: `ppo_vs_best_baseline: X`, the PPO agent's mean improvement over the
baseline genotype (its val_bpb, the mean of the noise runs) divided by the best other
agent's.

Presets:
  cpu   (about 1 h 45 min on a 2-core CPU) the default config with 10 s training
        budgets and 64 KiB of val bytes; six agents x 2 seeds x 8 min.
  full  (accelerator hosts) configs/h100.py (300 s budgets); six agents x 3 seeds x 8 h.
  tiny  (tests) configs/tiny.py, 1 s budgets.

  python benchmarks/search_quality.py --preset=cpu [--agents=ppo,random] [--seeds=2]
      [--run_seconds=480] [--results=benchmarks/results/search_quality_cpu]
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from autoresearch import ledger as ledger_lib, search  # noqa: E402
from configs import default, h100, tiny  # noqa: E402

ALL_AGENTS = ('ppo', 'random', 'random_global', 'evolution', 'tpe', 'cmaes')


@dataclasses.dataclass(frozen=True)
class Preset:
  config_module: object
  run_seconds: float    # wall-clock seconds per run (one agent, one seed)
  seeds: int
  overrides: dict       # dotted config field -> value


PRESETS = {
    'cpu': Preset(default, 8 * 60, 2, {'trial.budget_seconds': 10.0, 'trial.val_bytes': 65_536}),
    'full': Preset(h100, 8 * 3600, 3, {}),
    'tiny': Preset(tiny, 20, 1, {'trial.budget_seconds': 1.0, 'search.noise_repeats': 2}),
}

flags.DEFINE_enum('preset', 'cpu', list(PRESETS), 'Config, budget and seeds.')
flags.DEFINE_list('agents', list(ALL_AGENTS), f'Agents to compare, from {ALL_AGENTS}.')
flags.DEFINE_integer('seeds', 0, 'Seeds per agent; 0: the preset\'s.')
flags.DEFINE_float('run_seconds', 0.0, 'Wall-clock seconds per run; 0: the preset\'s.')
flags.DEFINE_string('results', '',
                    'Results folder; default benchmarks/results/search_quality_<preset>.')
flags.DEFINE_string('workroot', '', 'Folder of the runs\' workdirs; default <results>/workdirs.')
FLAGS = flags.FLAGS


def run_config(preset: Preset, agent: str, seed: int):
  config = preset.config_module.get_config()
  for dotted, value in preset.overrides.items():
    section, field = dotted.split('.')
    config[section][field] = value
  config.agent.kind = agent
  config.search.seed = seed
  config.trial.seed = 1000 * seed   # the same baseline runs for every agent of a seed
  config.search.progress_bar = False
  return config


def run_one(preset: Preset, agent: str, seed: int, run_seconds: float, workdir: str) -> dict:
  """One search for `run_seconds` of wall clock; the trajectory of its finished trials."""
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.monotonic()
  s = search.Search(run_config(preset, agent, seed), workdir)
  points = []

  def record():
    # results.tsv, not trials.jsonl: its rows carry no loss curves, so reading it after
    # every trial stays cheap however many trials the run has.
    for row in ledger_lib.read_tsv(s.store.ledger.tsv_path)[len(points):]:
      val_bpb = float(row['val_bpb'])
      points.append({'trial': int(row['trial']), 'seconds': time.monotonic() - start,
                     'proposer': row['agent'], 'status': row['status'],
                     'val_bpb': val_bpb if val_bpb > 0 else None,  # 0.000000: no score
                     'best_bpb': float(row['best_bpb'])})

  try:
    s.measure_noise()
    record()
    baseline_bpb = s.state.best_bpb
    while time.monotonic() - start < run_seconds:
      s.step()
      record()
  finally:
    s.store.close()
  # The baseline's noise runs count even past the budget: every run has its baseline.
  finished = [p for p in points if p['seconds'] <= run_seconds or p['proposer'] == 'baseline']
  final = finished[-1]['best_bpb'] if finished else math.nan
  return {'agent': agent, 'seed': seed, 'run_seconds': run_seconds, 'baseline_bpb': baseline_bpb,
          'final_best_bpb': final, 'points': finished}


def summarise(runs: list[dict], agent_names: list[str]) -> dict[str, dict]:
  """Per agent: final best val_bpb (mean, std over seeds), mean improvement over the
  baseline, trials per run, and the aborted and crashed shares of its proposals."""
  table = {}
  for agent in agent_names:
    mine = [r for r in runs if r['agent'] == agent]
    if not mine:
      continue
    finals = np.array([r['final_best_bpb'] for r in mine])
    gains = np.array([r['baseline_bpb'] - r['final_best_bpb'] for r in mine])
    statuses = [p['status'] for r in mine for p in r['points'] if p['proposer'] != 'baseline']
    table[agent] = {
        'runs': len(mine), 'best_mean': float(finals.mean()),
        'best_std': float(finals.std(ddof=1)) if len(mine) > 1 else 0.0,
        'gain_mean': float(gains.mean()),
        'trials': float(np.mean([len(r['points']) for r in mine])),
        'aborted': 100.0 * statuses.count('aborted') / max(1, len(statuses)),
        'crashed': 100.0 * statuses.count('crash') / max(1, len(statuses)),
    }
  return table


def ppo_vs_best_baseline(table: dict[str, dict]) -> float:
  """PPO's mean improvement over the baseline / the best other agent's (nan without PPO
  or without another agent; inf when no other agent improved and PPO did)."""
  others = [row['gain_mean'] for agent, row in table.items() if agent != 'ppo']
  if 'ppo' not in table or not others:
    return math.nan
  best_other, ppo = max(others), table['ppo']['gain_mean']
  if best_other <= 0:
    return math.inf if ppo > 0 else math.nan
  return ppo / best_other


def write_tsv(runs: list[dict], path: str) -> None:
  columns = ('agent', 'seed', 'trial', 'seconds', 'proposer', 'status', 'val_bpb', 'best_bpb')
  with open(path, 'w') as f:
    f.write('\t'.join(columns) + '\n')
    for run in runs:
      for p in run['points']:
        row = dict(p, agent=run['agent'], seed=run['seed'])
        f.write('\t'.join('' if row[c] is None else
                          f'{row[c]:.6f}' if isinstance(row[c], float) else str(row[c])
                          for c in columns) + '\n')


def best_on_grid(run: dict, grid_seconds: np.ndarray) -> np.ndarray:
  """The run's best-so-far val_bpb at each time of the grid (nan before its first trial)."""
  out = np.full(len(grid_seconds), np.nan)
  for p in run['points']:
    out[grid_seconds >= p['seconds']] = p['best_bpb']
  return out


def plot(runs: list[dict], agent_names: list[str], path: str, title: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  horizon = max(r['run_seconds'] for r in runs)
  grid = np.linspace(0, horizon, 400)
  fig, ax = plt.subplots(figsize=(8, 5))
  for agent in agent_names:
    mine = [best_on_grid(r, grid) for r in runs if r['agent'] == agent]
    if not mine:
      continue
    curves = np.stack(mine)
    ok = ~np.isnan(curves).any(axis=0)
    hours = grid[ok] / 3600
    line, = ax.plot(hours, curves[:, ok].mean(axis=0), label=f'{agent} ({len(mine)} seeds)')
    ax.fill_between(hours, curves[:, ok].min(axis=0), curves[:, ok].max(axis=0),
                    color=line.get_color(), alpha=0.15, linewidth=0)
  ax.set_xlabel('wall-clock hours')
  ax.set_ylabel('best-so-far val_bpb (lower is better)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def table_markdown(table: dict[str, dict]) -> list[str]:
  lines = ['| agent | final best val_bpb (mean ± std) | improvement over baseline (bpb) | '
           'trials per run | aborted % | crashed % |', '|---|---|---|---|---|---|']
  for agent, row in table.items():
    lines.append(f'| {agent} | {row["best_mean"]:.4f} ± {row["best_std"]:.4f} | '
                 f'{row["gain_mean"]:+.4f} | {row["trials"]:.1f} | {row["aborted"]:.0f} | '
                 f'{row["crashed"]:.0f} |')
  return lines


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  preset = PRESETS[FLAGS.preset]
  unknown = sorted(set(FLAGS.agents) - set(ALL_AGENTS))
  if unknown:
    raise app.UsageError(f'unknown agents {unknown}; known: {ALL_AGENTS}')
  seeds = FLAGS.seeds or preset.seeds
  run_seconds = FLAGS.run_seconds or preset.run_seconds
  results = FLAGS.results or os.path.join('benchmarks', 'results', f'search_quality_{FLAGS.preset}')
  workroot = FLAGS.workroot or os.path.join(results, 'workdirs')
  os.makedirs(os.path.join(results, 'per_run'), exist_ok=True)
  started = time.time()
  runs = []
  for seed in range(seeds):
    for agent in FLAGS.agents:
      path = os.path.join(results, 'per_run', f'{agent}_seed{seed}.json')
      if os.path.exists(path):
        with open(path) as f:
          run = json.load(f)
        if run['run_seconds'] == run_seconds:
          runs.append(run)
          continue
      run = run_one(preset, agent, seed, run_seconds, os.path.join(workroot, f'{agent}_seed{seed}'))
      with open(path + '.tmp', 'w') as f:
        json.dump(run, f)
      os.replace(path + '.tmp', path)
      runs.append(run)
      print(f'{agent} seed {seed}: {len(run["points"])} trials, baseline '
            f'{run["baseline_bpb"]:.4f} -> best {run["final_best_bpb"]:.4f}', flush=True)

  table = summarise(runs, FLAGS.agents)
  ratio = ppo_vs_best_baseline(table)
  write_tsv(runs, os.path.join(results, 'trajectories.tsv'))
  minutes = run_seconds / 60
  plot(runs, FLAGS.agents, os.path.join(results, 'search_quality.png'),
       f'preset {FLAGS.preset}: {seeds} seed(s) x {minutes:g} min per agent')
  header = [
      f'# Search quality, preset `{FLAGS.preset}`', '',
      f'- date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, '
      f'{os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.default_backend()} '
      f'({jax.devices()[0].device_kind})',
      f'- {seeds} seed(s) x {minutes:g} min of wall clock per agent, agents interleaved; '
      f'config overrides {preset.overrides or "none"}',
      f'- this invocation: {(time.time() - started) / 60:.0f} min', '']
  lines = header + table_markdown(table) + ['', f'ppo_vs_best_baseline: {ratio:.3f}']
  with open(os.path.join(results, 'table.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(table_markdown(table)))
  print(f'ppo_vs_best_baseline: {ratio:.3f}')


if __name__ == '__main__':
  app.run(main)

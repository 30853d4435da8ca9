"""A trial's fixed seconds (everything but training), old code against new, paired.

    python benchmarks/trial_overhead.py --old=COMMIT [--trials=40] [--budget_seconds=1]
        [--mixes=ppo,cmaes,random_global,gene_edits]

1. **Proposals.** Each mix is the sequence of genotypes a search trains, regenerated
   the way the search-quality preset's searches make them: the agent (`ppo`, `cmaes`,
   `random_global`) runs the real search loop for `--trials` rows on a synthetic
   landscape (`LANDSCAPE_SEED`) under the preset's config
   (`search_quality.PRESETS['cpu']`), and its ledger's genotypes, in order, baseline
   runs included, are the mix. `gene_edits` is the tiny config's baseline followed by
   every single-gene edit of it (every gene, every other value): there the question is
   whether old and new code train the same numbers. Mixes are kept in
   <results>/mixes/ so a rerun replays the same sequences.
2. **Paired runs.** For each mix the old code (`git archive` of `--old`, unpacked under
   benchmarks/results/tmp/) and this tree's run the sequence in one process each, at
   the same time, one pinned to each core (swapped from mix to mix), XLA on one
   thread, each with a fresh persistent compilation cache: a search from an empty
   workdir. Trials run the preset's trial settings at `--budget_seconds` of the FLOPs
   clock (what a trial pays besides training does not depend on its budget).
3. **Fixed seconds** of a trial = its total seconds - its wall seconds of training:
   building, compiling, placement, the loop's start and end, and scoring.

Prints per mix and code the median, 90th percentile and mean of fixed seconds, and the
mean split into compile, scoring and the rest (building, placement, the loop's start
and end); per mix the largest |new - old| val_bpb over trials both scored; then
`fixed_seconds_median` and `fixed_seconds_p90` (new code, PPO mix) and the last line
`trials_per_hour_ratio: X`: trials per hour at a 4 s budget, new over old, on the PPO
mix, (4 + old mean fixed seconds) / (4 + new mean fixed seconds). A (mix, code) run
that stopped is started again; finished ones are kept in <results>/trials.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIXES = ('ppo', 'cmaes', 'random_global', 'gene_edits')
LANDSCAPE_SEED = 7_000      # the landscape the agents' mixes are drawn on (a test seed)
BUDGET_FOR_RATIO = 4.0      # training seconds per trial at which trials per hour compare


def _code_path() -> None:
  """Imports from --code (the code under test) when run as a worker, else this tree."""
  code = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--code=')), ROOT)
  sys.path.insert(0, os.path.abspath(code))


def _worker_config(mix: str, budget_seconds: float):
  """The trial settings a mix runs under, from the code under test's own configs."""
  from configs import default, tiny
  config = (tiny if mix == 'gene_edits' else default).get_config()
  config.trial.clock = 'flops'
  config.trial.budget_seconds = budget_seconds
  if mix == 'gene_edits':
    config.trial.max_steps = 20         # a tiny model at a 1 s budget would take thousands
  else:
    config.trial.val_bytes = 32_768     # the search-quality preset's
  return config


def worker(code: str, mix_file: str, out: str, budget_seconds: float, cache_dir: str) -> None:
  """Runs the mix's genotypes in order with the code in `code`, one JSON line each."""
  from autoresearch.data import corpora
  from autoresearch.trial import runner
  from autoresearch.trial.config import TrialConfig
  mix = os.path.basename(mix_file).removesuffix('.json')
  config = _worker_config(mix, budget_seconds)
  runner.enable_compilation_cache(cache_dir, 2048.0)
  corpus = corpora.corpus_from_config(config)
  with open(mix_file) as f:
    genotypes = json.load(f)
  cfg = TrialConfig.from_config(config)
  with open(out, 'w') as f:
    for index, genotype in enumerate(genotypes):
      r = runner.run(genotype, corpus, dataclasses.replace(cfg, seed=index))
      row = {'index': index, 'genotype_id': r.genotype_id, 'status': r.status,
             'reason': r.reason[:200], 'val_bpb': r.val_bpb, 'steps': r.steps,
             'compile_seconds': r.compile_seconds, 'eval_seconds': r.eval_seconds,
             'wall_train_seconds': r.wall_train_seconds, 'total_seconds': r.total_seconds}
      f.write(json.dumps(row) + '\n')
      f.flush()


def agent_mix(agent: str, trials: int) -> list[dict]:
  """The genotypes, in order, of a search by `agent` on the preset's config."""
  from autoresearch.synthetic import harness, landscape
  from benchmarks import search_quality
  import jax
  preset = search_quality.PRESETS['cpu']
  config = search_quality.base_config(preset, tempfile.mkdtemp())
  config.search.baseline_cache = 'none'
  config = search_quality.arm_config(config, agent, seed=0)
  config = harness.search_config(config, seed=0, max_trials=trials)
  s = harness.search_on(landscape.draw(jax.random.key(LANDSCAPE_SEED),
                                       config.trial.budget_seconds), config,
                        workdir=tempfile.mkdtemp())   # Optuna's agents keep a study there
  return [dict(row.genotype) for row in s.store.rows]


def gene_edits_mix() -> list[dict]:
  """The tiny baseline, then every valid single-gene edit of it."""
  from autoresearch.space import genotype as genotype_lib
  from configs import tiny
  base = genotype_lib.from_config(tiny.get_config())
  out = [base]
  for i, gene in enumerate(genotype_lib.GENES):
    for j, value in enumerate(gene.values):
      edited = genotype_lib.apply_edit(base, i, j)
      if value != base[gene.name] and genotype_lib.is_valid(edited)[0]:
        out.append(edited)
  return out


def mix_file(results: str, mix: str, trials: int) -> str:
  """<results>/mixes/<mix>.json, made once."""
  path = os.path.join(results, 'mixes', f'{mix}.json')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    genotypes = gene_edits_mix() if mix == 'gene_edits' else agent_mix(mix, trials)
    with open(path + '.tmp', 'w') as f:
      json.dump(genotypes, f, indent=0)
    os.replace(path + '.tmp', path)
  return path


def old_code(commit: str) -> str:
  """The tree of `commit`, unpacked once under benchmarks/results/tmp/."""
  folder = os.path.join(ROOT, 'benchmarks', 'results', 'tmp', f'code_{commit}')
  if not os.path.exists(folder):
    os.makedirs(folder + '.tmp', exist_ok=True)
    archive = subprocess.run(['git', 'archive', commit], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(['tar', '-x', '-C', folder + '.tmp'], input=archive, check=True)
    os.replace(folder + '.tmp', folder)
  return folder


def run_pair(results: str, mix: str, path: str, codes: dict, budget_seconds: float,
             swap: bool) -> None:
  """Both codes run the mix at once, one per core; their rows join trials.jsonl."""
  cores = sorted(os.sched_getaffinity(0))
  env = dict(os.environ, XLA_FLAGS='--xla_cpu_multi_thread_eigen=false '
             'intra_op_parallelism_threads=1')
  procs, outs = [], {}
  for k, (name, code) in enumerate(codes.items()):
    core = cores[(k + swap) % len(cores)]
    outs[name] = os.path.join(results, f'part_{mix}_{name}.jsonl')
    cache = tempfile.mkdtemp(prefix=f'jax_cache_{name}_')
    # taskset, not a preexec_fn: no Python runs in the child between fork and exec (this
    # process has JAX's threads running).
    procs.append(subprocess.Popen(
        ['taskset', '-c', str(core), sys.executable, os.path.abspath(__file__), '--worker',
         f'--code={code}', f'--mix_file={path}', f'--out={outs[name]}',
         f'--budget_seconds={budget_seconds}', f'--cache_dir={cache}'], env=env))
  if any(p.wait() for p in procs):
    sys.exit(f'trial_overhead: a worker of mix {mix} failed; rerun to start it again')
  with open(os.path.join(results, 'trials.jsonl'), 'a') as f:
    for name, out in outs.items():
      with open(out) as part:
        for line in part:
          f.write(json.dumps({'mix': mix, 'code': name, **json.loads(line)}) + '\n')
      os.remove(out)


def _quantile(values: list[float], q: float) -> float:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(rows: list[dict]) -> dict:
  """Fixed-seconds figures of one (mix, code)'s rows."""
  fixed = [r['total_seconds'] - r['wall_train_seconds'] for r in rows]
  return {'n': len(rows), 'median': statistics.median(fixed), 'p90': _quantile(fixed, 0.9),
          'mean': statistics.mean(fixed),
          'compile_mean': statistics.mean(r['compile_seconds'] for r in rows),
          'eval_mean': statistics.mean(r['eval_seconds'] for r in rows),
          'refused': sum(r['status'] == 'crash' and r['reason'].startswith('invalid genotype')
                         for r in rows),
          'compiled_under_0.05s': sum(r['compile_seconds'] < 0.05 and r['steps'] > 0
                                      for r in rows)}


def report(results: str, mixes) -> None:
  path = os.path.join(results, 'trials.jsonl')
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  figures = {}
  for mix in mixes:
    by_code = {code: {r['index']: r for r in rows if r['mix'] == mix and r['code'] == code}
               for code in ('old', 'new')}
    if not all(by_code.values()):
      continue
    for code, mine in by_code.items():
      figures[mix, code] = s = summary(list(mine.values()))
      print(f'{mix} {code}: {s["n"]} trials, fixed seconds median {s["median"]:.3f}, '
            f'p90 {s["p90"]:.3f}, mean {s["mean"]:.3f} (compile {s["compile_mean"]:.3f}, '
            f'scoring {s["eval_mean"]:.3f}, the rest '
            f'{s["mean"] - s["compile_mean"] - s["eval_mean"]:.3f}); '
            f'{s["refused"]} refused at once, {s["compiled_under_0.05s"]} of the rest compiled '
            f'in < 0.05 s')
    both = [(o['val_bpb'], by_code['new'][i]['val_bpb']) for i, o in by_code['old'].items()
            if i in by_code['new'] and o['status'] == by_code['new'][i]['status'] == 'ok']
    worst = max((abs(a - b) for a, b in both), default=float('nan'))
    same_status = sum(o['status'] == by_code['new'].get(i, {}).get('status')
                      for i, o in by_code['old'].items())
    print(f'{mix}: max |new - old| val_bpb {worst:.2e} over {len(both)} trials both scored; '
          f'same status in {same_status} of {len(by_code["old"])}')
  for mix in mixes:
    if (mix, 'new') in figures:
      old, new = figures[mix, 'old'], figures[mix, 'new']
      ratio = (BUDGET_FOR_RATIO + old['mean']) / (BUDGET_FOR_RATIO + new['mean'])
      print(f'{mix}: trials per hour at {BUDGET_FOR_RATIO:.0f} s, new / old: {ratio:.3f}')
  if ('ppo', 'new') in figures:
    old, new = figures['ppo', 'old'], figures['ppo', 'new']
    print(f'fixed_seconds_median: {new["median"]:.3f}')
    print(f'fixed_seconds_p90: {new["p90"]:.3f}')
    print(f'trials_per_hour_ratio: '
          f'{(BUDGET_FOR_RATIO + old["mean"]) / (BUDGET_FOR_RATIO + new["mean"]):.3f}')


def main(argv) -> None:
  del argv
  from absl import app
  if FLAGS.worker:
    worker(FLAGS.code, FLAGS.mix_file, FLAGS.out, FLAGS.budget_seconds, FLAGS.cache_dir)
    return
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  done = set()
  path = os.path.join(FLAGS.results_dir, 'trials.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      done = {(r['mix'], r['code']) for r in map(json.loads, filter(str.strip, f))}
  if not FLAGS.report:
    if not FLAGS.old:
      raise app.UsageError('--old=COMMIT: the code to compare with')
    codes = {'old': old_code(FLAGS.old), 'new': ROOT}
    for k, mix in enumerate(FLAGS.mixes):
      if not {(mix, 'old'), (mix, 'new')} <= done:
        run_pair(FLAGS.results_dir, mix, mix_file(FLAGS.results_dir, mix, FLAGS.trials), codes,
                 FLAGS.budget_seconds, swap=bool(k % 2))
  report(FLAGS.results_dir, FLAGS.mixes)


if __name__ == '__main__':
  _code_path()
  from absl import app, flags
  flags.DEFINE_string('old', '', 'The commit whose code is "old".')
  flags.DEFINE_list('mixes', list(MIXES), f'Mixes, from {MIXES}.')
  flags.DEFINE_integer('trials', 40, 'Rows per agent mix (baseline runs included).')
  flags.DEFINE_float('budget_seconds', 1.0, 'Training seconds per trial (FLOPs clock).')
  flags.DEFINE_string('results_dir', os.path.join(ROOT, 'benchmarks', 'results',
                                                   'trial_overhead'), 'Results folder.')
  flags.DEFINE_bool('report', False, 'Only print what the results folder holds.')
  flags.DEFINE_bool('worker', False, 'Internal: run one mix with --code.')
  flags.DEFINE_string('code', ROOT, 'Internal: the code a worker runs.')
  flags.DEFINE_string('mix_file', '', 'Internal: the mix a worker runs.')
  flags.DEFINE_string('out', '', 'Internal: the JSONL a worker writes.')
  flags.DEFINE_string('cache_dir', '', 'Internal: the worker\'s compilation cache.')
  FLAGS = flags.FLAGS
  app.run(main)

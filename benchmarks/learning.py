"""Does the PPO agent learn? Every agent on synthetic landscapes, paired by seed.

For each seed s (landscape `draw(key(s))`, search seed s) and each agent, the real
search loop runs 120 trials on the landscape in memory (`harness.search_on`: baseline
runs, keep rule, rewards and view as in a real search). A search's outcome after k
trials is the *true* gain of its best then: the landscape's noiseless val_bpb of the
baseline minus that of the best genotype (no winner's curse: the search's own estimate
of its best is not used). Seeds start at 6000 by default; the pretrained policy never
saw a landscape below pretrain.TEST_SEED_LIMIT, and seeds 1000-1999 were used to design
the agent (keep them out of a report).

Agents: ppo_pretrained (the shipped policy, learning online as in a default search),
ppo_scratch (init_from=none), ppo_frozen (the shipped policy, learning rate 0), ppo_dyna
(the shipped policy learning also from imagined edits, dyna.py), random (random edits of
the best), random_global (random search), evolution, tpe, cmaes.

Outputs in --results: runs.jsonl (one line per finished (agent, seed): a rerun skips
those already there, so the benchmark resumes) and table.md (mean true gain with its
bootstrap 95% CI after 30, 60 and 120 trials; paired differences). The last line:
`ppo_minus_best_baseline_synthetic: MEAN ci_low=L ci_high=H`, PPO pretrained minus the
best other non-PPO agent (by mean on these seeds) after 60 trials, paired by seed.

  python benchmarks/learning.py [--seeds=100] [--first_seed=6000] [--agents=a,b]
      [--policy=policies/default] [--results=benchmarks/results/learning]
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch import pretrain  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.synthetic import harness, landscape  # noqa: E402
from benchmarks import stats  # noqa: E402
from configs import default  # noqa: E402

AGENTS = ('ppo_pretrained', 'ppo_scratch', 'ppo_frozen', 'ppo_dyna', 'random', 'random_global',
          'evolution', 'tpe', 'cmaes')
DYNA_IMAGINED = 8   # ppo_dyna's imagined edits per real transition
CHECKPOINTS = (30, 60, 120)   # trials after which the best is read
HEADLINE_TRIALS = 60

flags.DEFINE_integer('seeds', 100, 'Landscapes (paired seeds) per agent.')
flags.DEFINE_integer('first_seed', 6000, 'First landscape seed.')
flags.DEFINE_list('agents', list(AGENTS), 'Agents to run.')
flags.DEFINE_string('policy', 'policies/default', 'The pretrained policy folder.')
flags.DEFINE_string('results', 'benchmarks/results/learning', 'Output folder.')
FLAGS = flags.FLAGS


def agent_config(config, name: str, policy: str):
  """`config` with the agent `name` set up."""
  config = config.copy_and_resolve_references()
  kind = name.split('_')[0] if name.startswith('ppo') else name
  config.agent.kind = kind
  config.agent.init_from = 'none' if name == 'ppo_scratch' else policy
  if name == 'ppo_frozen':
    config.agent.ppo.learning_rate = 0.0
  if name == 'ppo_dyna':
    config.agent.dyna.imagined = DYNA_IMAGINED
  return config


def best_after(rows, trials: int) -> dict:
  """The best genotype after the first `trials` ledger rows (the last kept one)."""
  kept = [r for r in rows if r.trial <= trials and r.status == 'keep']
  return kept[-1].genotype


def run_one(config, name: str, seed: int, policy: str, corpus) -> dict:
  if seed >= pretrain.TEST_SEED_LIMIT:
    raise ValueError(f'seed {seed} is in the pretraining range')
  cfg = harness.search_config(agent_config(config, name, policy), seed, max(CHECKPOINTS))
  land = landscape.draw(jax.random.key(seed), cfg.trial.budget_seconds)
  start = time.time()
  with tempfile.TemporaryDirectory() as workdir:   # Optuna's study
    s = harness.search_on(land, cfg, corpus, workdir=workdir)
  baseline = genotype_lib.from_config(cfg)
  gains = {str(k): landscape.true_gain(land, baseline, best_after(s.store.rows, k))
           for k in CHECKPOINTS}
  return {'agent': name, 'seed': seed, 'true_gain': gains, 'seconds': time.time() - start,
          'keeps': sum(r.status == 'keep' for r in s.store.rows) - cfg.search.noise_repeats,
          'crashes': sum(r.status == 'crash' for r in s.store.rows)}


def read_runs(path: str) -> dict:
  runs = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          run = json.loads(line)
          runs[(run['agent'], run['seed'])] = run
  return runs


def table(runs: dict, agents, seeds) -> tuple[list[str], str]:
  """(table.md lines, the headline line)."""
  gain = lambda a, k: [runs[(a, s)]['true_gain'][str(k)] for s in seeds]
  present = [a for a in agents if all((a, s) in runs for s in seeds)]
  lines = [f'True gain of the best over the baseline (bpb, noiseless landscape), mean and '
           f'bootstrap 95% CI over {len(seeds)} paired seeds ({seeds[0]}..{seeds[-1]})', '',
           '| agent | ' + ' | '.join(f'{k} trials' for k in CHECKPOINTS) + ' | s/search |',
           '|---|' + '---|' * (len(CHECKPOINTS) + 1)]
  for a in present:
    cells = []
    for k in CHECKPOINTS:
      ci = stats.bootstrap_mean(gain(a, k))
      cells.append(f'{ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}]')
    seconds = sum(runs[(a, s)]['seconds'] for s in seeds) / len(seeds)
    lines.append(f'| {a} | ' + ' | '.join(cells) + f' | {seconds:.2f} |')
  headline = 'ppo_minus_best_baseline_synthetic: unavailable (missing agents)'
  others = [a for a in present if not a.startswith('ppo')]
  if 'ppo_pretrained' in present and others:
    lines += ['', f'Paired differences after {HEADLINE_TRIALS} trials (bpb; positive: the '
              'first agent found better recipes), bootstrap 95% CI, sign-flip p:', '']
    ppo = gain('ppo_pretrained', HEADLINE_TRIALS)
    for a in [x for x in present if x != 'ppo_pretrained']:
      d = [p - q for p, q in zip(ppo, gain(a, HEADLINE_TRIALS))]
      ci = stats.bootstrap_mean(d)
      lines.append(f'- ppo_pretrained - {a}: {ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}], '
                   f'p = {stats.sign_flip_p(d):.4f}')
    best = max(others, key=lambda a: sum(gain(a, HEADLINE_TRIALS)))
    ci = stats.bootstrap_mean([p - q for p, q in zip(ppo, gain(best, HEADLINE_TRIALS))])
    headline = (f'ppo_minus_best_baseline_synthetic: {ci.mean:.4f} ci_low={ci.low:.4f} '
                f'ci_high={ci.high:.4f}')
    lines += ['', f'Best other non-PPO agent: {best}. {headline}']
  return lines, headline


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  for name in FLAGS.agents:
    if name not in AGENTS:
      raise app.UsageError(f'--agents: {name!r} not in {AGENTS}')
  os.makedirs(FLAGS.results, exist_ok=True)
  path = os.path.join(FLAGS.results, 'runs.jsonl')
  runs = read_runs(path)
  config = default.get_config()
  corpus = corpora.corpus_from_config(config)
  seeds = list(range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds))
  for seed in seeds:   # agents interleaved: a partial run covers every agent alike
    for name in FLAGS.agents:
      if (name, seed) not in runs:
        runs[(name, seed)] = run_one(config, name, seed, FLAGS.policy, corpus)
        with open(path, 'a') as f:
          f.write(json.dumps(runs[(name, seed)]) + '\n')
        print(f'{name} seed {seed}: true gain after 60 trials '
              f'{runs[(name, seed)]["true_gain"]["60"]:.4f}', flush=True)
  lines, headline = table(runs, AGENTS, seeds)   # every agent with all its seeds so far
  with open(os.path.join(FLAGS.results, 'table.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines[:-1]))
  print(headline)


if __name__ == '__main__':
  app.run(main)

"""What the PPO agent costs per trial, against what a trial costs.

Measures, on the default config: building the search's view (the edit mask of a new
best included, as if every trial were a keep), `propose` (the policy's features
included), `observe` without an update, and one PPO update (amortised over the
`update_every` trials it serves), all after compilation; then one real default trial
(compile + train + eval), in the same run. Prints `agent_overhead_fraction: X` last:
agent seconds per trial / trial wall seconds.

With --imagined=K (config.agent.dyna.imagined) the update includes fitting the world
model on a full memory and K imagined edits per real transition (dyna.py).

  python benchmarks/agent_overhead.py [--trial_seconds=S] [--imagined=K]
      (S: skip the real trial)
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.agents.api import Outcome  # noqa: E402
from autoresearch.agents.ppo.agent import PPOAgent  # noqa: E402
from benchmarks.examples import (  # noqa: E402
    example_history, example_view, print_trial_fraction)
from configs import default  # noqa: E402

flags.DEFINE_float('trial_seconds', 0.0, 'Use this trial wall time instead of running one.')
flags.DEFINE_integer('imagined', 0, 'Imagined edits per real transition (0: the default).')
flags.DEFINE_integer('repeats', 20, 'Timed repetitions of each agent operation.')
FLAGS = flags.FLAGS


def _best_of(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times), float(np.median(times))


def main(_):
  config = default.get_config()
  config.agent.dyna.imagined = FLAGS.imagined
  agent = PPOAgent(config.agent, seed=0)
  rng = np.random.default_rng(0)
  history = example_history(rng, 40)

  def observation():
    # A best never seen before, as after every keep: the edit mask (memoised per
    # genotype) built afresh. Counted for every trial, so an upper bound.
    genotype_lib._edit_mask.cache_clear()
    genotype_lib._reads.cache_clear()
    return example_view(config, history)

  obs = observation()
  proposal = agent.propose(obs)
  outcome = lambda: Outcome(obs.best_genotype, 'discard', 2.45 + 0.01 * rng.normal())
  # A full world-model memory (its fit costs the same at any fill: fixed shapes), and
  # two updates to compile.
  for _ in range(max(2 * agent.update_every, agent.dyna.config.model.capacity)):
    agent.observe(obs, proposal, float(rng.normal()), obs, outcome())

  obs_best, obs_median = _best_of(observation, FLAGS.repeats)
  propose_best, propose_median = _best_of(lambda: agent.propose(obs), FLAGS.repeats)

  def observe_without_update():
    agent.buffered = 0  # one transition in the buffer: no update
    agent.observe(obs, proposal, 0.1, obs, outcome())

  observe_best, _ = _best_of(observe_without_update, FLAGS.repeats)
  update_times = []
  for _ in range(5):
    agent.buffered = agent.update_every - 1  # the next transition triggers an update
    start = time.perf_counter()
    metrics = agent.observe(obs, proposal, 0.3, obs, outcome())
    update_times.append(time.perf_counter() - start)
    assert metrics, 'the observe call above must have run an update'
    assert FLAGS.imagined == 0 or 'wm_loss' in metrics, 'the update must have imagined'
  update = float(np.median(update_times))

  per_trial = obs_median + propose_median + observe_best + update / agent.update_every
  print(f'observation_ms: {1e3 * obs_median:.2f}')
  print(f'propose_ms: {1e3 * propose_median:.2f}')
  print(f'observe_ms: {1e3 * observe_best:.3f}')
  print(f'ppo_update_ms: {1e3 * update:.1f} (every {agent.update_every} trials)')
  print(f'agent_seconds_per_trial: {per_trial:.4f}')
  print_trial_fraction(config, FLAGS.trial_seconds, 'agent_overhead_fraction', per_trial, 5)


if __name__ == '__main__':
  app.run(main)

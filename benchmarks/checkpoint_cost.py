"""What checkpointing the whole search state costs per trial, against a trial.

Builds the default search's state as it is after a trial (PPO policy, Adam state,
a full rollout buffer, 30 history rows, the step's ledger row with its loss curve),
times `Store.save` (the checkpoint, then the ledger row) and the checkpoint's restore
(median of repeats, in a temporary folder), then runs one real default trial in the same
process. Prints `checkpoint_fraction: X` last: (save + restore seconds) / trial wall
seconds. A search saves once per trial and restores once per start, so this bounds its
share.

  python benchmarks/checkpoint_cost.py [--trial_seconds=S]   (S: skip the real trial)
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from autoresearch.search import state as search_state  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.workdir import store  # noqa: E402
from autoresearch.agents.ppo.agent import PPOAgent  # noqa: E402
from autoresearch.trial.results import TrialResult  # noqa: E402
from autoresearch.workdir.records import TrialRecord  # noqa: E402
from benchmarks.examples import (  # noqa: E402
    example_history, example_view, print_trial_fraction)
from configs import default  # noqa: E402

flags.DEFINE_float('trial_seconds', 0.0, 'Use this trial wall time instead of running one.')
flags.DEFINE_integer('repeats', 10, 'Timed saves and restores.')
FLAGS = flags.FLAGS


def main(_):
  config = default.get_config()
  best = genotype_lib.from_config(config)
  agent = PPOAgent(config.agent, seed=0)
  rng = np.random.default_rng(0)
  history = example_history(rng, config.agent.history)
  view = example_view(config, history)
  for _ in range(config.agent.update_every - 1):  # a nearly full rollout buffer
    agent.observe(view, agent.propose(view), float(rng.normal()), view, None)
  curve = [[0.08 * i, i, 5.0 / (1 + 0.01 * i)] for i in range(1, 760)]  # a 60 s CPU trial
  result = TrialResult('0' * 12, best, 'ok', val_bpb=1.75, loss_curve=curve)
  row = TrialRecord.from_result(result, trial=41, agent='ppo', status='discard',
                                description='n_layers 2->3', best_bpb=1.75, sigma=0.004,
                                budget_seconds=60.0)
  state = search_state.SearchState(trials=41, proposals=38, best_genotype=best, best_bpb=1.75,
                                   sigma=0.004, baseline_bpbs=[1.75, 1.752, 1.748],
                                   history=[entry.to_json() for entry in history])
  meta = {'state': state.to_json(), 'calibration': None, 'reference': None}

  saves, restores = [], []
  with tempfile.TemporaryDirectory() as folder:
    workdir = store.Store(folder, config)
    checkpoints = os.path.join(folder, 'checkpoints')
    for step in range(FLAGS.repeats):
      start = time.perf_counter()
      workdir.save(step, agent, meta, [row])
      saves.append(time.perf_counter() - start)
      start = time.perf_counter()
      workdir.checkpointer.restore({'agent': agent.state_dict()[0]})
      restores.append(time.perf_counter() - start)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(checkpoints)
               for f in fs)
    workdir.close()
  save, restore = float(np.median(saves)), float(np.median(restores))
  print(f'checkpoint_mb: {size / config.checkpoint.keep / 1e6:.2f}')
  print(f'save_seconds: {save:.3f}')
  print(f'restore_seconds: {restore:.3f}')
  print_trial_fraction(config, FLAGS.trial_seconds, 'checkpoint_fraction', save + restore, 4)


if __name__ == '__main__':
  app.run(main)

"""A search with K parallel trials on fake CPU devices and a stand-in trial runner.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/parallel_search_script.py \
      WORKDIR K MAX_TRIALS LOG [POINT:N]

The stand-in trains nothing: it sleeps 0.2 s and returns a val_bpb that is a fixed
function of the genotype (and the seed), and appends (devices, start, end, thread) of
each call to LOG as JSON lines, so the test can check where and when trials ran.
POINT:N kills the process the N-th time the search reaches that point (tests/helpers/faults.py).
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.helpers import faults  # noqa: E402
from autoresearch.runtime import faults as fault_points  # noqa: E402
from autoresearch.search import loop  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial.results import LossReading, TrialResult  # noqa: E402
from configs import tiny  # noqa: E402


def main(workdir, k, max_trials, log, kill_at=''):
  lock = threading.Lock()

  def stand_in(genotype, corpus, cfg, watch=None, score_test=False, devices=None):
    fault_points.point('mid-compile')   # where a real trial reaches it: before its build
    start = time.time()
    gid = genotype_lib.genotype_id(genotype)
    if watch is not None and watch(LossReading(0.1, 0.5, 1, 3.0)) is not None:
      return TrialResult(gid, dict(genotype), status='interrupted')
    time.sleep(0.2)
    bpb = 2.0 + int(gid[:6], 16) / 16**6 * 0.05 + 1e-3 * (cfg.seed % 7)
    with lock, open(log, 'a') as f:
      f.write(json.dumps({'devices': [d.id for d in devices] if devices else None,
                          'start': start, 'end': time.time(), 'gid': gid}) + '\n')
    return TrialResult(gid, dict(genotype), status='ok', val_bpb=bpb, train_seconds=1.0,
                       total_seconds=1.0, steps=1)

  config = tiny.get_config()
  config.search.parallel_trials = k
  config.search.max_trials = max_trials
  config.search.noise_repeats = 2
  config.search.min_sigma = 0.004
  config.output.progress_bar = False
  config.agent.update_every = 4
  config.agent.ppo.minibatches = 2
  config.evaluator.enabled = False
  fault_points.point = faults.kill_at(kill_at)
  loop.Search.open(config, workdir, run_trial=stand_in).run()


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:])

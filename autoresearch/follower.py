"""A process other than 0 of a multi-host search: it trains what process 0 sends.

    follower.follow(config)   # on every process but 0, instead of search.run's loop

Process 0 runs the search (agent, ledger, checkpoints) and, before each round, hands
the round's (genotype, seed) jobs to every process with `distributed.broadcast_json`;
each job is then one data-parallel `trial.run` over the devices of all processes, whose
stop decisions follow process 0. A follower writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

from absl import logging

from autoresearch import distributed, modes, trial


def follow(config) -> int:
  """A process other than 0 of a multi-host search: trains what process 0 sends, on
  the devices of every process, until it says stop; writes nothing. Process 0 decides
  when each trial stops (see `trial.py`). A preemption signal here waits for process 0
  to stop the search (it receives the signal too), or exits after the grace period.
  Returns the number of trials trained."""
  corpus, cfg = modes.load_corpus(config), modes.trial_config(config)
  grace = config.checkpoint.grace_seconds

  def on_signal(signum, frame):
    logging.warning('signal %d: following process 0 (exit within %.0f s)', signum, grace)
    timer = threading.Timer(grace, lambda: os._exit(0))
    timer.daemon = True
    timer.start()

  handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
  trained = 0
  try:
    while True:
      message = distributed.broadcast_json(None)
      if message.get('stop'):
        return trained
      for genotype, seed in message['jobs']:
        trial.run(genotype, corpus, dataclasses.replace(cfg, seed=seed))
        trained += 1
  finally:
    for sig, handler in handlers.items():
      signal.signal(sig, handler)

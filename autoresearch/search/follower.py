"""A process other than 0 of a multi-host search: it trains what process 0 sends.

    follower.follow(config)   # on every process but 0, instead of loop.run's loop

Process 0 runs the search (agent, ledger, checkpoints) and, before each round, hands
the round's (genotype, seed) jobs to every process with `distributed.broadcast_json`;
each job is then one data-parallel `runner.run` over the devices of all processes, whose
stop decisions follow process 0. A follower writes nothing.
"""

from __future__ import annotations

import dataclasses

from autoresearch.data import corpora
from autoresearch.runtime import distributed
from autoresearch.search import signals
from autoresearch.trial import runner
from autoresearch.trial.config import TrialConfig


def follow(config) -> int:
  """A process other than 0 of a multi-host search: trains what process 0 sends, on
  the devices of every process, until it says stop; writes nothing. Process 0 decides
  when each trial stops (see `trial.py`). A preemption signal here waits for process 0
  to stop the search (it receives the signal too), or exits after the grace period.
  Returns the number of trials trained."""
  corpus, cfg = corpora.corpus_from_config(config), TrialConfig.from_config(config)
  stop = signals.GracefulStop(config.checkpoint.grace_seconds, 'following process 0')
  trained = 0
  with stop:   # a signal here waits for process 0 to stop the search
    while True:
      message = distributed.broadcast_json(None)
      if message.get('stop'):
        return trained
      for genotype, seed in message['jobs']:
        runner.run(genotype, corpus, dataclasses.replace(cfg, seed=seed))
        trained += 1

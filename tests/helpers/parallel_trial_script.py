"""Trials on several (fake CPU) devices or processes, for tests/test_parallel.py.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/parallel_trial_script.py devices
  python tests/parallel_trial_script.py process PROCESS_ID NUM_PROCESSES PORT

`devices`: the tiny baseline (batch 8) for a fixed number of steps on 1 device, on 4
(data-parallel), on 4 with fsdp, with micro-batches on 1 and 4, and on 3, which the
batch does not divide; and on 4 under the FLOPs clock with a budget of FLOPS_STEPS
steps. `process`: joins the other processes through jax.distributed, takes three
proposals broadcast by process 0, and runs each on the devices of all processes; in
the second (process 0's plan shared every 4 steps), process 0's watcher stops at step 3
and process 1's, which must be ignored, at step 2; the third runs under the FLOPs clock
until its budget. The first and third share the plan every trial.sync_steps (16) steps. Prints one
JSON object on its last line.
"""

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from autoresearch.data import corpora  # noqa: E402
from autoresearch.runtime import distributed  # noqa: E402
from autoresearch.space import genotype as genotype_lib  # noqa: E402
from autoresearch.trial import runner  # noqa: E402
from autoresearch.trial.config import TrialConfig  # noqa: E402
from autoresearch.trial.results import Stop, TrialResult  # noqa: E402
from configs import tiny  # noqa: E402
from models import gpt  # noqa: E402

STEPS = 8  # steps of every trial here but the FLOPs clock's
FLOPS_STEPS = 6  # steps the FLOPs clock's budget holds


def setup():
  config = tiny.get_config()
  config.genotype.batch_size = 8
  config.trial.budget_seconds = 600.0  # never reached: max_steps ends training
  config.trial.max_steps = STEPS
  return config, genotype_lib.from_config(config), TrialConfig.from_config(config)


def on_flops_clock(genotype, cfg: TrialConfig) -> TrialConfig:
  """`cfg` under the FLOPs clock, its budget FLOPS_STEPS steps of `genotype`; no cap on
  steps, nor on a step's FLOPs (each is a sixth of the budget)."""
  step_flops = (gpt.flops_per_token(genotype_lib.model_config(genotype)) *
                genotype['batch_size'] * genotype['seq_len'])
  reference = step_flops * FLOPS_STEPS / cfg.budget_seconds
  return dataclasses.replace(cfg, clock='flops', max_steps=0, max_step_fraction=0.0,
                             reference_flops_per_second=reference)


def summary(result: TrialResult) -> dict:
  return {'status': result.status, 'reason': result.reason, 'steps': result.steps,
          'losses': [loss for _, _, loss in result.loss_curve], 'val_bpb': result.val_bpb,
          'genotype': result.genotype, 'train_seconds': result.train_seconds,
          'clock': result.clock}


def on_devices():
  config, genotype, cfg = setup()
  corpus = corpora.corpus_from_config(config)
  devices = jax.devices()
  assert len(devices) == 4, devices
  runs = {
      'one': (genotype, cfg, devices[:1]),
      'four': (genotype, cfg, devices),
      'four_fsdp': (genotype, dataclasses.replace(cfg, fsdp=True), devices),
      'one_micro': (genotype, dataclasses.replace(cfg, micro_batch_size=4), devices[:1]),
      'four_micro': (genotype, dataclasses.replace(cfg, micro_batch_size=4), devices),
      'indivisible': (genotype, cfg, devices[:3]),
      'four_flops': (genotype, on_flops_clock(genotype, cfg), devices),
  }
  return {name: summary(runner.run(g, corpus, c, devices=d)) for name, (g, c, d) in runs.items()}


def on_processes(process_id: int, num_processes: int, port: int):
  config, genotype, cfg = setup()
  config.distributed.coordinator_address = f'localhost:{port}'
  config.distributed.num_processes = num_processes
  config.distributed.process_id = process_id
  distributed.initialize(config)
  corpus = corpora.corpus_from_config(config)
  out = {'process_index': jax.process_index(), 'device_count': jax.device_count(),
         'local_device_count': jax.local_device_count(), 'trials': []}
  proposals = [{'genotype': genotype, 'seed': 0},
               {'genotype': dict(genotype, d_model=64), 'seed': 1},
               {'genotype': genotype, 'seed': 0, 'flops_clock': True}]
  for i in range(len(proposals)):
    proposal = distributed.broadcast_json(proposals[i] if distributed.is_leader() else None)
    trial_cfg = dataclasses.replace(cfg, seed=proposal['seed'])
    if proposal.get('flops_clock'):
      trial_cfg = on_flops_clock(proposal['genotype'], trial_cfg)
    watch = None
    if i == 1:  # process 0's stop ends the trial everywhere; another's counts for nothing
      trial_cfg = dataclasses.replace(trial_cfg, sync_steps=4)
      stop_at, stop = ((3, Stop('leader stops', predicted_bpb=3.0))
                       if distributed.is_leader() else (2, Stop('ignored')))
      watch = lambda r: stop if r.step == stop_at else None  # noqa: E731
    result = runner.run(proposal['genotype'], corpus, trial_cfg, watch=watch,
                        devices=jax.devices())
    out['trials'].append(dict(summary(result), predicted_bpb=result.predicted_bpb))
  multihost_utils.sync_global_devices('done')   # neither process exits mid-collective
  return out


if __name__ == '__main__':
  if sys.argv[1] == 'devices':
    report = on_devices()
  else:
    report = on_processes(*map(int, sys.argv[2:5]))
  print(json.dumps(report))

"""Many hosts with JAX's own multi-controller runtime: the same program on every process.

    distributed.initialize(config)        # before any other JAX call
    if distributed.is_leader():           # process 0 owns agent, ledger, checkpoint
      proposal = {'genotype': g, 'seed': s}
    proposal = distributed.broadcast_json(proposal if distributed.is_leader() else None)
    result = runner.run(proposal['genotype'], corpus, cfg)   # every process, all devices

`initialize` starts `jax.distributed` from `config.distributed` (or the environment
variables below), or does nothing for a single process. After it, `jax.devices()` lists
the devices of every process and a trial run on them is data-parallel over all hosts;
each process feeds only its own devices (see `trial.py`).

The loop of a search then goes: process 0 proposes, `broadcast_json` hands the proposal
to every process, every process runs the same `runner.run` (whose stop decisions follow
process 0, shared with `share_plan` once per `trial.sync_steps` steps), and only
process 0 writes the ledger and checkpoint. On one process every
function here is a no-op or the identity, so single-host code needs no branches.

Sources of the settings, first found wins: `config.distributed.*`, then the variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, then, with
`config.distributed.auto`, JAX's own cluster detection (SLURM, Open MPI, Cloud TPU,
Kubernetes) for whatever is still unset.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


def settings(config) -> dict:
  """The keyword arguments for `jax.distributed.initialize` (unset ones omitted), or
  None for a single process."""
  d = config.distributed
  address = d.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  num_processes = d.num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0))
  process_id = d.process_id if d.process_id >= 0 else int(os.environ.get('JAX_PROCESS_ID', -1))
  kwargs = {}
  if address:
    kwargs['coordinator_address'] = address
  if num_processes > 0:
    kwargs['num_processes'] = num_processes
  if process_id >= 0:
    kwargs['process_id'] = process_id
  if not kwargs and not d.auto:
    return None
  return kwargs


def initialize(config) -> None:
  """Joins the processes through `jax.distributed.initialize`; a single process (no
  settings and `auto` off) does nothing. Call before any other JAX computation."""
  kwargs = settings(config)
  if kwargs is None:
    return
  jax.distributed.initialize(**kwargs)
  logging.info('process %d of %d; %d local of %d devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_leader() -> bool:
  """True on process 0, the one that owns the agent, the ledger and the checkpoint."""
  return jax.process_index() == 0


def broadcast_json(obj: Any) -> Any:
  """Process 0's `obj` (anything `json.dumps` takes) on every process; the others'
  argument is ignored (pass None). The identity on a single process. Every process must
  call it at the same point: it is a collective."""
  if jax.process_count() == 1:
    return obj
  payload = json.dumps(obj).encode() if is_leader() else b''
  # Two collectives: the length (every process must pass equal shapes), then the bytes.
  length = int(multihost_utils.broadcast_one_to_all(np.array(len(payload), np.int32)))
  buffer = np.zeros(length, np.uint8)
  if is_leader():
    buffer[:] = np.frombuffer(payload, np.uint8)
  received = multihost_utils.broadcast_one_to_all(buffer)
  return json.loads(np.asarray(received, np.uint8).tobytes().decode())



def share_plan(stop: Any, progresses: list, capacity: int) -> tuple[Any, list]:
  """Process 0's (stop, progresses) on every process: `stop` a JSON-able record (a
  trial's `Stop` as a dict) or None, `progresses` at most `capacity` floats (the
  progress of each step to run before the next call). One collective of fixed shape
  (capacity + 2 float32s), and, only when process 0 stops, the record through
  `broadcast_json`. The identity on a single process."""
  if len(progresses) > capacity:
    raise ValueError(f'{len(progresses)} planned steps exceed the capacity {capacity}')
  if jax.process_count() == 1:
    return stop, list(progresses)
  row = np.zeros(capacity + 2, np.float32)
  row[0], row[1] = stop is not None, len(progresses)
  row[2:2 + len(progresses)] = progresses
  row = np.asarray(multihost_utils.broadcast_one_to_all(row))
  if row[0]:
    return broadcast_json(stop if is_leader() else None), []
  return None, [float(p) for p in row[2:2 + int(row[1])]]

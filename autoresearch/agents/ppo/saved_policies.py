"""Policies shipped with the project (`policies/<name>/`) and how a search starts from one.

A policy folder holds `policy.json` (the actor-critic's sizes, `models.policy.PolicyConfig`,
and how it was made) and `params/`, the parameters only (checkpointing.save_tree). A search
whose `agent.init_from` names a folder (a path, or relative to the project folder, as
the default 'policies/default') starts its PPO policy from it; the sizes must match the
agent's, or the search stops with what differs.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging
from flax import nnx

from autoresearch import PROJECT_FOLDER
from autoresearch.workdir import checkpointing, io as workdir_io
from models import policy


class PolicyError(ValueError):
  """A policy folder that is missing, unreadable, or made for other sizes."""


def resolve(source: str) -> str:
  """`source` as given when it exists, else relative to the project folder."""
  if os.path.isabs(source) or os.path.exists(source):
    return os.path.abspath(source)
  return os.path.join(PROJECT_FOLDER, source)


def is_policy(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, 'policy.json'))


def save(folder: str, params: nnx.State, policy_config: policy.PolicyConfig, about: dict) -> None:
  """Writes the policy folder (replacing one that is there)."""
  folder = os.path.abspath(folder)
  os.makedirs(folder, exist_ok=True)
  checkpointing.save_tree(os.path.join(folder, 'params'), nnx.to_pure_dict(params))
  with open(os.path.join(folder, 'policy.json'), 'w') as f:
    json.dump({'policy_config': dataclasses.asdict(policy_config), **about}, f, indent=1)


def load(folder: str, agent) -> dict:
  """The policy's arrays ({'params': pure dict}) for `agent.load_policy`; PolicyError
  when the folder's sizes differ from the agent's."""
  try:
    with open(os.path.join(folder, 'policy.json')) as f:
      saved = json.load(f)['policy_config']
  except (OSError, ValueError, KeyError) as e:
    raise PolicyError(f'{folder}: not a readable policy folder ({e})') from e
  wanted = dataclasses.asdict(agent.policy_config)
  differs = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
  if differs:
    raise PolicyError(
        f'the policy in {folder} was made for other sizes (saved, this agent): ' +
        ', '.join(f'{k} {a} vs {b}' for k, (a, b) in differs.items()) +
        '; pass --config.agent.init_from=none to start from scratch')
  return {'params': checkpointing.restore_tree(os.path.join(folder, 'params'),
                                               nnx.to_pure_dict(agent.params))}


def init_policy(agent, source: str) -> None:
  """Starts the policy of `agent` (a learning agent: one with `load_policy`) from
  `source`: a shipped policy folder (this module) or the workdir of an earlier search
  (its newest checkpoint's policy)."""
  folder = resolve(source)
  if is_policy(folder):
    agent.load_policy(load(folder, agent))
    logging.info('policy initialised from %s', folder)
    return
  other = checkpointing.Checkpointer(str(workdir_io.path(folder, 'checkpoints')))
  restored = other.restore({'agent': agent.state_dict()[0]})
  if restored is None:
    raise checkpointing.CheckpointError(
        f'agent.init_from: {source} is neither a policy folder nor a search workdir with a '
        'checkpoint')
  agent.load_policy(restored[1]['agent'])
  logging.info('policy initialised from %s (checkpoint %d)', folder, restored[0])

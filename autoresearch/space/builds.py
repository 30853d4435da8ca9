"""Whether two recipes build the same training: decided by what building one reads.

    reads = build_reads(model_cfg, optim_cfg)      # once per parent (cached by the caller)
    same = builds_alike(reads, other_model_cfg, other_optim_cfg)

`build_reads` builds the model (abstract shapes), runs its forward pass, builds the
optimizer over its parameters and runs one update and the schedule, all on
`jax.eval_shape`, with each config wrapped so that every field, property and method it
is asked for is recorded with the answer it gave. Building depends on nothing else of
the configs, so another pair of configs that gives the same answer to every recorded
question builds the same model, the same optimizer and the same schedule: an edit of a
gene whose value is never read (the Muon momentum under AdamW, the head's learning rate
with tied embeddings), or whose change leaves every answer as it was (the window
pattern of a one-layer model), changes nothing that is trained. No list of special
cases: what the model and optimizer code ask for is the definition.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models import gpt, optim


Reads = tuple   # ((config name, attribute, call arguments or None, answer), ...)


class _Recorder:
  """Stands in for a frozen config dataclass and records what is asked of it: fields,
  properties and methods (by their answers, not by the fields they read inside)."""

  def __init__(self, cfg, name: str, log: list):
    object.__setattr__(self, '_cfg', cfg)
    object.__setattr__(self, '_name', name)
    object.__setattr__(self, '_log', log)

  def __getattr__(self, attribute: str) -> Any:
    cfg = object.__getattribute__(self, '_cfg')
    name, log = object.__getattribute__(self, '_name'), object.__getattribute__(self, '_log')
    value = getattr(cfg, attribute)
    if callable(value):   # a method: record each call with its arguments and answer
      def call(*args):
        answer = value(*args)
        log.append((name, attribute, args, answer))
        return answer
      return call
    log.append((name, attribute, None, value))
    return value

  def __setattr__(self, attribute, value):
    raise dataclasses.FrozenInstanceError(f'cannot assign to field {attribute!r}')


def build_reads(model_cfg: gpt.GPTConfig, optim_cfg: optim.OptimConfig,
                batch_shape: tuple[int, int]) -> Reads:
  """What building and training (one step, abstractly) asked of the two configs."""
  log: list = []
  model_rec = _Recorder(model_cfg, 'model', log)
  optim_rec = _Recorder(optim_cfg, 'optim', log)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: gpt.GPT(model_rec, nnx.Rngs(0))))
  batch = jax.ShapeDtypeStruct((batch_shape[0], batch_shape[1] + 1), jnp.uint8)
  progress = jax.ShapeDtypeStruct((), jnp.float32)

  def loss(p, b, progress):
    return nnx.merge(graphdef, p).train_loss(b, progress)[0]

  grads = jax.eval_shape(jax.grad(loss), params, batch, progress)
  tx = optim.build(optim_rec, params)
  state = jax.eval_shape(tx.init, params)
  jax.eval_shape(tx.update, grads, state, params)
  for progress in (0.0, 0.5, 1.0):   # the schedule is Python on the config: every branch
    optim.lr_multiplier(progress, optim_rec)
  return tuple(log)


def _answer(cfg, attribute: str, args):
  value = getattr(cfg, attribute)
  return value(*args) if args is not None else value


def builds_alike(reads: Reads, model_cfg: gpt.GPTConfig, optim_cfg: optim.OptimConfig) -> bool:
  """Whether the configs answer every recorded question as the recorded ones did."""
  cfgs = {'model': model_cfg, 'optim': optim_cfg}
  for name, attribute, args, answer in reads:
    try:
      if _answer(cfgs[name], attribute, args) != answer:
        return False
    except ValueError:   # e.g. `check` refuses the other config: it builds differently
      return False
  return True

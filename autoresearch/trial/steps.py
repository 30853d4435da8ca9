"""The jitted training step of a genotype: forward, backward (accumulated over
micro-batches), the optimizer's update at the schedule's learning rate.

    step = make_train_step(graphdef, optim.program_config(optim_cfg), micro_batches, shardings)
    params, opt_state, loss = step(params, opt_state, batch, progress,
                                   optim.runtime_values(optim_cfg))

The recipe's numbers (`optim.RUNTIME_FIELDS`) are inputs of the step, not constants of
its program: recipes that differ only in them share one compiled step.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from models import optim


# A batch-size warmup's half batches train at this fraction of the learning rate (the LR
# about as batch^0.5, as record 46 of the modded-nanogpt speedrun scales its stages).
HALF_BATCH_LR_SCALE = 0.5 ** 0.5


def _loss_fn(graphdef, params, batch_BxT1, progress):
  """(the loss minimised, the next-byte cross-entropy reported): `GPT.train_loss`."""
  return nnx.merge(graphdef, params).train_loss(batch_BxT1, progress)


def make_train_step(graphdef, optim_cfg: optim.OptimConfig, micro_batches: int,
                    shardings: Optional[tuple] = None, half_batch: bool = False,
                    flat: bool = False):
  """(params, opt_state, batch uint8 (B, T+1), progress, values) -> (params, opt_state,
  loss), where `values` are the recipe's numbers (`optim.runtime_values`) and
  `optim_cfg` gives the branches (`optim.program_config`). With micro_batches > 1 the
  gradient is accumulated over equal slices of the batch (rows i, i + m, i + 2m, ...
  form slice i, so a batch split over devices splits each slice alike). `shardings`:
  (params, opt_state, batch) shardings, or None. With `half_batch` (a batch-size
  warmup's step) the step trains on the even rows only (each device keeps half of its
  rows), its updates scaled by HALF_BATCH_LR_SCALE. With `flat` (and `shardings`) the
  step takes and returns params and opt_state as lists of their leaves:
  a call then spends no host time taking the state's nested containers apart and
  putting them together again (about 4 ms a step on CPU for the default model)."""
  grad_fn = jax.value_and_grad(lambda p, b, progress: _loss_fn(graphdef, p, b, progress),
                               has_aux=True)
  lr_scale = HALF_BATCH_LR_SCALE if half_batch else 1.0

  def step(params, opt_state, batch, progress, values):
    if half_batch:
      batch = batch[::2]
    if micro_batches == 1:
      (_, loss), grads = grad_fn(params, batch, progress)
    else:
      slices = batch.reshape(-1, micro_batches, batch.shape[-1]).swapaxes(0, 1)

      def accumulate(carry, micro):
        loss_sum, grad_sum = carry
        (_, loss), grads = grad_fn(params, micro, progress)
        return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, grad_sum, grads)), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
      (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros(()), zeros), slices)
      loss = loss / micro_batches
      grads = jax.tree_util.tree_map(lambda g: g / micro_batches, grads)
    tx = optim.build(optim_cfg, params, values)
    updates, opt_state = tx.update(grads, opt_state, params)
    multiplier = optim.lr_multiplier(progress, optim_cfg, values)
    updates = optim.scale_updates(updates, lr_scale * multiplier)
    return optax.apply_updates(params, updates), opt_state, loss

  if shardings is None:
    return jax.jit(step, donate_argnums=(0, 1))
  params_sh, opt_sh, batch_sh = shardings
  scalar = NamedSharding(batch_sh.mesh, P())
  if flat:
    step = _on_leaves(step, jax.tree_util.tree_structure(params_sh),
                      jax.tree_util.tree_structure(opt_sh))
    params_sh, opt_sh = jax.tree_util.tree_leaves(params_sh), jax.tree_util.tree_leaves(opt_sh)
  return jax.jit(step, donate_argnums=(0, 1),
                 in_shardings=(params_sh, opt_sh, batch_sh, scalar, scalar),
                 out_shardings=(params_sh, opt_sh, scalar))


def _on_leaves(step, params_def, opt_def):
  """`step` on lists of leaves of params and opt_state (of structures `params_def` and
  `opt_def`)."""
  def flat_step(param_leaves, opt_leaves, batch, progress, values):
    params, opt_state, loss = step(jax.tree_util.tree_unflatten(params_def, param_leaves),
                                   jax.tree_util.tree_unflatten(opt_def, opt_leaves),
                                   batch, progress, values)
    return jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(opt_state), loss
  return flat_step



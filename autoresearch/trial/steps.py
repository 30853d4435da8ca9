"""The jitted training step of a genotype: forward, backward (accumulated over
micro-batches), the optimizer's update at the schedule's learning rate.

    step = make_train_step(graphdef, tx, optim_cfg, micro_batches, shardings)
    params, opt_state, loss = step(params, opt_state, batch, progress)
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


def make_train_step(graphdef, tx, optim_cfg: optim.OptimConfig, micro_batches: int,
                    shardings: Optional[tuple] = None, half_batch: bool = False):
  """(params, opt_state, batch uint8 (B, T+1), progress) -> (params, opt_state, loss).
  With micro_batches > 1 the gradient is accumulated over equal slices of the batch
  (rows i, i + m, i + 2m, ... form slice i, so a batch split over devices splits each
  slice alike). `shardings`: (params, opt_state, batch) shardings, or None. With
  `half_batch` (a batch-size warmup's step) the step trains on the even rows only
  (each device keeps half of its rows), its updates scaled by HALF_BATCH_LR_SCALE."""
  grad_fn = jax.value_and_grad(lambda p, b, progress: _loss_fn(graphdef, p, b, progress),
                               has_aux=True)
  lr_scale = HALF_BATCH_LR_SCALE if half_batch else 1.0

  def step(params, opt_state, batch, progress):
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
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = optim.scale_updates(updates, lr_scale * optim.lr_multiplier(progress, optim_cfg))
    return optax.apply_updates(params, updates), opt_state, loss

  if shardings is None:
    return jax.jit(step, donate_argnums=(0, 1))
  params_sh, opt_sh, batch_sh = shardings
  scalar = NamedSharding(batch_sh.mesh, P())
  return jax.jit(step, donate_argnums=(0, 1), in_shardings=(params_sh, opt_sh, batch_sh, scalar),
                 out_shardings=(params_sh, opt_sh, scalar))



"""Scoring a trial: the fixed evaluation windows in whole batches, the jitted step that sums
their cross-entropy, and bits per byte over each split.

The evaluation runs without a host round trip per batch: every batch is placed and its
step dispatched back to back, each batch's summed nats stays on the device, and all of
a split's sums come to the host in one transfer (one sync per split). The host then adds
them in float64 in batch order (as reading each batch's sum at once did), so the figure
is the same to the last bit, whatever the device's pipelining.
"""

from __future__ import annotations

import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from autoresearch import data
from autoresearch.trial_types import Scores, bits_per_byte


def cross_entropy_nats(logits_BxTxV, targets_BxT):
  """Per-token cross-entropy in nats (float32)."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV.astype(jnp.float32), targets_BxT.astype(jnp.int32))


def make_eval_step(graphdef, shardings: Optional[tuple] = None):
  """(params, inputs (N, T), targets (N, T), mask (N, T)) -> summed nats over the mask.
  `shardings`: (params, batch) shardings, or None."""
  def eval_step(params, inputs, targets, mask):
    logits = nnx.merge(graphdef, params)(inputs.astype(jnp.int32))
    return jnp.sum(jnp.where(mask, cross_entropy_nats(logits, targets), 0.0))
  if shardings is None:
    return jax.jit(eval_step)
  params_sh, batch_sh = shardings
  return jax.jit(eval_step, in_shardings=(params_sh, batch_sh, batch_sh, batch_sh),
                 out_shardings=NamedSharding(batch_sh.mesh, P()))


def eval_batches(split: np.ndarray, scorable: Optional[np.ndarray], num_bytes: int,
                 seq_len: int, batch_tokens: int, multiple: int = 1):
  """The fixed evaluation windows, padded to whole batches of equal shape (windows per
  batch a multiple of `multiple`, the number of devices; padding is masked out).
  Returns (inputs, targets, mask), each (batches, N, T)."""
  inputs, targets, mask = data.eval_windows(split, num_bytes, seq_len, scorable)
  per_batch = max(1, min(len(inputs), batch_tokens // seq_len))
  per_batch = -(-per_batch // multiple) * multiple
  pad = -len(inputs) % per_batch
  if pad:
    inputs, targets = (np.pad(a, ((0, pad), (0, 0))) for a in (inputs, targets))
    mask = np.pad(mask, ((0, pad), (0, 0)))
  n = len(inputs) // per_batch
  shape = (n, per_batch, seq_len)
  return inputs.reshape(shape), targets.reshape(shape), mask.reshape(shape)


def eval_sets(corpus: data.Corpus, val_bytes: int, eval_batch_tokens: int, seq_len: int,
              num_devices: int, score_test: bool) -> dict:
  """Split name -> `eval_batches` of val (and test, with `score_test`)."""
  splits = {'val': (corpus.val, corpus.val_scorable),
            **({'test': (corpus.test, corpus.test_scorable)} if score_test else {})}
  return {name: eval_batches(split, scorable, val_bytes, seq_len, eval_batch_tokens,
                             num_devices)
          for name, (split, scorable) in splits.items()}


def split_nats(eval_step, params, batches, put) -> float:
  """Summed nats of `params` over `batches` (inputs, targets, mask), each (n, N, T):
  all n steps dispatched before any result is read, then one transfer of the n sums.
  `put` places a host batch on the devices."""
  inputs, targets, mask = batches
  per_batch = [eval_step(params, put(inputs[i]), put(targets[i]), put(mask[i]))
               for i in range(len(inputs))]
  # Python's left-to-right sum of float64s: the sum a per-batch read would have taken.
  return sum(float(nats) for nats in jax.device_get(per_batch))


def evaluate(built, params, placement) -> Scores:
  """Bits per byte of `params` on each of `built.eval_sets` (a `trial_types.Built`),
  placed by `placement` (a `trial.Placement`), timed."""
  eval_start = time.perf_counter()
  put = lambda a: placement.put(a, placement.batch)  # noqa: E731
  bpb = {name: bits_per_byte(split_nats(built.eval_step, params, batches, put),
                             int(batches[2].sum()))
         for name, batches in built.eval_sets.items()}
  return Scores(bpb, time.perf_counter() - eval_start)

"""Scoring a trial: the fixed evaluation windows in whole batches, the jitted step that sums
their cross-entropy, and bits per byte over each split.

The evaluation runs without a host round trip per batch: a split's windows are placed
on the devices whole (a few MB), one jitted program scans its batches (`lax.scan`, one
batch's activations live at a time) and returns each batch's summed nats, and those
come to the host in one transfer: one dispatch and one sync per split. The host adds
them in float64 in batch order, as reading each batch's sum at once did. (Dispatching
one program per batch back to back instead deadlocked XLA's CPU collectives on fake
devices: dozens of programs in flight, each waiting in an all-reduce.)
"""

from __future__ import annotations

import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from autoresearch.data import corpora, windows
from autoresearch.trial.results import Scores, bits_per_byte
from models import gpt


def make_eval_step(graphdef, shardings: Optional[tuple] = None):
  """(params, inputs (n, N, T), targets (n, N, T), mask (n, N, T)) -> float32 (n,): each
  of the n batches' summed nats over its mask, the batches scanned one after another.
  `shardings`: (params, batches) shardings, or None."""
  def batch_nats(params, batch):
    inputs, targets, mask = batch
    logits = nnx.merge(graphdef, params)(inputs.astype(jnp.int32))
    return jnp.sum(jnp.where(mask, gpt.cross_entropy_nats(logits, targets), 0.0))

  def eval_step(params, inputs, targets, mask):
    _, nats = jax.lax.scan(lambda carry, batch: (carry, batch_nats(params, batch)), None,
                           (inputs, targets, mask))
    return nats
  if shardings is None:
    return jax.jit(eval_step)
  params_sh, batches_sh = shardings
  return jax.jit(eval_step, in_shardings=(params_sh, batches_sh, batches_sh, batches_sh),
                 out_shardings=NamedSharding(batches_sh.mesh, P()))


def eval_batches(split: np.ndarray, scorable: Optional[np.ndarray], num_bytes: int,
                 seq_len: int, batch_tokens: int, multiple: int = 1):
  """The fixed evaluation windows, padded to whole batches of equal shape (windows per
  batch a multiple of `multiple`, the number of devices; padding is masked out).
  Returns (inputs, targets, mask), each (batches, N, T)."""
  inputs, targets, mask = windows.eval_windows(split, num_bytes, seq_len, scorable)
  per_batch = max(1, min(len(inputs), batch_tokens // seq_len))
  per_batch = -(-per_batch // multiple) * multiple
  pad = -len(inputs) % per_batch
  if pad:
    inputs, targets = (np.pad(a, ((0, pad), (0, 0))) for a in (inputs, targets))
    mask = np.pad(mask, ((0, pad), (0, 0)))
  n = len(inputs) // per_batch
  shape = (n, per_batch, seq_len)
  return inputs.reshape(shape), targets.reshape(shape), mask.reshape(shape)


def eval_sets(corpus: corpora.Corpus, val_bytes: int, eval_batch_tokens: int, seq_len: int,
              num_devices: int, score_test: bool) -> dict:
  """Split name -> `eval_batches` of val (and test, with `score_test`), padded with
  all-masked batches to one number of batches, so one compiled step serves both."""
  splits = {'val': (corpus.val, corpus.val_scorable),
            **({'test': (corpus.test, corpus.test_scorable)} if score_test else {})}
  sets = {name: eval_batches(split, scorable, val_bytes, seq_len, eval_batch_tokens,
                             num_devices)
          for name, (split, scorable) in splits.items()}
  most = max(len(batches[0]) for batches in sets.values())
  return {name: tuple(np.pad(a, ((0, most - len(a)), (0, 0), (0, 0))) for a in batches)
          for name, batches in sets.items()}


def split_nats(eval_step, params, batches, put) -> float:
  """Summed nats of `params` over `batches` (inputs, targets, mask), each (n, N, T): one
  call of `eval_step`, then one transfer of the n per-batch sums. `put` places a
  host array (n, N, T) on the devices."""
  per_batch = jax.device_get(eval_step(params, *(put(a) for a in batches)))
  # Python's left-to-right sum of float64s: the sum a per-batch read would have taken.
  return sum(float(nats) for nats in per_batch)


def evaluate(built, params, placement) -> Scores:
  """Bits per byte of `params` on each of `built.eval_sets` (a `results.Built`),
  placed by `placement` (a `trial.Placement`), timed."""
  eval_start = time.perf_counter()
  put = lambda a: placement.put(a, placement.batches)  # noqa: E731
  bpb = {name: bits_per_byte(split_nats(built.eval_step, params, batches, put),
                             int(batches[2].sum()))
         for name, batches in built.eval_sets.items()}
  return Scores(bpb, time.perf_counter() - eval_start)

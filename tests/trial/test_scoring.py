"""Evaluation: a split is one program and one transfer, summed to the very figure a
per-batch read gave; splits share one compiled shape."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autoresearch.trial import scoring
from models import gpt


def _one_batch_nats(graphdef, params, inputs, targets, mask):
  """The summed nats of one batch, as the evaluation computed them batch by batch."""
  logits = nnx.merge(graphdef, params)(jnp.asarray(inputs, jnp.int32))
  return jnp.sum(jnp.where(mask, gpt.cross_entropy_nats(logits, targets), 0.0))


def test_a_split_is_one_call_and_one_transfer_of_the_per_batch_sums(stdlib_corpus,
                                                                    monkeypatch):
  cfg = gpt.GPTConfig(seq_len=32, n_layers=1, d_model=32, n_heads=2)
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  batches = scoring.eval_batches(stdlib_corpus.val, stdlib_corpus.val_scorable, 5_000,
                                 cfg.seq_len, 256)
  inputs, targets, mask = batches
  assert len(inputs) > 10
  one = jax.jit(lambda *a: _one_batch_nats(graphdef, *a))
  per_batch = [float(one(params, inputs[i], targets[i], mask[i])) for i in range(len(inputs))]

  calls, transfers = [], []
  eval_step = scoring.make_eval_step(graphdef)
  counted = lambda *a: calls.append(1) or eval_step(*a)  # noqa: E731
  real_get = jax.device_get
  monkeypatch.setattr(jax, 'device_get', lambda x: transfers.append(x.shape) or real_get(x))
  nats = scoring.split_nats(counted, params, batches, put=jnp.asarray)
  assert calls == [1] and transfers == [(len(inputs),)]  # one program, one transfer
  # The scanned batches give each batch's sum as the batch-by-batch program did,
  # summed in float64.
  assert real_get(eval_step(params, *batches)).tolist() == per_batch
  assert nats == sum(float(x) for x in real_get(eval_step(params, *batches)))
  assert 0 < nats < 5_000 * np.log(256) * 1.5


def test_val_and_test_are_padded_to_one_shape_with_masked_batches(stdlib_corpus):
  corpus = stdlib_corpus
  sets = scoring.eval_sets(corpus, 20_000, 256, 32, num_devices=1, score_test=True)
  shapes = {name: tuple(a.shape for a in batches) for name, batches in sets.items()}
  assert shapes['val'] == shapes['test']
  for name, (inputs, targets, mask) in sets.items():
    assert int(mask.sum()) == 20_000, name  # padding scores nothing
    unpadded = scoring.eval_batches(getattr(corpus, name), getattr(corpus, f'{name}_scorable'),
                                    20_000, 32, 256)
    np.testing.assert_array_equal(inputs[:len(unpadded[0])], unpadded[0])
    assert not mask[len(unpadded[0]):].any()

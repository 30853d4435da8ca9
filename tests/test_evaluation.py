"""Evaluation: a split's batches reach the host in one transfer, summed to the very figure
a per-batch read gave."""

import jax
import numpy as np
from flax import nnx

from autoresearch import evaluation
from models import gpt


def test_a_split_is_one_transfer_and_the_same_sum_as_per_batch_reads(stdlib_corpus,
                                                                      monkeypatch):
  cfg = gpt.GPTConfig(seq_len=32, n_layers=1, d_model=32, n_heads=2)
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  batches = evaluation.eval_batches(stdlib_corpus.val, stdlib_corpus.val_scorable, 5_000,
                                    cfg.seq_len, 256)
  assert len(batches[0]) > 10
  eval_step = evaluation.make_eval_step(graphdef)
  inputs, targets, mask = batches
  per_batch_reads = sum(float(eval_step(params, inputs[i], targets[i], mask[i]))
                        for i in range(len(inputs)))

  transfers = []
  real_get = jax.device_get
  monkeypatch.setattr(jax, 'device_get', lambda x: transfers.append(len(x)) or real_get(x))
  nats = evaluation.split_nats(eval_step, params, batches, put=np.asarray)
  assert transfers == [len(inputs)]  # one transfer holding every batch's sum
  assert nats == per_batch_reads     # bit for bit: float64, in batch order
  assert 0 < nats < 5_000 * np.log(256) * 1.5

"""The genes from the speedrun's later records: each changes what is trained when on,
nothing when off, and all of them train together at the tiny config."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import runner, steps
from autoresearch.trial.config import TrialConfig
from configs import default, tiny
from models import gpt, optim


BASE = gpt.GPTConfig(seq_len=32, d_model=32, n_heads=2, n_kv_heads=2, n_layers=2)
BATCH = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 33)), jnp.uint8)


def _model(**changes):
  cfg = dataclasses.replace(BASE, **changes)
  return gpt.GPT(cfg, nnx.Rngs(0))


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_the_genes_off_are_the_model_without_them():
  off = _model(unet_skips=False, window_warmup=0.0, bigram_buckets=0, mtp_weight=0.0)
  baseline = gpt.GPT(BASE, nnx.Rngs(0))
  tokens = BATCH[:, :-1].astype(jnp.int32)
  np.testing.assert_array_equal(off(tokens, jnp.float32(0.3)), baseline(tokens))
  np.testing.assert_array_equal(off.train_loss(BATCH)[0], baseline.train_loss(BATCH)[1])


def test_unet_skips_feed_the_mirrored_layer_with_a_learned_weight():
  assert dataclasses.replace(BASE, n_layers=5, unet_skips=True).skip_pairs() == ((0, 4), (1, 3))
  assert dataclasses.replace(BASE, n_layers=1, unet_skips=True).skip_pairs() == ()
  on, off = _model(unet_skips=True), _model()
  tokens = BATCH[:, :-1].astype(jnp.int32)
  assert not np.allclose(on(tokens), off(tokens))
  graphdef, params = nnx.split(on, nnx.Param)
  grads = jax.grad(lambda p: nnx.merge(graphdef, p).train_loss(BATCH)[0])(params)
  assert float(jnp.abs(grads['skip_weights'][...]).sum()) > 0


def test_short_windows_grow_over_the_warmup_and_then_are_the_short_window():
  cfg = dict(window_pattern='SL', short_window=16)
  growing, fixed = _model(window_warmup=0.5, **cfg), _model(**cfg)
  assert growing.cfg.growing_windows()
  assert not dataclasses.replace(BASE, window_warmup=0.5).growing_windows()   # all full
  windows = growing._windows(jnp.float32(0.0))
  assert int(windows[0]) == 2 and windows[1] is None   # 16 // 8 at the start; L stays
  assert int(growing._windows(jnp.float32(0.25))[0]) == 9
  tokens = BATCH[:, :-1].astype(jnp.int32)
  np.testing.assert_allclose(growing(tokens, jnp.float32(0.5)), fixed(tokens), rtol=1e-6)
  np.testing.assert_array_equal(growing(tokens), fixed(tokens))   # evaluation: full size
  assert not np.allclose(growing(tokens, jnp.float32(0.0)), fixed(tokens))


def test_the_bigram_embedding_starts_at_zero_and_learns():
  assert gpt.bigram_hash(BATCH[:, :-1], 64).shape == (3, 32)
  rows = np.asarray(gpt.bigram_hash(BATCH[:, :-1], 64))
  assert (rows[:, 0] == 63).all() and (rows[:, 1:] < 63).all() and (rows >= 0).all()
  # The same (previous, current) pair hashes to the same row wherever it is.
  pairs = {}
  tokens = np.asarray(BATCH[:, :-1])
  for b in range(3):
    for t in range(1, 32):
      assert pairs.setdefault((tokens[b, t - 1], tokens[b, t]), rows[b, t]) == rows[b, t]
  on, off = _model(bigram_buckets=64), _model()
  np.testing.assert_array_equal(on(BATCH[:, :-1].astype(jnp.int32)),
                                off(BATCH[:, :-1].astype(jnp.int32)))
  graphdef, params = nnx.split(on, nnx.Param)
  grads = jax.grad(lambda p: nnx.merge(graphdef, p).train_loss(BATCH)[0])(params)
  assert float(jnp.abs(grads['bigram'][...]).sum()) > 0


def test_multi_token_prediction_adds_a_weighted_loss_and_reports_the_next_byte():
  on, off = _model(mtp_weight=0.3), _model()
  total, reported = on.train_loss(BATCH)
  np.testing.assert_array_equal(reported, off.train_loss(BATCH)[1])
  head = on._logits(on.hidden(BATCH[:, :-1].astype(jnp.int32))[:, :-1], on.mtp_head[...])
  ahead = optax.softmax_cross_entropy_with_integer_labels(head, BATCH[:, 2:].astype(jnp.int32))
  np.testing.assert_allclose(total, reported + 0.3 * jnp.mean(ahead), rtol=1e-6)
  assert gpt.param_group(('mtp_head',)) == 'head' and gpt.param_group(('bigram',)) == 'embed'


def test_cautious_decay_decays_only_where_update_and_weight_agree():
  tx = optim.cautious_decayed_weights(0.5)
  updates = jnp.array([1.0, -1.0, 1.0, -1.0])
  params = jnp.array([1.0, 1.0, -1.0, -1.0])
  decayed, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_array_equal(decayed, [1.5, -1.0, 1.0, -1.5])


def test_normuon_keeps_the_norm_and_evens_out_the_neurons():
  u = jnp.asarray(np.random.default_rng(1).normal(size=(8, 16)) * np.arange(1, 17), jnp.float32)
  tx = optim.scale_by_neuron_rms(0.95)
  out, state = tx.update(u, tx.init(u))
  np.testing.assert_allclose(jnp.linalg.norm(out), jnp.linalg.norm(u), rtol=1e-5)
  per_neuron = jnp.sqrt(jnp.mean(jnp.square(out), axis=0))   # fan_out >= fan_in: one per column
  np.testing.assert_allclose(per_neuron, per_neuron[0], rtol=1e-5)
  assert state.second_moment.shape == (1, 16)


@pytest.mark.parametrize('changes', [dict(weight_decay=0.1, cautious_wd=True),
                                     dict(optimizer='muon', normuon=True),
                                     dict(optimizer='muon', weight_decay=0.1, cautious_wd=True)])
def test_the_optimizer_genes_change_the_update_only_when_on(changes):
  model = _model()
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.grad(lambda p: nnx.merge(graphdef, p).train_loss(BATCH)[0])(params)

  def update(cfg):
    tx = optim.build(cfg, params)
    return jax.tree_util.tree_leaves(tx.update(grads, tx.init(params), params)[0])
  on = optim.OptimConfig(**changes)
  off = dataclasses.replace(on, cautious_wd=False, normuon=False)
  assert any(not np.allclose(a, b) for a, b in zip(update(on), update(off)))


def test_a_gene_that_reads_nothing_is_no_edit():
  base = genotype_lib.from_config(default.get_config())   # 2 full layers, AdamW, no decay
  mask = genotype_lib.edit_mask(base)
  index = {g.name: i for i, g in enumerate(genotype_lib.GENES)}
  assert not mask[index['window_warmup']].any()   # every window full
  assert not mask[index['cautious_wd']].any()     # no weight decay
  assert not mask[index['normuon']].any()         # AdamW
  assert mask[index['unet_skips'], 1] and mask[index['bigram_buckets'], 1:4].all()
  one_layer = dict(base, n_layers=1)
  assert not genotype_lib.edit_mask(one_layer)[index['unet_skips']].any()
  muon = dict(base, optimizer='muon', weight_decay=0.1, window_pattern='SL')
  muon_mask = genotype_lib.edit_mask(muon)
  assert muon_mask[index['normuon'], 1] and muon_mask[index['cautious_wd'], 1]
  assert muon_mask[index['window_warmup'], 1:4].all()


def test_a_genotype_recorded_before_the_genes_loads_with_them_off_and_keeps_its_id():
  base = genotype_lib.from_config(tiny.get_config())
  old = {k: v for k, v in base.items()
         if genotype_lib.GENE_BY_NAME[k].default is None}
  assert genotype_lib.make(old) == base
  assert genotype_lib.genotype_id(old) == genotype_lib.genotype_id(base) == 'bde1d286e237'
  assert genotype_lib.genotype_id(dict(base, bigram_buckets=1024)) != 'bde1d286e237'
  # An old best, as a checkpoint or ledger holds it, is edited, described and encoded.
  np.testing.assert_array_equal(genotype_lib.edit_mask(old), genotype_lib.edit_mask(base))
  np.testing.assert_array_equal(genotype_lib.encode(old), genotype_lib.encode(base))
  assert genotype_lib.describe_diff(dict(base, normuon=True), old) == 'normuon False->True'


def test_every_gene_on_trains_the_tiny_config_without_nan(stdlib_corpus):
  config = tiny.get_config()
  genotype = dict(genotype_lib.from_config(config), n_layers=2, window_pattern='SL',
                  optimizer='muon', weight_decay=0.05, unet_skips=True, window_warmup=0.5,
                  bigram_buckets=1024, mtp_weight=0.3, cautious_wd=True, normuon=True,
                  batch_warmup=0.5)
  result = runner.run(genotype, stdlib_corpus, TrialConfig.from_config(config))
  assert result.status == 'ok', result.reason
  assert math.isfinite(result.val_bpb) and result.val_bpb < 6.0
  assert all(math.isfinite(loss) for _, _, loss in result.loss_curve)


def test_a_half_batch_step_trains_the_even_rows_at_a_scaled_learning_rate():
  model = _model()
  graphdef, params = nnx.split(model, nnx.Param)
  optim_cfg = optim.OptimConfig(matrix_lr=1e-2, embed_lr=1e-2, head_lr=1e-2, scalar_lr=1e-2)
  tx = optim.build(optim_cfg, params)
  batch = jnp.concatenate([BATCH, BATCH[::-1]])   # 6 rows: the even ones are rows 0, 2, 4

  def delta(half_batch, rows):
    step = steps.make_train_step(graphdef, optim_cfg, 1, half_batch=half_batch)
    fresh = jax.tree_util.tree_map(jnp.copy, params)
    new, _, loss = step(fresh, tx.init(params), rows, jnp.float32(0.2),
                        optim.runtime_values(optim_cfg))
    return jax.tree_util.tree_map(jnp.subtract, new, params), loss
  half, half_loss = delta(True, batch)
  full, full_loss = delta(False, batch[::2])
  np.testing.assert_allclose(half_loss, full_loss, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(half), jax.tree_util.tree_leaves(full)):
    np.testing.assert_allclose(a, steps.HALF_BATCH_LR_SCALE * b, rtol=1e-4, atol=1e-9)


def test_a_batch_warmup_trains_half_batches_for_its_share_of_the_budget(stdlib_corpus):
  config = tiny.get_config()
  genotype = genotype_lib.from_config(config)
  step_flops = genotype_lib.step_flops(genotype)
  # The FLOPs clock holds 12 whole-batch steps: half of the budget at half cost is 12
  # half-batch steps, the other half 6 whole ones.
  cfg = dataclasses.replace(TrialConfig.from_config(config), clock='flops', budget_seconds=1.0,
                            reference_flops_per_second=12 * step_flops, max_step_fraction=0.0)
  warm = runner.run(dict(genotype, batch_warmup=0.5), stdlib_corpus, cfg)
  plain = runner.run(genotype, stdlib_corpus, cfg)
  assert warm.status == plain.status == 'ok', (warm.reason, plain.reason)
  rows, seq_len = genotype['batch_size'], genotype['seq_len']
  assert (warm.steps, plain.steps) == (18, 12)
  assert warm.tokens == (12 * rows // 2 + 6 * rows) * seq_len
  assert plain.tokens == 12 * rows * seq_len
  assert warm.val_bpb != plain.val_bpb
  mask = genotype_lib.edit_mask(genotype)
  assert mask[genotype_lib.N_GENES - 1, 1:4].all()   # every warmup trains differently

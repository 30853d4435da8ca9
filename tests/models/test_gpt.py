"""The GPT: causality through gradients, windows, every switch builds and trains."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import steps
from configs import h100, tiny
from models import gpt, optim


TINY = gpt.GPTConfig(seq_len=16, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                     mlp_ratio=2.0, short_window=4)


def _input_gradients(cfg: gpt.GPTConfig, position: int, jit: bool):
  """Per input position s, the summed |d(logits at `position`) / d(embedding rows of s)|.
  Every position holds a distinct token, so row tokens[s] of each token or value
  embedding table (and row s of learned positions) belongs to position s alone."""
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  flat = dict(nnx.to_flat_state(params))
  embeds = {path: p for path, p in flat.items() if gpt.param_group(path) == 'embed'}
  tokens_T = jax.random.permutation(jax.random.key(1), cfg.vocab_size)[:cfg.seq_len]

  def out_at(embeds):
    model = nnx.merge(graphdef, nnx.from_flat_state({**flat, **embeds}))
    return model(tokens_T[None])[0, position].sum()

  fn = jax.jit(jax.grad(out_at)) if jit else jax.grad(out_at)
  per_position = np.zeros(cfg.seq_len)
  for path, grad in fn(embeds).items():
    rows = np.asarray(grad.get_value())
    rows = rows if path[0] == 'pos_embed' else rows[np.asarray(tokens_T)]
    per_position += np.abs(rows).sum(axis=1)
  return per_position


@pytest.mark.parametrize('jit,kernel', [(True, 'explicit'), (False, 'explicit'), (True, 'xla')])
@pytest.mark.parametrize('position_kind', ['rope', 'learned'])
@pytest.mark.parametrize('window_pattern', ['L', 'SL'])
def test_output_depends_only_on_the_past(jit, kernel, position_kind, window_pattern):
  cfg = dataclasses.replace(TINY, position=position_kind, window_pattern=window_pattern,
                            value_embeds=True, residual_mix=True, attention=kernel)
  t = 9
  per_position = _input_gradients(cfg, t, jit)
  assert np.all(per_position[t + 1:] == 0.0), per_position
  assert np.all(per_position[:t + 1] > 0.0), per_position


@pytest.mark.parametrize('kernel', ['explicit', 'xla'])
def test_short_window_layers_limit_the_receptive_field(kernel):
  # Three short layers of window 3 then the (always full) last layer: position t sees
  # the last layer's full context, so check the short layers through a model whose last
  # layer is short too, by subclassing the config's window rule.
  class AllShort(gpt.GPTConfig):
    def layer_windows(self):
      return (self.short_window,) * self.n_layers

  cfg = AllShort(**dataclasses.asdict(dataclasses.replace(
      TINY, n_layers=2, window_pattern='S', short_window=3, attention=kernel)))
  t = 10
  per_position = _input_gradients(cfg, t, jit=True)
  # Two layers of window 3 reach back 2 + 2 positions.
  assert np.all(per_position[:t - 4] == 0.0), per_position
  assert np.all(per_position[t - 4:t + 1] > 0.0), per_position
  assert np.all(per_position[t + 1:] == 0.0), per_position


def test_last_layer_is_always_full():
  cfg = dataclasses.replace(TINY, n_layers=4, window_pattern='S')
  assert cfg.layer_windows() == (4, 4, 4, 16)
  cfg = dataclasses.replace(TINY, n_layers=4, window_pattern='SSL')
  assert cfg.layer_windows() == (4, 4, 16, 16)


def _one_step_loss(model_cfg: gpt.GPTConfig, optim_cfg: optim.OptimConfig):
  graphdef, params = nnx.split(gpt.GPT(model_cfg, nnx.Rngs(0)))
  tx = optim.build(optim_cfg, params)
  step = steps.make_train_step(graphdef, optim_cfg, micro_batches=1)
  batch = np.random.default_rng(0).integers(0, 256, (2, model_cfg.seq_len + 1), dtype=np.uint8)
  opt_state, values = tx.init(params), optim.runtime_values(optim_cfg)
  params, opt_state, loss0 = step(params, opt_state, batch, np.float32(0.0), values)
  params, opt_state, loss1 = step(params, opt_state, batch, np.float32(0.5), values)
  return float(loss0), float(loss1)


MODEL_SWITCHES = [(g.name, v) for g in genotype_lib.GENES if g.part == 'model'
                  and g.name not in ('n_layers', 'd_model', 'n_heads', 'n_kv_heads',
                                     'short_window', 'rope_base', 'mlp_ratio')
                  for v in g.values]


@pytest.mark.slow   # a compile per switch: about 70 s in all
@pytest.mark.parametrize('gene,value', MODEL_SWITCHES)
def test_every_switch_builds_and_takes_a_step(gene, value):
  cfg = dataclasses.replace(TINY, **{'window_pattern': 'SL', gene: value})
  loss0, loss1 = _one_step_loss(cfg, optim.OptimConfig())
  assert np.isfinite(loss0) and np.isfinite(loss1)
  assert loss1 < loss0  # the same batch twice: one step must lower its loss


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_every_optimizer_takes_a_step(optimizer):
  loss0, loss1 = _one_step_loss(TINY, optim.OptimConfig(optimizer=optimizer, weight_decay=0.1))
  assert loss1 < loss0


def test_gqa_and_mqa_shrink_kv_projections():
  full = gpt.count_params(dataclasses.replace(TINY, n_kv_heads=4))
  gqa = gpt.count_params(dataclasses.replace(TINY, n_kv_heads=2))
  mqa = gpt.count_params(dataclasses.replace(TINY, n_kv_heads=1))
  per_kv_head = 2 * TINY.d_model * TINY.head_dim * TINY.n_layers  # k and v columns
  assert full - gqa == 2 * per_kv_head and gqa - mqa == per_kv_head


def test_tied_embeddings_drop_the_head():
  untied = gpt.count_params(TINY)
  tied = gpt.count_params(dataclasses.replace(TINY, tie_embeddings=True))
  assert untied - tied == TINY.d_model * TINY.vocab_size


@pytest.mark.parametrize('changes', [
    {}, dict(norm='rms'), dict(norm='layernorm'), dict(activation='swiglu', mlp_ratio=2.5),
    dict(position='learned'), dict(value_embeds=True, n_layers=3), dict(residual_mix=True),
    dict(tie_embeddings=True), dict(n_kv_heads=1), dict(d_model=96, n_heads=3, n_kv_heads=1),
])
def test_closed_form_parameter_count_matches_the_model(changes):
  cfg = dataclasses.replace(TINY, **changes)
  abstract = nnx.eval_shape(lambda: gpt.GPT(cfg, nnx.Rngs(0)))
  built = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(abstract, nnx.Param)))
  assert gpt.count_params(cfg) == built


def test_softcap_bounds_logits():
  cfg = dataclasses.replace(TINY, logit_softcap=2.0)
  model = gpt.GPT(cfg, nnx.Rngs(0))
  model.lm_head = nnx.Param(model.lm_head[...] * 100.0)
  logits = model(jnp.arange(16)[None])
  assert float(jnp.max(jnp.abs(logits))) <= 2.0


def test_zero_init_projections_start_at_zero():
  model = gpt.GPT(dataclasses.replace(TINY, zero_init_proj=True), nnx.Rngs(0))
  for block in model.blocks:
    assert not np.any(np.asarray(block.attn.o.kernel[...]))
    assert not np.any(np.asarray(block.mlp.down.kernel[...]))


def test_param_groups():
  cfg = dataclasses.replace(TINY, value_embeds=True, residual_mix=True, position='learned')
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  groups = {}
  for path, _ in nnx.to_flat_state(params):
    groups.setdefault(gpt.param_group(path), []).append('/'.join(map(str, path)))
  assert set(groups) == {'embed', 'head', 'matrix', 'scalar'}
  assert 'embed' in groups['embed'] and 'pos_embed' in groups['embed']
  assert groups['head'] == ['lm_head']
  assert all(p.endswith('kernel') and 've_gate' not in p for p in groups['matrix'])
  assert 'lambda_0' in groups['scalar']


@pytest.mark.parametrize('config_module', [tiny, h100])
def test_configs_build_abstractly(config_module):
  config = config_module.get_config()
  genotype = genotype_lib.from_config(config)
  genotype_lib.check(genotype, config.trial.max_params)
  model_cfg = genotype_lib.model_config(genotype, config.trial.compute_dtype)
  model = nnx.eval_shape(lambda: gpt.GPT(model_cfg, nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  tokens = jax.ShapeDtypeStruct((2, model_cfg.seq_len), jnp.int32)
  logits = jax.eval_shape(lambda p, x: nnx.merge(graphdef, p)(x), params, tokens)
  assert logits.shape == (2, model_cfg.seq_len, 256) and logits.dtype == jnp.float32
  tx = optim.build(genotype_lib.optim_config(genotype), params)
  jax.eval_shape(tx.init, params)

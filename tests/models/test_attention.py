"""Attention kernels: `jax.nn.dot_product_attention` computes what the explicit einsums
compute (windows, GQA, MQA, QK-norm, RoPE and learned positions), in value and in
gradient; the per-backend choice and its errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import attention, gpt


BASE = gpt.GPTConfig(seq_len=16, n_layers=3, d_model=32, n_heads=4, n_kv_heads=2,
                     mlp_ratio=2.0, short_window=4, window_pattern='SL')

# float32 throughout: the two kernels differ only in the order of their float32 sums and
# where the softmax is normalised. Measured at these sizes: 1.2e-6 at most on logits of
# magnitude ~4, 2e-7 on attention outputs of magnitude ~1.
RTOL, ATOL = 2e-5, 2e-5


def test_attention_mask_is_a_causal_window():
  mask = np.asarray(attention.attention_mask(8, 3))
  for q in range(8):
    assert [k for k in range(8) if mask[q, k]] == list(range(max(0, q - 2), q + 1))


@pytest.mark.parametrize('window', [1, 3, 7, 12])
@pytest.mark.parametrize('heads,kv_heads', [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize('rope', [True, False])
def test_library_attention_matches_the_explicit_einsums(window, heads, kv_heads, rope):
  b, t, e = 2, 12, 8
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (b, t, heads, e))
  k = jax.random.normal(keys[1], (b, t, kv_heads, e))
  v = jax.random.normal(keys[2], (b, t, kv_heads, e))
  tables = tuple(jnp.asarray(a) for a in attention.rope_tables(t, e, 10000.0)) if rope else None
  explicit = jax.jit(lambda *a: attention.explicit_attention(*a, window, tables))(q, k, v)
  library = jax.jit(lambda *a: attention.library_attention(*a, window, tables, 'xla'))(q, k, v)
  assert explicit.shape == library.shape == (b, t, heads, e)
  np.testing.assert_allclose(library, explicit, rtol=RTOL, atol=ATOL)
  # A query sees nothing beyond its window: moving keys out of every window changes nothing.
  if window < t:
    far = k.at[:, :1].set(100.0), v.at[:, :1].set(100.0)
    moved = attention.library_attention(q, *far, window, tables, 'xla')
    np.testing.assert_allclose(moved[:, window:], library[:, window:], rtol=RTOL, atol=ATOL)
    assert not np.allclose(moved[:, :1], library[:, :1])


def _logits_and_grads(cfg, tokens):
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))

  def loss(p):
    logits = nnx.merge(graphdef, p)(tokens)
    return jnp.mean(jnp.square(logits)), logits
  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, dict(nnx.to_flat_state(grads))


@pytest.mark.parametrize('changes', [
    {}, dict(n_kv_heads=1, qk_norm=True), dict(qk_norm=True, value_embeds=True, residual_mix=True),
    dict(position='learned', window_pattern='S'), dict(n_kv_heads=4, window_pattern='SSL'),
])
def test_model_is_the_same_function_under_either_kernel(changes):
  base = dataclasses.replace(BASE, **changes)
  tokens = jax.random.randint(jax.random.key(1), (3, base.seq_len), 0, base.vocab_size)
  logits_x, grads_x = _logits_and_grads(dataclasses.replace(base, attention='explicit'), tokens)
  logits_l, grads_l = _logits_and_grads(dataclasses.replace(base, attention='xla'), tokens)
  np.testing.assert_allclose(logits_l, logits_x, rtol=RTOL, atol=ATOL)
  assert grads_x.keys() == grads_l.keys()
  for path in grads_x:
    np.testing.assert_allclose(grads_l[path].get_value(), grads_x[path].get_value(),
                               rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_the_kernels_agree_in_bfloat16_to_its_precision():
  cfg = dataclasses.replace(BASE, compute_dtype='bfloat16', qk_norm=True)
  tokens = jax.random.randint(jax.random.key(2), (2, cfg.seq_len), 0, cfg.vocab_size)
  x = gpt.GPT(dataclasses.replace(cfg, attention='explicit'), nnx.Rngs(0))(tokens)
  lib = gpt.GPT(dataclasses.replace(cfg, attention='xla'), nnx.Rngs(0))(tokens)
  # bf16 keeps 8 mantissa bits: a few 2^-8 relative steps through three layers.
  np.testing.assert_allclose(np.asarray(lib), np.asarray(x), rtol=0.05, atol=0.05)


def test_auto_picks_the_kernel_of_each_backend():
  kind = attention.attention_kind
  assert kind('auto', 'float32', 64, 'cpu') == 'explicit'
  assert kind('auto', 'bfloat16', 64, 'cpu') == 'explicit'
  assert kind('auto', 'bfloat16', 128, 'gpu') == 'cudnn'
  assert kind('auto', 'float32', 128, 'gpu') == 'xla'     # cuDNN's flash path is bf16/fp16
  assert kind('auto', 'bfloat16', 12, 'gpu') == 'xla'     # head_dim not a multiple of 8
  assert kind('auto', 'bfloat16', 256, 'gpu') == 'xla'
  assert kind('auto', 'bfloat16', 128, 'tpu') == 'xla'
  assert kind('xla', 'float32', 64, 'cpu') == 'xla'       # an explicit choice stands
  assert kind('auto', 'float32', 64) == 'explicit'        # this test runs on CPU


def test_bad_kernel_choices_are_clear_errors():
  with pytest.raises(ValueError, match="attention='flash' not in"):
    dataclasses.replace(BASE, attention='flash').check()
  with pytest.raises(ValueError, match='attention=cudnn needs a compute_dtype'):
    dataclasses.replace(BASE, attention='cudnn').check()
  dataclasses.replace(BASE, attention='cudnn', compute_dtype='bfloat16').check()


def test_rope_tables_are_one_constant_pair_per_forward():
  cfg = dataclasses.replace(BASE, n_layers=4)
  graphdef, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  tokens = jnp.zeros((1, cfg.seq_len), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p: nnx.merge(graphdef, p)(tokens))(params)
  tables = [c for c in jaxpr.consts if getattr(c, 'shape', None) == (cfg.seq_len, cfg.head_dim)]
  assert len(tables) == 2, [getattr(c, 'shape', None) for c in jaxpr.consts]


def test_auto_is_resolved_before_tracing_and_falls_back_without_cudnn(monkeypatch):
  cfg = dataclasses.replace(BASE, compute_dtype='bfloat16')
  assert gpt.resolve_attention(cfg).attention == 'explicit'  # this test runs on CPU
  assert gpt.resolve_attention(dataclasses.replace(cfg, attention='xla')).attention == 'xla'
  probed = []

  def probe(works):
    def cudnn_compiles(dtype, t, h, k, e, window):
      probed.append((dtype, t, h, k, e, window))
      return works
    return cudnn_compiles
  monkeypatch.setattr(gpt, 'cudnn_compiles', probe(True))
  assert gpt.resolve_attention(cfg, backend='gpu').attention == 'cudnn'
  # Every distinct window of the layers ('SL': the short one and the full one) is probed.
  assert probed == [('bfloat16', 16, 4, 2, 8, 4), ('bfloat16', 16, 4, 2, 8, 16)]
  monkeypatch.setattr(gpt, 'cudnn_compiles', probe(False))
  assert gpt.resolve_attention(cfg, backend='gpu').attention == 'xla'
  # float32 activations never reach the probe: cuDNN's flash path is bf16/fp16 only.
  probed.clear()
  assert gpt.resolve_attention(BASE, backend='gpu').attention == 'xla' and not probed


def test_the_cudnn_probe_says_no_where_there_is_no_cudnn():
  # On this CPU-only machine cuDNN's kernel cannot run: the probe answers False (and
  # warns) instead of raising, so 'auto' would fall back to XLA.
  assert jax.default_backend() == 'cpu'
  assert attention.cudnn_compiles('bfloat16', 16, 4, 2, 8, 4) is False

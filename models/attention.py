"""Causal windowed attention and rotary positions for models/gpt.py, behind one switch.

Two kernels compute the same function (within float32 rounding):
* 'explicit': einsums over (B, K, G, T, E) with float32 (T, T) scores and the softmax
  normalisation deferred to the output; XLA's CPU backend steps it fastest.
* `jax.nn.dot_product_attention` with `implementation` 'xla' or 'cudnn' (cuDNN flash
  attention on NVIDIA GPUs: the (T, T) scores never reach memory, which the explicit
  path needs gigabytes for at 2048-token sequences).
Both take the 1/sqrt(E) scale on q before RoPE is applied, the same arithmetic.

Shape suffixes: B batch, T time, H query heads, K kv heads, G = H / K, E head dim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging


# Attention kernels: 'explicit' (the einsums here), 'xla' or 'cudnn' (both through
# `jax.nn.dot_product_attention`; cudnn is flash attention, bf16/fp16 on NVIDIA GPUs), or
# 'auto': the faster one of the backend the model is traced for (`attention_kind`).
ATTENTIONS = ('auto', 'explicit', 'xla', 'cudnn')


def rope_tables(t_len: int, dim: int, base: float):
  """RoPE as numpy constants (T, E): rope(x) = x * cos + rotate_half(x) * sin, with
  rotate_half(x) = [x2, x1] (halves swapped) and its sign folded into `sin`."""
  inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  angles_TxE2 = np.arange(t_len, dtype=np.float64)[:, None] * inv_freq[None, :]
  cos, sin = np.cos(angles_TxE2), np.sin(angles_TxE2)
  return (np.concatenate([cos, cos], -1).astype(np.float32),
          np.concatenate([-sin, sin], -1).astype(np.float32))


def apply_rope(x, cos_TxE, sin_TxE, scale: float = 1.0, time_axis: int = -2):
  """Rotary embedding (rotating halves) of x (..., E) whose time axis is `time_axis`,
  times `scale`, in float32. One elementwise pass and one concatenate: XLA's CPU
  backend fuses it far better than rotating each half separately."""
  axis = time_axis % x.ndim
  shape = tuple(x.shape[i] if i in (axis, x.ndim - 1) else 1 for i in range(x.ndim))
  cos, sin = cos_TxE.reshape(shape), sin_TxE.reshape(shape)
  x32 = x.astype(jnp.float32)
  if scale != 1.0:
    x32 = x32 * scale
  x1, x2 = jnp.split(x32, 2, axis=-1)
  return (x32 * cos + jnp.concatenate([x2, x1], axis=-1) * sin).astype(x.dtype)


def attention_mask(t_len: int, window: int):
  """Boolean (T, T): query t sees keys s with 0 <= t - s < window."""
  delta = jnp.arange(t_len)[:, None] - jnp.arange(t_len)[None, :]
  return (delta >= 0) & (delta < window)


CUDNN_DTYPES = ('bfloat16', 'float16')  # activation dtypes cuDNN flash attention takes


def attention_kind(attention: str, compute_dtype: str, head_dim: int,
                   backend: str | None = None, cudnn_runs=None) -> str:
  """The kernel `attention` (one of ATTENTIONS) names on `backend` (default: JAX's
  default backend).
  'auto' is cuDNN flash attention on a GPU where it applies (bf16/fp16 activations,
  head_dim a multiple of 8 and at most 128, and `cudnn_runs()` true when given: a probe
  of the real shapes, `cudnn_compiles`), XLA's fused path elsewhere on accelerators,
  and the explicit einsums on CPU, where they step faster than XLA's generic path
  (benchmarks/step_throughput.py --attentions=explicit,xla)."""
  if attention != 'auto':
    return attention
  backend = backend or jax.default_backend()
  if backend == 'cpu':
    return 'explicit'
  if (backend in ('gpu', 'cuda') and compute_dtype in CUDNN_DTYPES
      and head_dim % 8 == 0 and head_dim <= 128 and (cudnn_runs is None or cudnn_runs())):
    return 'cudnn'
  return 'xla'


@functools.lru_cache(maxsize=None)
def cudnn_compiles(dtype: str, t_len: int, n_heads: int, n_kv_heads: int, head_dim: int,
                   window: int) -> bool:
  """Whether cuDNN flash attention compiles and runs, value and gradient, for one
  sequence of these shapes on the default device (once per process and shape). False,
  with a warning, where it does not (no cuDNN, one too old, or shapes it refuses), so
  that 'auto' falls back to XLA instead of every trial crashing."""
  q = jnp.zeros((1, t_len, n_heads, head_dim), dtype)
  kv = jnp.zeros((1, t_len, n_kv_heads, head_dim), dtype)

  def total(q, k, v):
    return library_attention(q, k, v, window, None, 'cudnn').astype(jnp.float32).sum()
  try:
    jax.block_until_ready(jax.jit(jax.grad(total, argnums=(0, 1, 2)))(q, kv, kv))
    return True
  except Exception as e:  # noqa: BLE001 - any failure means: not this kernel here
    logging.warning('cuDNN attention unavailable for %s T=%d H=%d K=%d E=%d window=%d '
                    '(XLA instead): %s', dtype, t_len, n_heads, n_kv_heads, head_dim, window,
                    str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    return False


def explicit_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, window: int, rope=None):
  """Causal windowed attention as einsums over (B, K, G, T, E), G = H / K query heads per
  kv head; with `rope` = (cos, sin) tables (T, E), rotary positions first. The (T, T)
  scores are float32. Returns (B, T, H, E)."""
  b, t, h, e = q_BxTxHxE.shape
  k = k_BxTxKxE.shape[2]
  g = h // k
  q_BxKxGxTxE = q_BxTxHxE.reshape(b, t, k, g, e).transpose(0, 2, 3, 1, 4)
  k_BxKxTxE = k_BxTxKxE.transpose(0, 2, 1, 3)
  v_BxKxTxE = v_BxTxKxE.transpose(0, 2, 1, 3)
  # The 1/sqrt(E) score scale goes on q (T x E) rather than on the scores (T x T).
  scale = e ** -0.5
  if rope is not None:
    q_BxKxGxTxE = apply_rope(q_BxKxGxTxE, *rope, scale)
    k_BxKxTxE = apply_rope(k_BxKxTxE, *rope)
  else:
    q_BxKxGxTxE = (q_BxKxGxTxE.astype(jnp.float32) * scale).astype(q_BxKxGxTxE.dtype)
  scores = jnp.einsum('bkgte,bkse->bkgts', q_BxKxGxTxE, k_BxKxTxE,
                      preferred_element_type=jnp.float32)
  mask_1x1x1xTxT = attention_mask(t, window)[None, None, None]
  scores = jnp.where(mask_1x1x1xTxT, scores, jnp.finfo(jnp.float32).min)
  # Softmax with its normalisation deferred to the (T, E) output, as flash attention
  # does: the (T, T) weights are never divided, one full pass over them fewer.
  weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
  out_BxKxGxTxE = jnp.einsum('bkgts,bkse->bkgte', weights.astype(v_BxKxTxE.dtype), v_BxKxTxE,
                             preferred_element_type=jnp.float32)
  out_BxKxGxTxE = (out_BxKxGxTxE / jnp.sum(weights, axis=-1, keepdims=True)).astype(
      v_BxKxTxE.dtype)
  return out_BxKxGxTxE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


def library_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, window: int, rope=None,
                      implementation: str = 'xla'):
  """The same attention through `jax.nn.dot_product_attention` ('xla' or 'cudnn', the
  latter flash attention: the (T, T) scores never reach memory). Returns (B, T, H, E)."""
  t, e = q_BxTxHxE.shape[1], q_BxTxHxE.shape[-1]
  scale = e ** -0.5
  if rope is not None:  # layout (B, T, N, E): time is axis 1
    q_BxTxHxE = apply_rope(q_BxTxHxE, *rope, scale, time_axis=1)
    k_BxTxKxE = apply_rope(k_BxTxKxE, *rope, time_axis=1)
  else:
    q_BxTxHxE = (q_BxTxHxE.astype(jnp.float32) * scale).astype(q_BxTxHxE.dtype)
  # A window of w keys is w - 1 to the left of the query and none to its right.
  local = None if window >= t else (window - 1, 0)
  return jax.nn.dot_product_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, scale=1.0,
                                      is_causal=True, local_window_size=local,
                                      implementation=implementation)

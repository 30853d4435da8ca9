"""The layers of models/gpt.py: norms, a bias-free linear map, attention, MLP, block.

Shape suffixes as in gpt.py: B batch, T time, D d_model, H query heads, K kv heads,
E head dim, F MLP hidden width. `cfg` is a `gpt.GPTConfig`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.attention import attention_kind, explicit_attention, library_attention


def normal(std: float):
  """A normal initializer of standard deviation `std`."""
  return nnx.initializers.normal(stddev=std)


class Norm(nnx.Module):
  """RMSNorm without parameters, RMSNorm with a scale, or LayerNorm."""

  def __init__(self, kind: str, dim: int):
    self.kind = kind
    self.scale = nnx.Param(jnp.ones((dim,))) if kind != 'rms' else None
    self.bias = nnx.Param(jnp.zeros((dim,))) if kind == 'layernorm' else None

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    if self.kind == 'layernorm':
      x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + 1e-6)
    lead = (1,) * (y.ndim - 1)  # explicit broadcasting (rank promotion stays strict)
    if self.scale is not None:
      y = y * self.scale[...].reshape(lead + (-1,))
    if self.bias is not None:
      y = y + self.bias[...].reshape(lead + (-1,))
    return y.astype(x.dtype)


def rms_normalize(x):
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + 1e-6)).astype(x.dtype)


class Linear(nnx.Module):
  """y = x @ W with W of shape (fan_in, fan_out); no bias (as in the reference recipes)."""

  def __init__(self, fan_in: int, fan_out: int, std: float, dtype, rngs: nnx.Rngs):
    init = nnx.initializers.zeros if std == 0 else normal(std)
    self.kernel = nnx.Param(init(rngs.params(), (fan_in, fan_out), jnp.float32))
    self.dtype = dtype

  def __call__(self, x):
    # As a 2-D (rows, fan_in) matmul: with a 3-D x XLA's CPU backend lays the weight
    # gradient's operand out transposed and fuses that transpose into the producer's
    # backward (GELU's), which made the step ~20% slower.
    x_NxI = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    y_NxO = jnp.dot(x_NxI, self.kernel[...].astype(self.dtype))
    return y_NxO.reshape(*x.shape[:-1], y_NxO.shape[-1])


class Attention(nnx.Module):

  def __init__(self, cfg, window: int, value_embed: bool, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.compute_dtype)
    d, e = cfg.d_model, cfg.head_dim
    std = d ** -0.5
    self.cfg, self.window = cfg, window
    self.q = Linear(d, cfg.n_heads * e, std, dtype, rngs)
    self.k = Linear(d, cfg.n_kv_heads * e, std, dtype, rngs)
    self.v = Linear(d, cfg.n_kv_heads * e, std, dtype, rngs)
    self.o = Linear(cfg.n_heads * e, d, 0.0 if cfg.zero_init_proj else (cfg.n_heads * e) ** -0.5,
                    dtype, rngs)
    # Gate of the value embedding: one scalar per kv head, 2*sigmoid(0) = 1 at init.
    self.ve_gate = Linear(d, cfg.n_kv_heads, 0.0, dtype, rngs) if value_embed else None

  def __call__(self, x_BxTxD, ve_BxTxKE=None, rope=None, window=None):
    """`rope`: the (cos, sin) tables of the sequence, (T, E) each, or None (learned
    positions). `window`: a traced window in place of the layer's own (a short window
    growing during training), which the explicit kernel takes."""
    cfg = self.cfg
    b, t, _ = x_BxTxD.shape
    h, k, e = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q_BxTxHxE = self.q(x_BxTxD).reshape(b, t, h, e)
    k_BxTxKxE = self.k(x_BxTxD).reshape(b, t, k, e)
    v_BxTxKxE = self.v(x_BxTxD).reshape(b, t, k, e)
    if self.ve_gate is not None:
      gate_BxTxK = 2.0 * jax.nn.sigmoid(self.ve_gate(x_BxTxD))
      v_BxTxKxE = v_BxTxKxE + gate_BxTxK[..., None] * ve_BxTxKE.reshape(b, t, k, e)
    if cfg.qk_norm:
      q_BxTxHxE, k_BxTxKxE = rms_normalize(q_BxTxHxE), rms_normalize(k_BxTxKxE)
    kind = attention_kind(cfg.attention, cfg.compute_dtype, e)
    if window is not None:
      out_BxTxHxE = explicit_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, window, rope)
    elif kind == 'explicit':
      out_BxTxHxE = explicit_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, self.window, rope)
    else:
      out_BxTxHxE = library_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, self.window, rope, kind)
    return self.o(out_BxTxHxE.reshape(b, t, h * e))


class MLP(nnx.Module):

  def __init__(self, cfg, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.compute_dtype)
    d, f = cfg.d_model, cfg.mlp_hidden
    self.activation = cfg.activation
    self.up = Linear(d, f, d ** -0.5, dtype, rngs)
    self.gate = Linear(d, f, d ** -0.5, dtype, rngs) if cfg.activation == 'swiglu' else None
    self.down = Linear(f, d, 0.0 if cfg.zero_init_proj else f ** -0.5, dtype, rngs)

  def __call__(self, x_BxTxD):
    h_BxTxF = self.up(x_BxTxD)
    if self.activation == 'relu2':
      h_BxTxF = jnp.square(jax.nn.relu(h_BxTxF))
    elif self.activation == 'gelu':
      h_BxTxF = jax.nn.gelu(h_BxTxF)
    else:
      h_BxTxF = jax.nn.silu(self.gate(x_BxTxD)) * h_BxTxF
    return self.down(h_BxTxF)


class Block(nnx.Module):

  def __init__(self, cfg, window: int, value_embed: bool, rngs: nnx.Rngs):
    self.attn_norm = Norm(cfg.norm, cfg.d_model)
    self.attn = Attention(cfg, window, value_embed, rngs)
    self.mlp_norm = Norm(cfg.norm, cfg.d_model)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x_BxTxD, ve_BxTxKE=None, rope=None, window=None):
    x_BxTxD = x_BxTxD + self.attn(self.attn_norm(x_BxTxD), ve_BxTxKE, rope, window)
    return x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))

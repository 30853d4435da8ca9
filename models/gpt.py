"""A decoder-only byte-level GPT in Flax NNX, every architecture choice a switch.

The model is built from a frozen `GPTConfig`; this module holds modules only (no
losses, no optimizers, no ml_collections). The switches mirror the baseline
`train.py` of karpathy/autoresearch (itself from modded-nanogpt / nanochat):
GQA, RoPE or learned positions, QK-norm, a per-layer short/long attention window
pattern, value embeddings on alternating layers, relu^2 / gelu / swiglu MLPs,
three norms, residual mixing with the embedding stream, logit soft-capping, tied
embeddings and zero-initialised output projections.

Shape suffixes: B batch, T time, D d_model, H query heads, K kv heads, E head dim,
F MLP hidden width, V vocabulary.

Every hidden weight is a 2-D matrix (fan_in, fan_out) so that Muon applies to it
unchanged; `param_group` names the optimizer group of each parameter.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from models.attention import (ATTENTIONS, CUDNN_DTYPES, attention_kind, cudnn_compiles,
                              explicit_attention, library_attention, rope_tables)


ACTIVATIONS = ('relu2', 'gelu', 'swiglu')
NORMS = ('rms', 'rms_scale', 'layernorm')
POSITIONS = ('rope', 'learned')


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """Architecture of the GPT. Validity is checked in `validate`."""

  vocab_size: int = 256        # tokens; bytes
  seq_len: int = 256           # tokens per sequence (context length)
  n_layers: int = 2            # transformer blocks
  d_model: int = 128           # residual stream width
  n_heads: int = 2             # query heads
  n_kv_heads: int = 2          # key/value heads (GQA when < n_heads; MQA when 1)
  position: str = 'rope'       # 'rope' or 'learned' absolute positions
  rope_base: float = 10000.0   # RoPE frequency base
  qk_norm: bool = False        # RMS-normalise queries and keys per head
  window_pattern: str = 'L'    # per-layer pattern, tiled: S = short window, L = full
  short_window: int = 64       # tokens a short-window layer attends to (incl. itself)
  value_embeds: bool = False   # value embeddings on alternating layers, gated
  activation: str = 'gelu'     # MLP activation: relu2 | gelu | swiglu
  mlp_ratio: float = 4.0       # MLP hidden width / d_model
  norm: str = 'rms_scale'      # rms (no parameters) | rms_scale | layernorm
  residual_mix: bool = False   # x <- lambda_res * x + lambda_0 * x0 before each block
  logit_softcap: float = 0.0   # cap * tanh(logits / cap); 0 disables
  tie_embeddings: bool = False  # lm head reuses the token embedding
  zero_init_proj: bool = False  # zero-init attention and MLP output projections
  compute_dtype: str = 'float32'  # activations dtype; parameters stay float32
  attention: str = 'auto'      # attention kernel (ATTENTIONS); the same function, any kernel

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  @property
  def mlp_hidden(self) -> int:
    return max(1, int(round(self.d_model * self.mlp_ratio)))

  def layer_windows(self) -> tuple[int, ...]:
    """Attention window per layer in tokens; the pattern is tiled over the layers and
    the last layer is always full, so the output sees the whole context."""
    windows = []
    for i in range(self.n_layers):
      kind = self.window_pattern[i % len(self.window_pattern)]
      full = kind == 'L' or i == self.n_layers - 1
      windows.append(self.seq_len if full else self.short_window)
    return tuple(windows)

  def check(self) -> None:
    """Raises ValueError with the reason when this config cannot be built (`validate`)."""
    validate(self)

  def value_embed_layers(self) -> tuple[int, ...]:
    """Layers with value embeddings: every other layer, counted back from the last."""
    if not self.value_embeds:
      return ()
    return tuple(i for i in range(self.n_layers) if (self.n_layers - 1 - i) % 2 == 0)


def validate(cfg: GPTConfig) -> None:
  """Raises ValueError with the reason when `cfg` cannot be built."""
  checks = [
      (cfg.n_layers >= 1, f'n_layers={cfg.n_layers} must be >= 1'),
      (cfg.n_heads >= 1 and cfg.d_model % cfg.n_heads == 0,
       f'n_heads={cfg.n_heads} must divide d_model={cfg.d_model}'),
      (cfg.n_kv_heads >= 1 and cfg.n_heads % cfg.n_kv_heads == 0,
       f'n_kv_heads={cfg.n_kv_heads} must divide n_heads={cfg.n_heads}'),
      (cfg.position in POSITIONS, f'position={cfg.position!r} not in {POSITIONS}'),
      (cfg.position != 'rope' or cfg.head_dim % 2 == 0,
       f'RoPE needs an even head_dim, got {cfg.head_dim}'),
      (cfg.activation in ACTIVATIONS, f'activation={cfg.activation!r} not in {ACTIVATIONS}'),
      (cfg.norm in NORMS, f'norm={cfg.norm!r} not in {NORMS}'),
      (bool(cfg.window_pattern) and set(cfg.window_pattern) <= {'S', 'L'},
       f'window_pattern={cfg.window_pattern!r} must be a non-empty string of S and L'),
      ('S' not in cfg.window_pattern or 1 <= cfg.short_window <= cfg.seq_len,
       f'short_window={cfg.short_window} must be in [1, seq_len={cfg.seq_len}]'),
      (cfg.logit_softcap >= 0, f'logit_softcap={cfg.logit_softcap} must be >= 0'),
      (cfg.mlp_ratio > 0, f'mlp_ratio={cfg.mlp_ratio} must be > 0'),
      (cfg.attention in ATTENTIONS, f'attention={cfg.attention!r} not in {ATTENTIONS}'),
      (cfg.attention != 'cudnn' or cfg.compute_dtype in CUDNN_DTYPES,
       f'attention=cudnn needs a compute_dtype in {CUDNN_DTYPES}, got {cfg.compute_dtype!r}'),
  ]
  for ok, reason in checks:
    if not ok:
      raise ValueError(reason)


def resolve_attention(cfg: GPTConfig, backend: str | None = None) -> GPTConfig:
  """`cfg` with its attention kernel named outright: 'auto' resolved for `backend`
  (default: JAX's), on a GPU only after cuDNN ran every layer window's shapes
  (`attention.cudnn_compiles`, once per process and shape). Call outside any trace."""
  def cudnn_runs():
    return all(cudnn_compiles(cfg.compute_dtype, cfg.seq_len, cfg.n_heads, cfg.n_kv_heads,
                              cfg.head_dim, window) for window in sorted(set(cfg.layer_windows())))
  kind = attention_kind(cfg.attention, cfg.compute_dtype, cfg.head_dim, backend, cudnn_runs)
  return dataclasses.replace(cfg, attention=kind)


def _normal(std: float):
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
    init = nnx.initializers.zeros if std == 0 else _normal(std)
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

  def __init__(self, cfg: GPTConfig, window: int, value_embed: bool, rngs: nnx.Rngs):
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

  def __call__(self, x_BxTxD, ve_BxTxKE=None, rope=None):
    """`rope`: the (cos, sin) tables of the sequence, (T, E) each, or None (learned
    positions)."""
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
    if kind == 'explicit':
      out_BxTxHxE = explicit_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, self.window, rope)
    else:
      out_BxTxHxE = library_attention(q_BxTxHxE, k_BxTxKxE, v_BxTxKxE, self.window, rope, kind)
    return self.o(out_BxTxHxE.reshape(b, t, h * e))


class MLP(nnx.Module):

  def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
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

  def __init__(self, cfg: GPTConfig, window: int, value_embed: bool, rngs: nnx.Rngs):
    self.attn_norm = Norm(cfg.norm, cfg.d_model)
    self.attn = Attention(cfg, window, value_embed, rngs)
    self.mlp_norm = Norm(cfg.norm, cfg.d_model)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x_BxTxD, ve_BxTxKE=None, rope=None):
    x_BxTxD = x_BxTxD + self.attn(self.attn_norm(x_BxTxD), ve_BxTxKE, rope)
    return x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))


class GPT(nnx.Module):
  """tokens (B, T) int -> logits (B, T, V) float32."""

  def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
    cfg.check()
    self.cfg = cfg
    d, v = cfg.d_model, cfg.vocab_size
    # The embedding is normalised before use, so its scale only matters when tied.
    embed_std = d ** -0.5 if cfg.tie_embeddings else 1.0
    self.embed = nnx.Param(_normal(embed_std)(rngs.params(), (v, d), jnp.float32))
    self.pos_embed = (nnx.Param(_normal(0.02)(rngs.params(), (cfg.seq_len, d), jnp.float32))
                      if cfg.position == 'learned' else None)
    ve_layers = cfg.value_embed_layers()
    kv_width = cfg.n_kv_heads * cfg.head_dim
    self.value_embed = nnx.Dict({
        str(i): nnx.Param(_normal(1.0)(rngs.params(), (v, kv_width), jnp.float32))
        for i in ve_layers})
    self.blocks = nnx.List([Block(cfg, w, i in ve_layers, rngs)
                            for i, w in enumerate(cfg.layer_windows())])
    if cfg.residual_mix:
      # Learned per-layer mixing with the embedding stream (modded-nanogpt's x0 skip).
      self.lambda_res = nnx.Param(jnp.ones((cfg.n_layers,)))
      self.lambda_0 = nnx.Param(jnp.full((cfg.n_layers,), 0.1))
    else:
      self.lambda_res = self.lambda_0 = None
    self.final_norm = Norm(cfg.norm, d)
    self.lm_head = (None if cfg.tie_embeddings else
                    nnx.Param(_normal(d ** -0.5)(rngs.params(), (d, v), jnp.float32)))

  def __call__(self, tokens_BxT):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.compute_dtype)
    t = tokens_BxT.shape[1]
    x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
    if self.pos_embed is not None:
      x_BxTxD = x_BxTxD + self.pos_embed[...][:t][None]
    x_BxTxD = rms_normalize(x_BxTxD).astype(dtype)
    x0_BxTxD = x_BxTxD
    # One pair of RoPE tables for every layer (one constant each in the program).
    rope = (None if cfg.position != 'rope' else
            tuple(jnp.asarray(a) for a in rope_tables(t, cfg.head_dim, cfg.rope_base)))
    for i, block in enumerate(self.blocks):
      if self.lambda_res is not None:
        x_BxTxD = (self.lambda_res[...][i] * x_BxTxD
                   + self.lambda_0[...][i] * x0_BxTxD).astype(dtype)
      ve = None
      if str(i) in self.value_embed:
        ve = jnp.take(self.value_embed[str(i)][...], tokens_BxT, axis=0).astype(dtype)
      x_BxTxD = block(x_BxTxD, ve, rope)
    x_BxTxD = self.final_norm(x_BxTxD)
    head_DxV = self.embed[...].T if self.lm_head is None else self.lm_head[...]
    logits_BxTxV = jnp.dot(x_BxTxD.astype(dtype), head_DxV.astype(dtype),
                           preferred_element_type=jnp.float32)
    if cfg.logit_softcap > 0:
      logits_BxTxV = cfg.logit_softcap * jnp.tanh(logits_BxTxV / cfg.logit_softcap)
    return logits_BxTxV


def param_group(path: tuple) -> str:
  """Optimizer group of the parameter at `path` (keys from `nnx.State.flat_state()`):
  'embed' (token, position and value embeddings), 'head' (lm head), 'matrix' (hidden
  2-D weights, Muon's domain) or 'scalar' (norm scales, biases, gates' mixing scalars)."""
  names = [str(getattr(p, 'key', p)) for p in path]
  if names[0] in ('embed', 'pos_embed', 'value_embed'):
    return 'embed'
  if names[0] == 'lm_head':
    return 'head'
  if names[-1] == 'kernel' and 've_gate' not in names:
    return 'matrix'
  return 'scalar'


def count_params(cfg: GPTConfig) -> int:
  """Number of parameters, in closed form (the search checks thousands of candidate
  edits against a parameter cap; tests check this against the built model)."""
  d, v, e, h, k = cfg.d_model, cfg.vocab_size, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
  norm = {'rms': 0, 'rms_scale': d, 'layernorm': 2 * d}[cfg.norm]
  mlp = (3 if cfg.activation == 'swiglu' else 2) * d * cfg.mlp_hidden
  block = 2 * norm + d * h * e + 2 * d * k * e + h * e * d + mlp
  n = v * d + cfg.n_layers * block + norm
  n += cfg.seq_len * d if cfg.position == 'learned' else 0
  n += len(cfg.value_embed_layers()) * (v * k * e + d * k)  # table and gate
  n += 2 * cfg.n_layers if cfg.residual_mix else 0
  n += 0 if cfg.tie_embeddings else d * v
  return n


def flops_per_token(cfg: GPTConfig) -> float:
  """Training FLOPs per token (forward + backward = 3x forward), matmuls only:
  6 x (matmul parameters) plus attention scores and values over the visible keys
  (each layer's mean window, causal halving included)."""
  d, e, h, k = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
  per_layer = d * h * e + 2 * d * k * e + h * e * d
  per_layer += (3 if cfg.activation == 'swiglu' else 2) * d * cfg.mlp_hidden
  matmul_params = cfg.n_layers * per_layer + d * cfg.vocab_size
  attn = 0.0
  for w in cfg.layer_windows():
    # Mean number of keys a query sees under a causal window w over seq_len positions.
    t = cfg.seq_len
    mean_keys = (sum(min(i + 1, w) for i in range(t))) / t
    attn += 2 * 2 * h * e * mean_keys  # QK^T and PV, 2 FLOPs per multiply-add
  return 6.0 * matmul_params + 3.0 * attn

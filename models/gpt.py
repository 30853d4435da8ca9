"""A decoder-only byte-level GPT in Flax NNX, every architecture choice a switch.

The model is built from a frozen `GPTConfig`; this module holds modules only (no
losses, no optimizers, no ml_collections). The switches mirror the baseline
`train.py` of karpathy/autoresearch (itself from modded-nanogpt / nanochat):
GQA, RoPE or learned positions, QK-norm, a per-layer short/long attention window
pattern, value embeddings on alternating layers, relu^2 / gelu / swiglu MLPs,
three norms, residual mixing with the embedding stream, logit soft-capping, tied
embeddings and zero-initialised output projections; and later records of the
modded-nanogpt speedrun (github.com/KellerJordan/modded-nanogpt, README record table):
U-net skip connections (record 11), short windows that grow during training (record 13,
attention window warmup), a bigram hash embedding (record 62) and multi-token
prediction as an auxiliary loss (record 53).

Shape suffixes: B batch, T time, D d_model, H query heads, K kv heads, E head dim,
F MLP hidden width, V vocabulary.

Every hidden weight is a 2-D matrix (fan_in, fan_out) so that Muon applies to it
unchanged; `param_group` names the optimizer group of each parameter.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax
from flax import nnx

from models.attention import ATTENTIONS, CUDNN_DTYPES, attention_kind, cudnn_compiles, rope_tables
from models.layers import Block, Norm, normal, rms_normalize


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
  unet_skips: bool = False     # layer i of the second half adds the output of layer L-1-i
  window_warmup: float = 0.0   # fraction of training over which short windows grow; 0 = off
  bigram_buckets: int = 0      # rows of the (previous, current) byte hash embedding; 0 = off
  mtp_weight: float = 0.0      # weight of the auxiliary loss of predicting byte t+2; 0 = off

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

  def skip_pairs(self) -> tuple[tuple[int, int], ...]:
    """(source, destination) layers of the U-net skips: the output of layer j of the
    first half goes into layer L-1-j. None with one layer, where nothing is read."""
    half = self.n_layers // 2
    if not half or not self.unet_skips:
      return ()
    return tuple((j, self.n_layers - 1 - j) for j in range(half))

  def growing_windows(self) -> bool:
    """Whether some short window grows during training (a short window exists and the
    warmup is on); with every layer full, `window_warmup` is never read."""
    short = [w for w in self.layer_windows() if w < self.seq_len]
    return bool(short) and self.window_warmup > 0

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
      (0.0 <= cfg.window_warmup <= 1.0, f'window_warmup={cfg.window_warmup} must be in [0, 1]'),
      (cfg.bigram_buckets == 0 or cfg.bigram_buckets >= 2,
       f'bigram_buckets={cfg.bigram_buckets} must be 0 (off) or at least 2'),
      (cfg.mtp_weight >= 0, f'mtp_weight={cfg.mtp_weight} must be >= 0'),
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


class GPT(nnx.Module):
  """tokens (B, T) int -> logits (B, T, V) float32; `train_loss` is its training objective."""

  def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
    cfg.check()
    self.cfg = cfg
    d, v = cfg.d_model, cfg.vocab_size
    # The embedding is normalised before use, so its scale only matters when tied.
    embed_std = d ** -0.5 if cfg.tie_embeddings else 1.0
    self.embed = nnx.Param(normal(embed_std)(rngs.params(), (v, d), jnp.float32))
    self.pos_embed = (nnx.Param(normal(0.02)(rngs.params(), (cfg.seq_len, d), jnp.float32))
                      if cfg.position == 'learned' else None)
    # Zero at init, so the model starts as the one without it (modded-nanogpt record 62).
    self.bigram = (nnx.Param(jnp.zeros((cfg.bigram_buckets, d))) if cfg.bigram_buckets
                   else None)
    ve_layers = cfg.value_embed_layers()
    kv_width = cfg.n_kv_heads * cfg.head_dim
    self.value_embed = nnx.Dict({
        str(i): nnx.Param(normal(1.0)(rngs.params(), (v, kv_width), jnp.float32))
        for i in ve_layers})
    self.blocks = nnx.List([Block(cfg, w, i in ve_layers, rngs)
                            for i, w in enumerate(cfg.layer_windows())])
    if cfg.residual_mix:
      # Learned per-layer mixing with the embedding stream (modded-nanogpt's x0 skip).
      self.lambda_res = nnx.Param(jnp.ones((cfg.n_layers,)))
      self.lambda_0 = nnx.Param(jnp.full((cfg.n_layers,), 0.1))
    else:
      self.lambda_res = self.lambda_0 = None
    skips = cfg.skip_pairs()
    self.skip_weights = nnx.Param(jnp.ones((len(skips),))) if skips else None
    self.final_norm = Norm(cfg.norm, d)
    self.lm_head = (None if cfg.tie_embeddings else
                    nnx.Param(normal(d ** -0.5)(rngs.params(), (d, v), jnp.float32)))
    self.mtp_head = (nnx.Param(normal(d ** -0.5)(rngs.params(), (d, v), jnp.float32))
                     if cfg.mtp_weight > 0 else None)

  def __call__(self, tokens_BxT, progress=None):
    """Logits of the next byte. `progress` (training seconds / budget, traced): where
    short windows grow during training; None: the trained model (every window full size)."""
    return self._logits(self.hidden(tokens_BxT, progress), self._main_head())

  def train_loss(self, batch_BxT1, progress=None):
    """(the loss to minimise, the next-byte cross-entropy): mean nats over a batch of
    T+1 bytes. The first adds `mtp_weight` x the cross-entropy of predicting byte t+2
    from position t (an auxiliary head); the second is what a trial reports."""
    inputs, targets = batch_BxT1[:, :-1].astype(jnp.int32), batch_BxT1[:, 1:]
    x_BxTxD = self.hidden(inputs, progress)
    next_nats = jnp.mean(cross_entropy_nats(self._logits(x_BxTxD, self._main_head()), targets))
    if self.mtp_head is None:
      return next_nats, next_nats
    ahead_BxTxV = self._logits(x_BxTxD[:, :-1], self.mtp_head[...])
    ahead_nats = jnp.mean(cross_entropy_nats(ahead_BxTxV, batch_BxT1[:, 2:]))
    return next_nats + self.cfg.mtp_weight * ahead_nats, next_nats

  def hidden(self, tokens_BxT, progress=None):
    """The final normalised residual stream (B, T, D)."""
    cfg = self.cfg
    dtype = jnp.dtype(cfg.compute_dtype)
    t = tokens_BxT.shape[1]
    x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
    if self.pos_embed is not None:
      x_BxTxD = x_BxTxD + self.pos_embed[...][:t][None]
    if self.bigram is not None:
      x_BxTxD = x_BxTxD + jnp.take(self.bigram[...], bigram_hash(tokens_BxT, cfg.bigram_buckets),
                                   axis=0)
    x_BxTxD = rms_normalize(x_BxTxD).astype(dtype)
    x0_BxTxD = x_BxTxD
    # One pair of RoPE tables for every layer (one constant each in the program).
    rope = (None if cfg.position != 'rope' else
            tuple(jnp.asarray(a) for a in rope_tables(t, cfg.head_dim, cfg.rope_base)))
    windows = self._windows(progress)
    pairs = cfg.skip_pairs()
    skip_from = {dst: (k, src) for k, (src, dst) in enumerate(pairs)}
    sources = {src for src, _ in pairs}
    outputs = {}
    for i, block in enumerate(self.blocks):
      if self.lambda_res is not None:
        x_BxTxD = (self.lambda_res[...][i] * x_BxTxD
                   + self.lambda_0[...][i] * x0_BxTxD).astype(dtype)
      if i in skip_from:
        k, src = skip_from[i]
        x_BxTxD = (x_BxTxD + self.skip_weights[...][k] * outputs[src]).astype(dtype)
      ve = None
      if str(i) in self.value_embed:
        ve = jnp.take(self.value_embed[str(i)][...], tokens_BxT, axis=0).astype(dtype)
      x_BxTxD = block(x_BxTxD, ve, rope, windows[i])
      if i in sources:
        outputs[i] = x_BxTxD
    return self.final_norm(x_BxTxD)

  def _windows(self, progress) -> list:
    """Per layer: a traced window (a short one growing from 1/8 of its size to all of it
    over the first `window_warmup` of training), or None (the layer's own)."""
    cfg = self.cfg
    windows = [None] * cfg.n_layers
    if progress is None or not cfg.growing_windows():
      return windows
    grown = jnp.minimum(1.0, jnp.asarray(progress, jnp.float32) / cfg.window_warmup)
    for i, w in enumerate(cfg.layer_windows()):
      if w < cfg.seq_len:
        smallest = max(1, w // 8)
        windows[i] = jnp.floor(smallest + (w - smallest) * grown).astype(jnp.int32)
    return windows

  def _main_head(self):
    return self.embed[...].T if self.lm_head is None else self.lm_head[...]

  def _logits(self, x_BxTxD, head_DxV):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.compute_dtype)
    logits_BxTxV = jnp.dot(x_BxTxD.astype(dtype), head_DxV.astype(dtype),
                           preferred_element_type=jnp.float32)
    if cfg.logit_softcap > 0:
      logits_BxTxV = cfg.logit_softcap * jnp.tanh(logits_BxTxV / cfg.logit_softcap)
    return logits_BxTxV


def cross_entropy_nats(logits_BxTxV, targets_BxT):
  """Per-token cross-entropy in nats (float32): what training minimises and scoring sums."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV.astype(jnp.float32), targets_BxT.astype(jnp.int32))


def bigram_hash(tokens_BxT, buckets: int):
  """Row of the bigram embedding at each position: a hash of (previous, current) byte
  into buckets - 1 rows; the first position (no previous byte) takes the last row."""
  tokens = tokens_BxT.astype(jnp.int32)
  mixed = jnp.bitwise_xor(36313 * tokens[:, 1:], 27191 * tokens[:, :-1]) % (buckets - 1)
  first = jnp.full((tokens.shape[0], 1), buckets - 1, jnp.int32)
  return jnp.concatenate([first, mixed], axis=1)


def param_group(path: tuple) -> str:
  """Optimizer group of the parameter at `path` (keys from `nnx.State.flat_state()`):
  'embed' (token, position and value embeddings), 'head' (lm head), 'matrix' (hidden
  2-D weights, Muon's domain) or 'scalar' (norm scales, biases, gates' mixing scalars).
  The bigram table is an embedding; the multi-token head is a head."""
  names = [str(getattr(p, 'key', p)) for p in path]
  if names[0] in ('embed', 'pos_embed', 'value_embed', 'bigram'):
    return 'embed'
  if names[0] in ('lm_head', 'mtp_head'):
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
  n += len(cfg.skip_pairs()) + cfg.bigram_buckets * d
  n += d * v if cfg.mtp_weight > 0 else 0
  return n


def flops_per_token(cfg: GPTConfig) -> float:
  """Training FLOPs per token (forward + backward = 3x forward), matmuls only:
  6 x (matmul parameters) plus attention scores and values over the visible keys
  (each layer's mean window, causal halving included)."""
  d, e, h, k = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
  per_layer = d * h * e + 2 * d * k * e + h * e * d
  per_layer += (3 if cfg.activation == 'swiglu' else 2) * d * cfg.mlp_hidden
  matmul_params = cfg.n_layers * per_layer + d * cfg.vocab_size
  matmul_params += d * cfg.vocab_size if cfg.mtp_weight > 0 else 0   # the byte-after-next head
  attn = sum(2 * 2 * h * e * keys for keys in mean_visible_keys(cfg))  # QK^T and PV
  return 6.0 * matmul_params + 3.0 * attn


def mean_visible_keys(cfg: GPTConfig) -> list[float]:
  """Per layer, the mean number of keys a query sees under its causal window over
  seq_len positions."""
  t = cfg.seq_len
  return [sum(min(i + 1, w) for i in range(t)) / t for w in cfg.layer_windows()]

"""The PyTorch twin of the baseline's training step, for benchmarks/step_throughput.py.

The same model as `models.gpt.GPT` for the switches `torch_unsupported` allows (token
embedding, norms with optional scale and bias, causal attention with RoPE or learned
positions at the same head count and head dim through `F.scaled_dot_product_attention`,
the same MLP activations and ratio, tied or untied head, soft-cap) and the same AdamW
recipe (per-group learning rates, betas, eps and weight decay, global grad-norm clip,
the same LR schedule), run eagerly. PyTorch is not a dependency of the project: without
it `torch` is None here.
"""

from __future__ import annotations

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import TrialConfig
from models import gpt, optim


try:  # PyTorch is optional: only the comparison needs it.
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
  torch = None


def _lr_multiplier(progress: float, cfg: optim.OptimConfig) -> float:
  """`optim.lr_multiplier` in plain Python, so PyTorch's loop dispatches no JAX op."""
  p = min(max(progress, 0.0), 1.0)
  warm = min(1.0, p / cfg.warmup_frac) if cfg.warmup_frac > 0 else 1.0
  down = 1.0
  if cfg.warmdown_frac > 0:
    into = min(max((p - (1.0 - cfg.warmdown_frac)) / cfg.warmdown_frac, 0.0), 1.0)
    down = 1.0 - (1.0 - cfg.final_lr_frac) * into
  return warm * down


def torch_unsupported(genotype, trial_cfg: TrialConfig) -> str:
  """Why the PyTorch twin cannot mirror this genotype, or '' when it can."""
  cfg = genotype_lib.model_config(genotype, trial_cfg.compute_dtype)
  reasons = []
  if cfg.value_embeds:
    reasons.append('value_embeds')
  if cfg.residual_mix:
    reasons.append('residual_mix')
  if genotype['optimizer'] != 'adamw':
    reasons.append(f"optimizer={genotype['optimizer']}")
  if cfg.compute_dtype != 'float32':
    reasons.append(f'compute_dtype={cfg.compute_dtype}')
  if trial_cfg.micro_batch_size and trial_cfg.micro_batch_size != genotype['batch_size']:
    reasons.append('micro_batch_size')
  return ', '.join(reasons)


def _rms(x, weight=None):
  return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-6)


# The twin's modules subclass torch.nn.Module; without PyTorch they are never built.
_Module = torch.nn.Module if torch is not None else object


def _linear(fan_in, fan_out, std):
  """A bias-free linear layer, stored (fan_out, fan_in) as nn.Linear does, with the same
  init distribution as gpt.Linear (zeros for `std` 0)."""
  layer = torch.nn.Linear(fan_in, fan_out, bias=False)
  with torch.no_grad():
    layer.weight.normal_(0.0, std) if std > 0 else layer.weight.zero_()
  return layer


class _Norm(_Module):
  """`cfg.norm`: RMSNorm without scale ('rms'), with scale, or LayerNorm with bias."""

  def __init__(self, kind, dim):
    super().__init__()
    self.kind = kind
    self.scale = torch.nn.Parameter(torch.ones(dim)) if kind != 'rms' else None
    self.bias = torch.nn.Parameter(torch.zeros(dim)) if kind == 'layernorm' else None

  def forward(self, x):
    if self.kind == 'layernorm':
      return F.layer_norm(x, (x.shape[-1],), self.scale, self.bias, eps=1e-6)
    return _rms(x, self.scale)


class _Attention(_Module):
  """Causal self-attention (grouped kv heads, optional qk-norm and RoPE), over the whole
  sequence or a sliding `window`."""

  def __init__(self, cfg: gpt.GPTConfig, window):
    super().__init__()
    self.cfg = cfg
    d, e = cfg.d_model, cfg.head_dim
    self.window = window
    self.q = _linear(d, cfg.n_heads * e, d ** -0.5)
    self.k = _linear(d, cfg.n_kv_heads * e, d ** -0.5)
    self.v = _linear(d, cfg.n_kv_heads * e, d ** -0.5)
    self.o = _linear(cfg.n_heads * e, d,
                     0.0 if cfg.zero_init_proj else (cfg.n_heads * e) ** -0.5)
    t = cfg.seq_len
    if window < t:
      delta = torch.arange(t)[:, None] - torch.arange(t)[None, :]
      self.register_buffer('mask', (delta >= 0) & (delta < window), persistent=False)
    else:
      self.mask = None

  def forward(self, x, cos, sin):
    cfg = self.cfg
    b, t, _ = x.shape
    h, k, e = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = self.q(x).view(b, t, h, e).transpose(1, 2)
    kk = self.k(x).view(b, t, k, e).transpose(1, 2)
    v = self.v(x).view(b, t, k, e).transpose(1, 2)
    if cfg.qk_norm:
      q, kk = _rms(q), _rms(kk)
    if cos is not None:
      q, kk = _rope(q, cos, sin), _rope(kk, cos, sin)
    gqa = {'enable_gqa': True} if k != h else {}
    if self.mask is None:
      out = F.scaled_dot_product_attention(q, kk, v, is_causal=True, **gqa)
    else:
      out = F.scaled_dot_product_attention(q, kk, v, attn_mask=self.mask[:t, :t], **gqa)
    return self.o(out.transpose(1, 2).reshape(b, t, h * e))


class _MLP(_Module):
  """The MLP of `cfg.activation` (relu2, tanh-GELU or SwiGLU) and `cfg.mlp_hidden`."""

  def __init__(self, cfg: gpt.GPTConfig):
    super().__init__()
    self.activation = cfg.activation
    d, f = cfg.d_model, cfg.mlp_hidden
    self.up = _linear(d, f, d ** -0.5)
    self.gate = _linear(d, f, d ** -0.5) if cfg.activation == 'swiglu' else None
    self.down = _linear(f, d, 0.0 if cfg.zero_init_proj else f ** -0.5)

  def forward(self, x):
    hidden = self.up(x)
    if self.activation == 'relu2':
      hidden = torch.square(F.relu(hidden))
    elif self.activation == 'gelu':
      hidden = F.gelu(hidden, approximate='tanh')  # jax.nn.gelu's default
    else:
      hidden = F.silu(self.gate(x)) * hidden
    return self.down(hidden)


class _Block(_Module):
  """A pre-norm transformer block: attention, then the MLP, each added to the stream."""

  def __init__(self, cfg: gpt.GPTConfig, window):
    super().__init__()
    self.attn_norm = _Norm(cfg.norm, cfg.d_model)
    self.attn = _Attention(cfg, window)
    self.mlp_norm = _Norm(cfg.norm, cfg.d_model)
    self.mlp = _MLP(cfg)

  def forward(self, x, cos, sin):
    x = x + self.attn(self.attn_norm(x), cos, sin)
    return x + self.mlp(self.mlp_norm(x))


class _GPT(_Module):
  """The PyTorch twin of `models.gpt.GPT` for the switches `torch_unsupported` allows."""

  def __init__(self, cfg: gpt.GPTConfig):
    super().__init__()
    self.logit_softcap = cfg.logit_softcap
    d, v = cfg.d_model, cfg.vocab_size
    self.embed = torch.nn.Parameter(
        torch.randn(v, d) * (d ** -0.5 if cfg.tie_embeddings else 1.0))
    self.pos_embed = (torch.nn.Parameter(torch.randn(cfg.seq_len, d) * 0.02)
                      if cfg.position == 'learned' else None)
    self.blocks = torch.nn.ModuleList([_Block(cfg, w) for w in cfg.layer_windows()])
    self.final_norm = _Norm(cfg.norm, d)
    self.lm_head = (None if cfg.tie_embeddings
                    else torch.nn.Parameter(torch.randn(d, v) * d ** -0.5))
    if cfg.position == 'rope':
      self._register_rope(cfg)
    else:
      self.cos = self.sin = None

  def _register_rope(self, cfg: gpt.GPTConfig):
    """The RoPE angles' cos and sin, (seq_len, head_dim / 2), as non-persistent buffers."""
    e = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, e, 2, dtype=torch.float32) / e))
    angles = torch.arange(cfg.seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    self.register_buffer('cos', torch.cos(angles), persistent=False)
    self.register_buffer('sin', torch.sin(angles), persistent=False)

  def forward(self, tokens):
    t = tokens.shape[1]
    x = F.embedding(tokens, self.embed)
    if self.pos_embed is not None:
      x = x + self.pos_embed[:t]
    x = _rms(x)
    cos = None if self.cos is None else self.cos[:t]
    sin = None if self.sin is None else self.sin[:t]
    for block in self.blocks:
      x = block(x, cos, sin)
    x = self.final_norm(x)
    logits = x @ (self.embed.t() if self.lm_head is None else self.lm_head)
    if self.logit_softcap > 0:
      logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
    return logits


def _rope(x, cos, sin):
  """Rotating halves, as `models.gpt.rope`; x (B, N, T, E), cos/sin (T, E/2)."""
  x1, x2 = x.chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _torch_param_group(name: str) -> str:
  """`models.gpt.param_group` for the twin's parameter names."""
  if name in ('embed', 'pos_embed'):
    return 'embed'
  if name == 'lm_head':
    return 'head'
  if name.endswith('.weight') and ('.attn.' in name or '.mlp.' in name):
    return 'matrix'
  return 'scalar'


class TorchStep:
  """The PyTorch twin's training step (AdamW per parameter group, clip, schedule)."""

  def __init__(self, genotype, trial_cfg: TrialConfig):
    torch.manual_seed(trial_cfg.seed)
    self.cfg = genotype_lib.model_config(genotype, trial_cfg.compute_dtype)
    self.optim_cfg = o = genotype_lib.optim_config(genotype)
    self.model = _GPT(self.cfg)
    self.model.train()
    lrs = {'matrix': o.matrix_lr, 'embed': o.embed_lr, 'head': o.head_lr, 'scalar': o.scalar_lr}
    grouped = {g: [] for g in lrs}
    for name, param in self.model.named_parameters():
      grouped[_torch_param_group(name)].append(param)
    groups = [{'params': ps, 'lr': lrs[g], 'peak_lr': lrs[g],
               'weight_decay': o.weight_decay if g == 'matrix' else 0.0}
              for g, ps in grouped.items() if ps]
    # foreach=True: the multi-tensor AdamW, PyTorch's faster eager path on CPU.
    self.opt = torch.optim.AdamW(groups, betas=(o.beta1, o.beta2), eps=1e-8, foreach=True)
    self.params = [p for p in self.model.parameters()]
    self.num_params = sum(p.numel() for p in self.params)

  def step(self, batch, progress):
    tokens = torch.from_numpy(batch).long()
    logits = self.model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.optim_cfg.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.optim_cfg.grad_clip)
    multiplier = _lr_multiplier(progress, self.optim_cfg)
    for group in self.opt.param_groups:
      group['lr'] = group['peak_lr'] * multiplier
    self.opt.step()
    return loss.detach()

  @staticmethod
  def read_loss(loss) -> float:
    return float(loss.item())

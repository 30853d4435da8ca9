"""The actor-critic network of the PPO agent, in Flax NNX, and its masked distributions.

The agent proposes one edit per trial: a gene, then a value index into that gene's
value set. The network reads the current best genotype, the last H trials and a few
global counters, attends from the state over the trial history, and returns logits
for the gene, logits for the value of EVERY gene at once (each conditioned on its gene
through a learned gene embedding) and a scalar value estimate. Sampling, log
probabilities and the exact joint entropy of the masked two-step action are small
pure functions over those outputs, so the PPO update can use them inside `jax.jit`.

Shape suffixes: B batch, H history slots, D hidden width, N attention heads, E head
dim, G genes, V values per gene (padded to the largest value set), S genome features.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
from flax import nnx


# Logit of a masked choice: finite (so gradients and entropies stay NaN-free) and low
# enough that softmax gives it exactly zero probability in float32 and a Gumbel-max
# sample can never pick it.
MASKED_LOGIT = -1e9


class Observation(NamedTuple):
  """What the agent sees before proposing an edit (shapes unbatched; a batch adds a
  leading axis to every field)."""

  genome: jax.Array        # float32 (genome_dim,): encoding of the current best genotype
  history: jax.Array       # float32 (H, history_dim): last H trials, oldest first; zeros if absent
  history_mask: jax.Array  # bool (H,): True where a history row is a real trial
  globals: jax.Array       # float32 (globals_dim,): e.g. log1p(trials so far)
  edit_mask: jax.Array     # bool (n_genes, max_values): True where (gene, value) is a valid edit


class PolicyOutputs(NamedTuple):
  """Raw network outputs for a batch; masking happens in `masked_distributions`."""

  gene_logits: jax.Array   # float32 (B, G)
  value_logits: jax.Array  # float32 (B, G, V): value logits of every gene
  value: jax.Array         # float32 (B,): critic estimate


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Sizes of the actor-critic. Input sizes come from the observation encoder; the
  widths from `config.agent` (hidden, num_heads, history), whose defaults live in
  configs/default.py only."""

  genome_dim: int          # features encoding a genotype
  history_dim: int         # features per history row (one past trial)
  globals_dim: int         # global counters (e.g. log1p trials so far)
  n_genes: int             # G: genes the agent may edit
  max_values: int          # V: largest value set over the genes (others are padded, masked)
  history_len: int         # H: history slots attended over
  hidden: int              # D: width of every hidden layer
  num_heads: int           # attention heads over the history; must divide hidden


def _linear(fan_in: int, fan_out: int, rngs: nnx.Rngs, scale: float = 1.0,
            use_bias: bool = True) -> nnx.Linear:
  # Orthogonal init with an explicit gain, as is usual for PPO networks: a gain of 0.01
  # on the policy heads makes the initial policy near uniform over valid edits.
  return nnx.Linear(fan_in, fan_out, use_bias=use_bias,
                    kernel_init=nnx.initializers.orthogonal(scale),
                    bias_init=nnx.initializers.zeros, rngs=rngs)


class HistoryAttention(nnx.Module):
  """Multi-head attention from one query per example over the H history rows.

  Rows with a False mask get zero weight; when no row is valid (the first trial) the
  output is exactly zero rather than an average of padding (hence no biases).
  """

  def __init__(self, hidden: int, num_heads: int, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.q = _linear(hidden, hidden, rngs, use_bias=False)
    self.k = _linear(hidden, hidden, rngs, use_bias=False)
    self.v = _linear(hidden, hidden, rngs, use_bias=False)
    self.o = _linear(hidden, hidden, rngs, use_bias=False)

  def __call__(self, query_BxD, rows_BxHxD, mask_BxH):
    b, h, d = rows_BxHxD.shape
    n = self.num_heads
    e = d // n
    q_BxNxE = self.q(query_BxD).reshape(b, n, e)
    k_BxHxNxE = self.k(rows_BxHxD).reshape(b, h, n, e)
    v_BxHxNxE = self.v(rows_BxHxD).reshape(b, h, n, e)
    scores_BxNxH = jnp.einsum('bne,bhne->bnh', q_BxNxE, k_BxHxNxE) * (e ** -0.5)
    mask_Bx1xH = mask_BxH[:, None, :]
    scores_BxNxH = jnp.where(mask_Bx1xH, scores_BxNxH, MASKED_LOGIT)
    # With every row masked the softmax is uniform over padding; zeroing the masked
    # weights afterwards turns that case into an all-zero output (and is a no-op
    # otherwise, since masked weights are already exactly zero).
    probs_BxNxH = jnp.where(mask_Bx1xH, jax.nn.softmax(scores_BxNxH, axis=-1), 0.0)
    out_BxNxE = jnp.einsum('bnh,bhne->bne', probs_BxNxH, v_BxHxNxE)
    return self.o(out_BxNxE.reshape(b, d))


class ActorCritic(nnx.Module):
  """Observation batch -> `PolicyOutputs` (gene logits BxG, value logits BxGxV, value B)."""

  def __init__(self, cfg: PolicyConfig, rngs: nnx.Rngs):
    if cfg.hidden % cfg.num_heads:
      raise ValueError(f'num_heads={cfg.num_heads} must divide hidden={cfg.hidden}')
    self.cfg = cfg
    d = cfg.hidden
    self.history_embed = _linear(cfg.history_dim, d, rngs)
    self.position_embed = nnx.Param(
        nnx.initializers.normal(0.02)(rngs.params(), (cfg.history_len, d), jnp.float32))
    self.state_embed = _linear(cfg.genome_dim + cfg.globals_dim, d, rngs)
    self.attention = HistoryAttention(d, cfg.num_heads, rngs)
    self.trunk1 = _linear(2 * d, d, rngs)
    self.trunk2 = _linear(d, d, rngs)
    self.gene_head = _linear(d, cfg.n_genes, rngs, scale=0.01)
    # The value head sees trunk features plus the embedding of the gene being edited,
    # so every gene gets its own value distribution from one shared head.
    self.gene_embed = nnx.Param(
        nnx.initializers.normal(1.0)(rngs.params(), (cfg.n_genes, d), jnp.float32))
    self.value_context = _linear(d, d, rngs)
    self.value_head = _linear(d, cfg.max_values, rngs, scale=0.01)
    self.critic_head = _linear(d, 1, rngs)

  def __call__(self, obs: Observation) -> PolicyOutputs:
    rows_BxHxD = self.history_embed(obs.history) + self.position_embed[...][None]
    rows_BxHxD = jnp.tanh(rows_BxHxD)
    state_BxS = jnp.concatenate([obs.genome, obs.globals], axis=-1)
    state_BxD = jnp.tanh(self.state_embed(state_BxS))
    context_BxD = self.attention(state_BxD, rows_BxHxD, obs.history_mask)
    z_BxD = jnp.tanh(self.trunk1(jnp.concatenate([state_BxD, context_BxD], axis=-1)))
    z_BxD = jnp.tanh(self.trunk2(z_BxD))
    gene_logits_BxG = self.gene_head(z_BxD)
    per_gene_BxGxD = jnp.tanh(self.value_context(z_BxD)[:, None, :]
                              + self.gene_embed[...][None, :, :])
    value_logits_BxGxV = self.value_head(per_gene_BxGxD)
    value_B = self.critic_head(z_BxD)[:, 0]
    return PolicyOutputs(gene_logits_BxG, value_logits_BxGxV, value_B)


def masked_distributions(gene_logits_BxG, value_logits_BxGxV, edit_mask_BxGxV):
  """The masked two-step action distribution.

  Returns (gene Categorical with batch shape (B,), value Categorical with batch shape
  (B, G) over V): invalid values get `MASKED_LOGIT`, and so does a gene none of whose
  values is valid, so neither can be sampled. A gene's probability is proportional to
  exp(its logit) times its number of valid values.
  """
  # The gene's logit carries log(its number of valid values): with all logits equal,
  # as at initialisation, every valid edit is equally likely (the random-edit prior),
  # not every gene (which would favour binary genes' one edit).
  valid_values_BxG = jnp.sum(edit_mask_BxGxV, axis=-1)
  gene_dist = distrax.Categorical(logits=jnp.where(
      valid_values_BxG > 0, gene_logits_BxG + jnp.log(jnp.maximum(valid_values_BxG, 1)),
      MASKED_LOGIT))
  value_dist = distrax.Categorical(
      logits=jnp.where(edit_mask_BxGxV, value_logits_BxGxV, MASKED_LOGIT))
  return gene_dist, value_dist


def _value_at_gene(x_BxG, gene_B):
  return jnp.take_along_axis(x_BxG, gene_B[:, None], axis=1)[:, 0]


def log_prob(outputs: PolicyOutputs, edit_mask_BxGxV, gene_B, value_B):
  """log pi(gene, value) = log pi(gene) + log pi(value | gene), shape (B,)."""
  gene_dist, value_dist = masked_distributions(
      outputs.gene_logits, outputs.value_logits, edit_mask_BxGxV)
  n_genes = outputs.gene_logits.shape[1]
  value_BxG = jnp.broadcast_to(value_B[:, None], (value_B.shape[0], n_genes))
  return gene_dist.log_prob(gene_B) + _value_at_gene(value_dist.log_prob(value_BxG), gene_B)


def sample(key: jax.Array, outputs: PolicyOutputs, edit_mask_BxGxV):
  """Samples one edit per example: (gene int32 (B,), value int32 (B,), log_prob (B,))."""
  gene_dist, value_dist = masked_distributions(
      outputs.gene_logits, outputs.value_logits, edit_mask_BxGxV)
  gene_key, value_key = jax.random.split(key)
  gene_B = gene_dist.sample(seed=gene_key).astype(jnp.int32)
  # Drawing a value for every gene and keeping the chosen gene's is one vectorised
  # draw instead of a gather of logits per example; the extra draws are cheap.
  value_B = _value_at_gene(value_dist.sample(seed=value_key), gene_B).astype(jnp.int32)
  return gene_B, value_B, log_prob(outputs, edit_mask_BxGxV, gene_B, value_B)


def entropy(outputs: PolicyOutputs, edit_mask_BxGxV):
  """Exact joint entropy H(gene) + sum_g p(g) H(value | g), shape (B,)."""
  gene_dist, value_dist = masked_distributions(
      outputs.gene_logits, outputs.value_logits, edit_mask_BxGxV)
  # A gene with no valid value has p(g) == 0 exactly, so its (uniform over padding)
  # conditional entropy contributes nothing.
  return gene_dist.entropy() + jnp.sum(gene_dist.probs * value_dist.entropy(), axis=-1)

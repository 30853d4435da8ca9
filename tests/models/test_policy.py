"""The actor-critic: shapes, masked attention, masked sampling, log-probs and entropy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import policy


CFG = policy.PolicyConfig(genome_dim=7, history_dim=5, globals_dim=2, n_genes=6,
                          max_values=4, history_len=8, hidden=32, num_heads=4)


def random_observation(rng: np.random.Generator, cfg: policy.PolicyConfig, batch: int,
                       history_mask=None) -> policy.Observation:
  """A batch of random observations (numpy-made: no compile) with every edit valid."""
  if history_mask is None:
    history_mask = rng.random((batch, cfg.history_len)) < 0.5
  history = rng.standard_normal((batch, cfg.history_len, cfg.history_dim))
  return policy.Observation(
      genome=jnp.asarray(rng.standard_normal((batch, cfg.genome_dim)), jnp.float32),
      history=jnp.asarray(np.where(history_mask[..., None], history, 0.0), jnp.float32),
      history_mask=jnp.asarray(history_mask),
      globals=jnp.asarray(rng.standard_normal((batch, cfg.globals_dim)), jnp.float32),
      edit_mask=jnp.ones((batch, cfg.n_genes, cfg.max_values), bool))


def random_edit_mask(rng: np.random.Generator, n_genes: int, max_values: int,
                     dead_genes: int) -> np.ndarray:
  """A random valid-edit mask with `dead_genes` genes entirely invalid and at least one
  valid value for every other gene."""
  mask = rng.random((n_genes, max_values)) < 0.5
  mask[np.arange(n_genes), rng.integers(0, max_values, n_genes)] = True
  mask[rng.permutation(n_genes)[:dead_genes]] = False
  return mask


# One model and one jitted forward for the whole module: on a 2-core CPU, compiling
# is what costs, so every test uses the same batch size.
BATCH = 4
GRAPHDEF, PARAMS = nnx.split(policy.ActorCritic(CFG, nnx.Rngs(0)))
forward = jax.jit(lambda params, obs: nnx.merge(GRAPHDEF, params)(obs))


def test_output_shapes_and_near_uniform_initial_policy():
  obs = random_observation(np.random.default_rng(1), CFG, BATCH)
  gene_logits, value_logits, value = forward(PARAMS, obs)
  assert gene_logits.shape == (BATCH, CFG.n_genes)
  assert value_logits.shape == (BATCH, CFG.n_genes, CFG.max_values)
  assert value.shape == (BATCH,)
  # Small policy-head init: every logit near zero, so the policy is near uniform.
  assert np.max(np.abs(gene_logits)) < 0.1
  assert np.max(np.abs(value_logits)) < 0.1
  # The value head is conditioned on the gene.
  assert not np.allclose(value_logits[:, 0], value_logits[:, 1])


def test_the_initial_policy_is_near_uniform_over_valid_edits_not_over_genes():
  rng = np.random.default_rng(6)
  obs = random_observation(rng, CFG, BATCH)
  mask = np.stack([random_edit_mask(rng, CFG.n_genes, CFG.max_values, dead_genes=2)
                   for _ in range(BATCH)])
  mask[:, 0, :] = False
  mask[:, 0, 1] = True    # gene 0: one valid value (a binary gene), others several
  outputs = forward(PARAMS, obs._replace(edit_mask=jnp.asarray(mask)))
  genes = np.argwhere(mask)   # (example, gene, value) of every valid edit
  lps = log_prob(jax.tree_util.tree_map(lambda x: x[genes[:, 0]], outputs),
                 jnp.asarray(mask[genes[:, 0]]), jnp.asarray(genes[:, 1], jnp.int32),
                 jnp.asarray(genes[:, 2], jnp.int32))
  expected = -np.log(mask.sum(axis=(1, 2)))[genes[:, 0]]
  np.testing.assert_allclose(np.asarray(lps), expected, atol=0.05)


def test_attention_with_no_valid_history_is_finite_and_zero():
  no_history = np.zeros((BATCH, CFG.history_len), bool)
  obs = random_observation(np.random.default_rng(2), CFG, BATCH, history_mask=no_history)
  for x in forward(PARAMS, obs):
    assert np.all(np.isfinite(x))
  model = nnx.merge(GRAPHDEF, PARAMS)
  rng = np.random.default_rng(3)
  rows = jnp.asarray(rng.standard_normal((BATCH, CFG.history_len, CFG.hidden)), jnp.float32)
  query = jnp.asarray(rng.standard_normal((BATCH, CFG.hidden)), jnp.float32)
  context = jax.jit(model.attention)(query, rows, jnp.asarray(no_history))
  np.testing.assert_array_equal(np.asarray(context), 0.0)
  # Gradients through the all-masked case are finite too.
  grads = jax.jit(jax.grad(lambda p: forward(p, obs).value.sum()))(PARAMS)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(g))


def test_attention_ignores_masked_rows():
  obs = random_observation(np.random.default_rng(5), CFG, BATCH)
  noisy = obs._replace(history=jnp.where(obs.history_mask[..., None], obs.history, 7.0))
  for a, b in zip(forward(PARAMS, obs), forward(PARAMS, noisy)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


N_SAMPLES = 5000
sample = jax.jit(policy.sample)
log_prob = jax.jit(policy.log_prob)
entropy = jax.jit(policy.entropy)


def random_outputs_and_mask(seed: int, batch: int = N_SAMPLES, shared_mask: bool = False):
  """Random logits (scale 2, so far from uniform) and per-example random edit masks
  with two dead genes each; `shared_mask` repeats one (logits, mask) pair instead."""
  rng = np.random.default_rng(seed)
  g, v = CFG.n_genes, CFG.max_values
  n = 1 if shared_mask else batch
  masks = np.stack([random_edit_mask(rng, g, v, dead_genes=2) for _ in range(n)])
  gene_logits = 2.0 * rng.standard_normal((n, g))
  value_logits = 2.0 * rng.standard_normal((n, g, v))
  if shared_mask:
    masks, gene_logits, value_logits = (np.repeat(x, batch, axis=0)
                                        for x in (masks, gene_logits, value_logits))
  outputs = policy.PolicyOutputs(gene_logits=jnp.asarray(gene_logits, jnp.float32),
                                 value_logits=jnp.asarray(value_logits, jnp.float32),
                                 value=jnp.zeros((batch,)))
  return outputs, masks


def test_masked_sampling_never_yields_an_invalid_edit():
  outputs, mask = random_outputs_and_mask(0)
  gene, value, lp = sample(jax.random.key(0), outputs, jnp.asarray(mask))
  assert gene.dtype == jnp.int32 and value.dtype == jnp.int32
  valid = mask[np.arange(N_SAMPLES), np.asarray(gene), np.asarray(value)]
  assert valid.all(), f'{(~valid).sum()} invalid edits sampled'
  assert np.all(np.isfinite(lp))
  np.testing.assert_allclose(lp, log_prob(outputs, jnp.asarray(mask), gene, value), rtol=1e-6)


def test_sampling_frequencies_match_probabilities():
  outputs, mask = random_outputs_and_mask(1, shared_mask=True)
  gene, value, lp = sample(jax.random.key(1), outputs, jnp.asarray(mask))
  flat = np.asarray(gene) * CFG.max_values + np.asarray(value)
  freq = np.bincount(flat, minlength=CFG.n_genes * CFG.max_values) / N_SAMPLES
  expected = np.zeros_like(freq)
  expected[flat] = np.exp(np.asarray(lp))
  # A frequency's standard error is at most sqrt(0.25 / 5000) ~ 0.007; 0.03 is ~4 sigma.
  np.testing.assert_allclose(freq, expected, atol=0.03)
  assert np.all(freq[expected == 0.0] == 0.0)


def test_log_prob_of_a_masked_edit_is_very_negative():
  outputs, mask = random_outputs_and_mask(2)
  rows = np.arange(N_SAMPLES)
  dead_gene = np.argmin(mask.any(-1), axis=1)  # a gene with no valid value
  assert not mask.any(-1)[rows, dead_gene].any()
  lp_dead = log_prob(outputs, jnp.asarray(mask), jnp.asarray(dead_gene, jnp.int32),
                     jnp.zeros((N_SAMPLES,), jnp.int32))
  assert np.all(np.asarray(lp_dead) < -1e6)
  # An invalid value of a live gene.
  live_gene = np.argmax(mask.any(-1), axis=1)
  bad_value = np.argmin(mask[rows, live_gene], axis=1)
  has_invalid = ~mask[rows, live_gene, bad_value]
  assert has_invalid.sum() > N_SAMPLES // 2
  lp_bad = log_prob(outputs, jnp.asarray(mask), jnp.asarray(live_gene, jnp.int32),
                    jnp.asarray(bad_value, jnp.int32))
  assert np.all(np.asarray(lp_bad)[has_invalid] < -1e6)


def test_entropy_is_the_exact_joint_entropy():
  outputs, mask = random_outputs_and_mask(3)
  got = np.asarray(entropy(outputs, jnp.asarray(mask)))
  gene_logits = np.asarray(outputs.gene_logits, np.float64)
  value_logits = np.asarray(outputs.value_logits, np.float64)
  for b in range(20):
    # Brute force over every valid (gene, value): p(g, v) = p(g) p(v | g).
    live = mask[b].any(-1)
    p_gene = np.where(live, np.exp(gene_logits[b]) * mask[b].sum(-1), 0.0)
    p_gene /= p_gene.sum()
    joint = []
    for g, v in itertools.product(range(CFG.n_genes), range(CFG.max_values)):
      if mask[b, g, v]:
        p_value = np.where(mask[b, g], np.exp(value_logits[b, g]), 0.0)
        joint.append(p_gene[g] * p_value[v] / p_value.sum())
    joint = np.array(joint)
    np.testing.assert_allclose(joint.sum(), 1.0, rtol=1e-9)
    np.testing.assert_allclose(got[b], -np.sum(joint * np.log(joint)), rtol=1e-5)


def test_entropy_and_log_prob_gradients_are_finite_under_masks():
  outputs, mask = random_outputs_and_mask(4)
  mask = jnp.asarray(mask)
  gene, value, _ = sample(jax.random.key(4), outputs, mask)

  def objective(o):
    return jnp.sum(policy.entropy(o, mask)) + jnp.sum(policy.log_prob(o, mask, gene, value))

  grads = jax.jit(jax.grad(objective))(outputs)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(g))

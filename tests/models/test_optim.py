"""Optimizer groups and the time-based schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import gpt, optim


def test_schedule_warmup_constant_warmdown():
  cfg = optim.OptimConfig(warmup_frac=0.1, warmdown_frac=0.5, final_lr_frac=0.1)
  at = lambda p: float(optim.lr_multiplier(p, cfg))
  assert at(0.0) == 0.0 and at(0.05) == pytest.approx(0.5) and at(0.1) == pytest.approx(1.0)
  assert at(0.3) == 1.0 and at(0.5) == pytest.approx(1.0)
  assert at(0.75) == pytest.approx(0.55) and at(1.0) == pytest.approx(0.1)
  assert at(1.7) == pytest.approx(0.1) and at(-1.0) == 0.0  # progress is clipped


def test_schedule_without_warmup_or_warmdown_is_constant():
  cfg = optim.OptimConfig(warmup_frac=0.0, warmdown_frac=0.0)
  assert [float(optim.lr_multiplier(p, cfg)) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]


def test_labels_follow_param_groups():
  cfg = gpt.GPTConfig(seq_len=8, n_layers=1, d_model=16, n_heads=2, value_embeds=True)
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  labels = optim.param_labels(params)
  flat_labels = dict(nnx.to_flat_state(labels))
  for path, _ in nnx.to_flat_state(params):
    assert flat_labels[path].get_value() == gpt.param_group(path)


# Jordan's quintic Newton-Schulz (modded-nanogpt; optax.contrib.muon's default), run
# 5 times on G / ||G||_F. Each step maps X to a X + b (X X^T) X + c (X X^T)^2 X, so it
# keeps G's singular vectors and sends each singular value x to p(x) = a x + b x^3 + c x^5.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def _newton_schulz_spectrum(x):
  a, b, c = NS_COEFFS
  for _ in range(NS_STEPS):
    x = a * x + b * x ** 3 + c * x ** 5
  return x


def _ill_conditioned(rows: int, cols: int, condition: float):
  """(U, s, V) of a rows x cols matrix U diag(s) V^T, rows <= cols, with singular values
  spread geometrically from 1 down to 1 / condition."""
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(rows, rows)))
  v, _ = np.linalg.qr(rng.normal(size=(cols, rows)))
  return u, np.geomspace(1.0, 1.0 / condition, rows), v


def test_muon_orthogonalises_matrices_and_adamw_handles_the_rest():
  cfg = gpt.GPTConfig(seq_len=8, n_layers=1, d_model=16, n_heads=2)
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  path = ('blocks', 0, 'mlp', 'up', 'kernel')
  grads = dict(nnx.to_flat_state(jax.tree_util.tree_map(
      lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)))
  rows, cols = grads[path].get_value().shape  # (fan_in, fan_out) = (16, 64)
  u, s, v = _ill_conditioned(rows, cols, condition=100.0)
  gradient = (u * s) @ v.T
  grads[path] = grads[path].replace(jnp.asarray(gradient, jnp.float32))
  grads = nnx.from_flat_state(grads)

  def step(optimizer):
    optim_cfg = optim.OptimConfig(optimizer=optimizer, muon_lr=1.0, matrix_lr=1.0,
                                  embed_lr=1.0, grad_clip=0.0)
    tx = optim.build(optim_cfg, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return {k: np.asarray(x.get_value()) for k, x in nnx.to_flat_state(updates)}

  muon, adamw = step('muon'), step('adamw')
  # Muon's first step is -lr * sqrt(max(1, fan_out / fan_in)) * NS(G) (optax's width
  # scaling); Nesterov momentum only rescales G, which the Frobenius norm undoes.
  scale = np.sqrt(max(1.0, cols / rows))
  x = s / np.linalg.norm(s)
  expected = -scale * (u * _newton_schulz_spectrum(x)) @ v.T
  np.testing.assert_allclose(muon[path], expected, rtol=0, atol=1e-5)  # float32: ~2e-6
  # What that promises: p maps [p(u), u] = [0.682, 1.202] (u = argmax of p on [0, 1])
  # into itself and 5 steps carry every x >= 0.0015 into it; here (condition 100,
  # x_min = 0.0068) every singular value ends in p^5's image of [x_min, 1], [0.682, 1.134].
  image = _newton_schulz_spectrum(np.geomspace(x.min(), 1.0, 1_000_001))
  lo, hi = image.min(), image.max()
  assert 0.68 < lo and hi < 1.14, (lo, hi)
  singular = np.linalg.svd(muon[path] / scale, compute_uv=False)
  assert lo - 1e-5 <= singular.min() and singular.max() <= hi + 1e-5, singular
  # Without orthogonalisation no learning rate fits the step into [lo, hi]: SGD's step
  # -lr G keeps the spread of 100, and AdamW's first step, -lr sign(G), spreads ~5x.
  for name, update in [('sgd', -gradient), ('adamw', adamw[path])]:
    spread = np.linalg.svd(update, compute_uv=False)
    assert spread.min() / spread.max() < lo / hi, (name, spread)
  embed_grad = np.asarray(dict(nnx.to_flat_state(grads))[('embed',)].get_value())
  # Adam's first step is -lr * g / (|g| + eps): the sign of the gradient.
  np.testing.assert_allclose(muon[('embed',)], -np.sign(embed_grad), rtol=1e-4, atol=1e-4)


def test_unknown_optimizer():
  cfg = gpt.GPTConfig(seq_len=8, n_layers=1, d_model=16, n_heads=2)
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  with pytest.raises(ValueError, match='optimizer'):
    optim.build(optim.OptimConfig(optimizer='sgd'), params)

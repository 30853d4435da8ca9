"""Optimizer groups and the time-based schedule."""

import jax
import numpy as np
import pytest
from flax import nnx

from autoresearch import optim
from models import gpt


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


def test_muon_orthogonalises_matrices_and_adamw_handles_the_rest():
  cfg = gpt.GPTConfig(seq_len=8, n_layers=1, d_model=16, n_heads=2)
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  optim_cfg = optim.OptimConfig(optimizer='muon', muon_lr=1.0, embed_lr=1.0, grad_clip=0.0)
  tx = optim.build(optim_cfg, params)
  grads = jax.tree_util.tree_map(
      lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = dict(nnx.to_flat_state(updates))
  matrix = np.asarray(flat[('blocks', 0, 'mlp', 'up', 'kernel')].get_value())
  singular = np.linalg.svd(matrix, compute_uv=False)
  # Newton-Schulz leaves every singular value of the step near 1 (0.7..1.2 band), unlike
  # the raw Gaussian gradient whose spectrum spreads widely; Muon also rescales by
  # sqrt(max(1, rows/cols)) for non-square matrices.
  scaled = singular / singular.max()
  assert scaled.min() > 0.4, singular
  embed = np.asarray(flat[('embed',)].get_value())
  embed_grad = np.asarray(dict(nnx.to_flat_state(grads))[('embed',)].get_value())
  # Adam's first step is -lr * g / (|g| + eps): the sign of the gradient.
  np.testing.assert_allclose(embed, -np.sign(embed_grad), rtol=1e-4, atol=1e-4)


def test_unknown_optimizer():
  cfg = gpt.GPTConfig(seq_len=8, n_layers=1, d_model=16, n_heads=2)
  _, params = nnx.split(gpt.GPT(cfg, nnx.Rngs(0)))
  with pytest.raises(ValueError, match='optimizer'):
    optim.build(optim.OptimConfig(optimizer='sgd'), params)

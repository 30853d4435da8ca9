"""The recipe's numbers as inputs of the compiled step, and the cache of compiled programs
that lets the genotypes differing only in them share one compile."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import programs, runner, steps
from autoresearch.trial.config import TrialConfig
from configs import tiny
from models import gpt, optim


MODEL = gpt.GPTConfig(seq_len=32, d_model=32, n_heads=2, n_kv_heads=2, n_layers=2)
BATCH = np.random.default_rng(0).integers(0, 256, (4, 33), dtype=np.uint8)


def _steps_with_constants(graphdef, cfg, params, opt_state, progresses):
  """The step as it was compiled before the numbers became inputs: every number of the
  recipe a Python constant of the program."""
  tx = optim.build(cfg, params)

  @jax.jit
  def step(params, opt_state, progress):
    grads = jax.grad(lambda p: steps._loss_fn(graphdef, p, BATCH, progress)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = optim.scale_updates(updates, optim.lr_multiplier(progress, cfg))
    return optax.apply_updates(params, updates), opt_state
  for progress in progresses:
    params, opt_state = step(params, opt_state, jnp.float32(progress))
  return params


@pytest.mark.parametrize('changes', [
    {},
    dict(weight_decay=0.1, cautious_wd=True, warmup_frac=0.1, grad_clip=0.0),
    dict(optimizer='muon', weight_decay=0.05, warmdown_frac=0.0, muon_momentum=0.9),
    dict(optimizer='muon', normuon=True, weight_decay=0.1, cautious_wd=True, final_lr_frac=0.1),
])
def test_the_numbers_as_inputs_train_as_the_numbers_as_constants(changes):
  cfg = dataclasses.replace(optim.OptimConfig(matrix_lr=6e-3, embed_lr=2e-2, head_lr=1e-2,
                                              scalar_lr=1e-2, beta1=0.85, beta2=0.99), **changes)
  graphdef, params = nnx.split(gpt.GPT(MODEL, nnx.Rngs(0)), nnx.Param)
  opt_state = optim.build(cfg, params).init(params)
  progresses = (0.0, 0.05, 0.5, 0.8, 0.95)
  expected = _steps_with_constants(graphdef, cfg, jax.tree_util.tree_map(jnp.copy, params),
                                   jax.tree_util.tree_map(jnp.copy, opt_state), progresses)
  # Compiled for the stand-in config: a number read from it instead of `values` would
  # train with 1.0 in its place.
  step = steps.make_train_step(graphdef, optim.program_config(cfg), 1)
  values = optim.runtime_values(cfg)
  for progress in progresses:
    params, opt_state, _ = step(params, opt_state, BATCH, np.float32(progress), values)
  # Not bitwise: as a constant, 1 - beta is rounded to float32 once from a float64
  # difference; as an input it is computed in float32 from beta rounded first (a few
  # ulps apart), and XLA folds constants in its own order.
  for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)


def test_program_config_keeps_the_branches_and_hides_the_numbers():
  cfg = optim.OptimConfig(matrix_lr=6e-3, weight_decay=0.1, grad_clip=0.0, warmup_frac=0.05)
  program = optim.program_config(cfg)
  assert (program.matrix_lr, program.weight_decay, program.grad_clip, program.warmup_frac) == (
      1.0, 1.0, 0.0, 1.0)
  assert optim.program_config(dataclasses.replace(cfg, matrix_lr=1e-3, weight_decay=0.2)) == program
  assert optim.program_config(dataclasses.replace(cfg, weight_decay=0.0)) != program
  assert set(optim.runtime_values(cfg)) == set(optim.RUNTIME_FIELDS)


def _tiny_trial(**trial_changes):
  config = tiny.get_config()
  cfg = dataclasses.replace(TrialConfig.from_config(config), clock='flops', max_steps=6,
                            **trial_changes)
  return genotype_lib.from_config(config), cfg


def test_an_edit_of_a_number_reuses_the_compiled_programs(stdlib_corpus):
  genotype, cfg = _tiny_trial()
  first = runner.run(genotype, stdlib_corpus, cfg)
  edited = dict(genotype, matrix_lr=1e-3, beta2=0.99, warmdown_frac=0.5)
  hits = programs.CACHE.hits
  shared = runner.run(edited, stdlib_corpus, cfg)
  assert programs.CACHE.hits == hits + 1
  assert first.status == shared.status == 'ok'
  assert shared.val_bpb != first.val_bpb               # the edit's numbers were trained
  programs.CACHE.clear()
  fresh = runner.run(edited, stdlib_corpus, cfg)       # the same genotype compiled afresh
  assert fresh.val_bpb == shared.val_bpb and fresh.steps == shared.steps
  misses = programs.CACHE.misses
  runner.run(dict(genotype, weight_decay=0.1), stdlib_corpus, cfg)   # a new branch
  assert programs.CACHE.misses == misses + 1


def test_the_cache_keeps_the_most_recently_used_keys():
  cache, compiles = programs.ProgramCache(), []

  def compile_as(name):
    return lambda: compiles.append(name) or name
  for name in ('a', 'b', 'a', 'c', 'b'):
    cache.get(name, compile_as(name), capacity=2)
  # 'a' was used after 'b', so 'b' left when 'c' came; 'b' is compiled again.
  assert compiles == ['a', 'b', 'c', 'b'] and len(cache) == 2
  assert cache.get('x', compile_as('x'), capacity=0) == ('x', False) and len(cache) == 2

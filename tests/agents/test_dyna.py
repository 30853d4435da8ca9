"""The world model and imagined edits (Dyna): what it learns, what imagination adds, resume."""

import math

import jax
import numpy as np
import pytest

from autoresearch.agents.api import Outcome, SearchSpace, SearchView
from autoresearch.agents.ppo import agent as ppo_agent, dyna, world_model
from autoresearch.search import keep_rule
from autoresearch.space import genotype as genotype_lib
from autoresearch.synthetic import landscape
from autoresearch.workdir import checkpointing
from configs import default


MAX_PARAMS = 20_000_000


def _neighbours(base, n, rng):
  """n genotypes, each 1 to 4 random edits of `base` (each valid for `base` alone: the
  combination may not build, which the landscape's val_bpb does not mind)."""
  edits = np.argwhere(genotype_lib.edit_mask(base, MAX_PARAMS, 0.0))
  out = []
  for _ in range(n):
    g = dict(base)
    for gene, value in edits[rng.choice(len(edits), rng.integers(1, 5), replace=False)]:
      g = genotype_lib.apply_edit(g, int(gene), int(value))
    out.append(g)
  return out


def test_the_edit_tables_give_the_encoding_of_every_child():
  keep, put = genotype_lib.edit_encodings()
  rng = np.random.default_rng(0)
  for _ in range(30):   # any edit: the encoding does not ask whether the child builds
    g = genotype_lib.random_genotype(rng)
    gene = int(rng.integers(genotype_lib.N_GENES))
    value = int(rng.integers(len(genotype_lib.GENES[gene].values)))
    child = genotype_lib.apply_edit(g, gene, value)
    np.testing.assert_array_equal(genotype_lib.encode(g) * keep[gene] + put[gene, value],
                                  genotype_lib.encode(child))


@pytest.mark.slow
def test_the_world_model_learns_gains_and_crashes_and_disagrees_off_its_data():
  config = dyna.config_from(default.get_config().agent.dyna).model
  land = landscape.draw(jax.random.key(11))
  base = genotype_lib.from_config(default.get_config())
  genotypes = _neighbours(base, 300, np.random.default_rng(11))
  indices = jax.numpy.asarray(np.stack([landscape.indices_of(g) for g in genotypes]))
  bpb = np.asarray(jax.vmap(landscape.mean_bpb, in_axes=(None, 0))(land, indices))
  x = np.stack([genotype_lib.encode(g) for g in genotypes])
  # A made-up crash rule the model must find: any of the first four genes edited.
  crashed = np.array([any(g[k.name] != base[k.name] for k in genotype_lib.GENES[:4])
                      for g in genotypes])
  assert 0.1 < crashed.mean() < 0.9
  sigma = float(land.noise_sigma)
  baseline = float(landscape.mean_bpb(land, jax.numpy.asarray(landscape.indices_of(base))))
  memory, n = world_model.empty_memory(config.capacity, genotype_lib.GENOME_DIM), 0
  for i in range(200):
    n = world_model.remember(memory, n, x[i], None if crashed[i] else bpb[i], bool(crashed[i]))
  fns = world_model.compiled(config, genotype_lib.GENOME_DIM)
  fitted, _ = fns.fit(memory, baseline, sigma, jax.random.key(0))
  gain, crash_prob = (np.asarray(a) for a in fns.predict(fitted, x))
  held_out, ok = np.arange(200, 300), ~crashed
  rows = held_out[ok[held_out]]
  target = (baseline - bpb[rows]) / sigma
  rmse = math.sqrt(np.mean((gain.mean(0)[rows] - target) ** 2))
  assert rmse < 0.7 * target.std()   # predicting the mean would give 1.0
  p = crash_prob.mean(0)[held_out]
  assert np.mean((p > 0.5) == crashed[held_out]) >= 0.85   # all 'no crash': 0.72
  # The members agree where the trials are and disagree far from them.
  far = np.stack([genotype_lib.encode(genotype_lib.random_genotype(np.random.default_rng(i)))
                  for i in range(100)])
  far_disagreement = np.asarray(fns.predict(fitted, far)[0]).std(0).mean()
  assert far_disagreement > 1.5 * gain.std(0)[:200].mean()   # measured 1.9x


def _agent(imagined=4, **ppo):
  config = default.get_config()
  config.agent.dyna.imagined, config.agent.dyna.min_trials = imagined, 8
  for k, v in ppo.items():
    setattr(config.agent.ppo, k, v)
  return ppo_agent.PPOAgent(config.agent, 0)


def _drive(agent, n, land, start=0):
  """n proposals on a landscape against a fixed best; their edits and the metrics."""
  base = genotype_lib.from_config(default.get_config())
  space = SearchSpace(max_params=MAX_PARAMS, max_step_flops=0.0)
  mask = genotype_lib.edit_mask(base, MAX_PARAMS, 0.0)
  baseline = float(landscape.mean_bpb(land, jax.numpy.asarray(landscape.indices_of(base))))
  sigma = float(land.noise_sigma)
  edits, metrics = [], []
  for t in range(start, start + n):
    view = SearchView(base, baseline, sigma, t, t, (), mask, space, baseline)
    p = agent.propose(view)
    child = genotype_lib.apply_edit(base, p.gene, p.value)
    bpb, crashed = landscape.value(land, jax.numpy.asarray(landscape.indices_of(child)),
                                   jax.random.key(t))
    outcome = Outcome(child, 'crash' if crashed else 'discard',
                             None if crashed else float(bpb))
    metrics.append(agent.observe(view, p, 0.5, view, outcome))
    edits.append((p.gene, p.value))
  return edits, metrics


@pytest.mark.slow   # about 20 s
def test_imagination_adds_edits_from_the_real_states_scored_as_real_trials_are():
  land = landscape.draw(jax.random.key(5))
  agent = _agent(imagined=4)
  _, metrics = _drive(agent, 8, land)
  assert {'wm_loss', 'wm_disagreement_sigmas', 'imagined_reward', 'approx_kl'} <= set(metrics[-1])
  assert 'wm_rmse_sigmas' not in metrics[-1]   # no earlier fit to score yet
  _drive(agent, 7, land, start=8)
  rollout = agent.buffer
  _, metrics = _drive(agent, 1, land, start=15)
  assert math.isfinite(metrics[-1]['wm_rmse_sigmas'])
  # The imagined transitions themselves, from the last real rollout's states, each state
  # with its own best below the baseline (so that the best, not the baseline, must be
  # the reference). A quarter of the remembered trials are made crashes (single edits of
  # the baseline never crash on this landscape), so that the model imagines crashes too.
  base = genotype_lib.from_config(default.get_config())
  baseline = float(landscape.mean_bpb(land, jax.numpy.asarray(landscape.indices_of(base))))
  view_best = baseline - float(land.noise_sigma) * np.linspace(0.0, 1.0, 8)
  crashes = slice(1, agent.dyna.remembered, 4)   # not the baseline (row 0)
  agent.dyna.memory.crashed_C[crashes], agent.dyna.memory.bpb_C[crashes] = True, np.nan
  view = SearchView(base, baseline, float(land.noise_sigma), 16, 16, (),
                    genotype_lib.edit_mask(base, MAX_PARAMS, 0.0), None, baseline)
  imagination, _ = agent.dyna.imagine(agent.params, agent.fns.act, rollout, view_best, view,
                                      jax.random.key(1))
  imagined = imagination.rollout
  assert imagined.reward.shape == (32,)
  np.testing.assert_array_equal(imagined.obs.genome, np.repeat(rollout.obs.genome, 4, axis=0))
  mask = np.asarray(imagined.obs.edit_mask)
  assert mask[np.arange(32), imagined.gene, imagined.value_index].all()   # valid edits only
  # Each imagined edit earns what the search pays a real trial of the val_bpb the model
  # imagined for it (keep_rule.reward itself, on the float32 inputs the model used), plus
  # the bonus per σ of the members' disagreement. float32 arithmetic: a few ulps.
  sigma, clip = float(np.float32(land.noise_sigma)), agent.dyna.config.reward_clip
  bpb = np.asarray(imagination.bpb_N, np.float64)
  real = np.array([keep_rule.reward(float(b), None if np.isnan(x) else float(x), sigma, clip)
                   for b, x in zip(np.repeat(np.float32(view_best), 4), bpb)])
  bonus = agent.dyna.config.bonus * np.asarray(imagination.disagreement_N, np.float64)
  np.testing.assert_allclose(np.asarray(imagined.reward), real + bonus, rtol=1e-6, atol=1e-6)
  crashed = np.isnan(bpb)
  assert crashed.any() and (real[~crashed] == 0).any() and (real > 0).any()   # every case


@pytest.mark.slow   # about 20 s
def test_an_agent_that_imagines_resumes_exactly(tmp_path):
  land = landscape.draw(jax.random.key(6))
  agent = _agent(imagined=4)
  _drive(agent, 12, land)
  arrays, meta = agent.state_dict()
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ckpt'))
  ckpt.save(1, {'agent': arrays}, meta)
  ckpt.close()
  continued = _drive(agent, 12, land, start=12)
  restored = _agent(imagined=4)
  _, back, meta_back = checkpointing.Checkpointer(str(tmp_path / 'ckpt')).restore(
      {'agent': restored.state_dict()[0]})
  restored.load_state_dict(back['agent'], meta_back)
  again = _drive(restored, 12, land, start=12)
  assert again[0] == continued[0]
  assert [m for m in again[1] if m] == [m for m in continued[1] if m]


def test_imagination_needs_immediate_credit():
  with pytest.raises(ValueError, match='gamma = 0'):
    _agent(imagined=4, gamma=0.9)
  _agent(imagined=0, gamma=0.9)   # without imagination any discount works

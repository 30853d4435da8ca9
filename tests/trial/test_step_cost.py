"""The modelled clock's cost model: the step's counts, the fit, what each clock charges,
and the settings it refuses."""

import dataclasses

import numpy as np
import pytest

from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import step_cost
from autoresearch.trial.config import ConfigError, TrialConfig
from configs import default
from models import gpt

BASE = genotype_lib.from_config(default.get_config())


def test_a_half_batch_step_has_half_the_token_work_and_all_of_the_rest():
  full = step_cost.genotype_features(BASE)
  half = step_cost.genotype_features(BASE, rows=BASE['batch_size'] // 2)
  model_cfg = genotype_lib.model_config(BASE)
  assert full['flops'] == gpt.flops_per_token(model_cfg) * BASE['batch_size'] * BASE['seq_len']
  for name in ('flops', 'scores', 'residual', 'hidden', 'logits'):
    assert half[name] == pytest.approx(full[name] / 2), name
  for name in ('step', 'layer', 'param', 'table'):
    assert half[name] == full[name], name


def test_the_counts_follow_the_genes_that_add_work():
  base = step_cost.genotype_features(BASE)
  assert base['extra'] == base['softcap'] == base['cautious'] == base['muon'] == 0
  refined = step_cost.genotype_features(dict(BASE, qk_norm=True, residual_mix=True))
  assert refined['extra'] == 2 * base['residual']
  assert step_cost.genotype_features(dict(BASE, logit_softcap=15.0))['softcap'] == base['logits']
  assert step_cost.genotype_features(dict(BASE, cautious_wd=True))['cautious'] > 0
  muon = step_cost.genotype_features(dict(BASE, optimizer='muon'))
  # 5 iterations over 2 layers of 6 matrices; a 128 x 128 one costs 6 x 128^3 an iteration.
  assert muon['muon'] > 5 * 2 * 4 * 6 * 128 ** 3
  assert step_cost.genotype_features(dict(BASE, bigram_buckets=4096))['table'] == (
      base['table'] + 4096 * BASE['d_model'])


def test_the_fit_recovers_the_costs_that_made_the_times():
  rng = np.random.default_rng(0)
  genotypes = [genotype_lib.random_genotype(rng, 20_000_000, 5e10) for _ in range(30)]
  truth = {'step': 2e-3, 'flops': 1.5e-11, 'scores': 2e-8, 'cautious': 5e-8}
  counts = [step_cost.genotype_features(g) for g in genotypes]
  walls = [step_cost.seconds(truth, c) for c in counts]
  fitted = step_cost.fit(counts, walls, features=tuple(truth) + ('param',))
  for name, value in truth.items():
    assert fitted[name] == pytest.approx(value, rel=1e-6), name
  assert fitted['param'] == pytest.approx(0.0, abs=1e-15)


def test_each_clock_charges_a_step_its_own_seconds():
  config = default.get_config()
  model_cfg, optim_cfg = genotype_lib.model_config(BASE), genotype_lib.optim_config(BASE)
  counts = step_cost.features(model_cfg, 'adamw', 16)
  wall = TrialConfig.from_config(config)
  flops = dataclasses.replace(wall, clock='flops')
  modelled = dataclasses.replace(wall, clock='modelled')
  assert step_cost.clock_seconds(wall, model_cfg, optim_cfg, 16) == 0.0
  assert step_cost.clock_seconds(flops, model_cfg, optim_cfg, 16) == pytest.approx(
      counts['flops'] / wall.reference_flops_per_second)
  assert step_cost.clock_seconds(modelled, model_cfg, optim_cfg, 16) == pytest.approx(
      sum(c * counts[name] for name, c in config.trial.step_cost.items()))


@pytest.mark.parametrize('step_cost_setting', [
    {'sundials': 1e-9}, {'flops': -1e-11}, {'flops': float('nan')}, {'flops': 0.0}, {}])
def test_a_nonsense_step_cost_is_a_config_error_naming_the_field(step_cost_setting):
  config = default.get_config()
  config.trial.step_cost = step_cost_setting
  with pytest.raises(ConfigError, match='trial.step_cost='):
    TrialConfig.from_config(config)

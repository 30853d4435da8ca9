"""The agents behind the one interface: valid proposals, learning signal, state round trips."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from autoresearch.agents import factory
from autoresearch.agents.api import Outcome, SearchSpace, SearchView
from autoresearch.space import genotype as genotype_lib
from autoresearch.workdir import checkpointing
from configs import default, tiny
from tests.helpers import ROOT
from third_party import optuna_agents


SPACE = SearchSpace(max_params=2_000_000, max_step_flops=2e11)


def _make(kind, workdir, seed=0):
  config = default.get_config()
  config.agent.kind = kind
  return factory.make(config.agent, seed, str(workdir))


def _view(best, best_bpb=3.0):
  mask = genotype_lib.edit_mask(best, SPACE.max_params, SPACE.max_step_flops)
  return SearchView(best, best_bpb, 0.01, 3, 0, (), mask, SPACE)


def _score(genotype):
  """A stand-in val_bpb that prefers wider models and a middle learning rate."""
  return 3.0 - 0.1 * math.log2(genotype['d_model']) + 0.05 * abs(math.log10(genotype['matrix_lr'])
                                                                 + 2.5)


def _drive(agent, best, n):
  """n propose/observe rounds against a fixed best; the proposed genotypes."""
  proposed = []
  for _ in range(n):
    view = _view(best)
    proposal = agent.propose(view)
    if proposal.genotype is None:
      genotype = genotype_lib.apply_edit(best, proposal.gene, proposal.value)
    else:
      genotype = proposal.genotype
    valid = genotype_lib.is_valid(genotype, SPACE.max_params, SPACE.max_step_flops)[0]
    outcome = Outcome(genotype, 'discard' if valid else 'crash',
                      _score(genotype) if valid else None)
    agent.observe(view, proposal, 0.0, view, outcome)
    proposed.append(genotype)
  return proposed


def test_the_encoding_marks_each_gene_value_and_its_position():
  rng = np.random.default_rng(0)
  for _ in range(20):
    g = genotype_lib.random_genotype(rng)
    vector, offset = genotype_lib.encode(g), 0
    for gene in genotype_lib.GENES:
      n, j = len(gene.values), gene.values.index(g[gene.name])
      assert vector[offset:offset + n].tolist() == [float(i == j) for i in range(n)]
      assert vector[offset + n] == pytest.approx(j / max(1, n - 1))
      offset += n + 1
    assert offset == genotype_lib.GENOME_DIM


def test_optuna_starts_from_the_exact_best_of_the_view(tmp_path):
  # The view hands agents the best as the search holds it (no round trip through features).
  best = genotype_lib.from_config(tiny.get_config())
  agent = _make('tpe', tmp_path)
  agent.propose(_view(best, best_bpb=2.3456789012345))
  first = agent.study.get_trials()[0]
  assert first.value == 2.3456789012345 and first.params == optuna_agents.to_params(best)


@pytest.mark.parametrize('kind', ['random', 'random_global',
                                  pytest.param('evolution', marks=pytest.mark.slow)])  # 18 s
def test_drawing_agents_propose_only_valid_genotypes(tmp_path, kind):
  best = genotype_lib.from_config(default.get_config())
  proposed = _drive(_make(kind, tmp_path), best, 120)
  for g in proposed:
    ok, why = genotype_lib.is_valid(g, SPACE.max_params, SPACE.max_step_flops)
    assert ok, why
  assert len({genotype_lib.genotype_id(g) for g in proposed}) > 60
  if kind != 'random_global':  # one edit of a parent
    assert all(0 < sum(g[k] != best[k] for k in best) for g in proposed)


def test_evolution_mutates_the_tournament_winner_and_forgets_the_oldest(tmp_path):
  best = genotype_lib.from_config(default.get_config())
  agent = _make('evolution', tmp_path)
  proposed = _drive(agent, best, 12)  # filling: edits of the best
  assert all(sum(g[k] != best[k] for k in best) == 1 for g in proposed)
  assert [g for g, _ in agent.population] == [genotype_lib.make(g) for g in proposed]
  children = _drive(agent, best, 30)
  assert len(agent.population) == 12
  assert [g for g, _ in agent.population] == [genotype_lib.make(g) for g in children[-12:]]
  # Each child is one edit of a member of the population it was drawn from.
  population = [genotype_lib.make(g) for g in proposed]
  for child in children:
    assert any(sum(child[k] != p[k] for k in child) == 1 for p in population)
    population = (population + [genotype_lib.make(child)])[-12:]
  # Selection pressure: the children score better than the filling edits did.
  assert np.mean([_score(g) for g in children[-15:]]) < np.mean([_score(g) for g in proposed])


@pytest.mark.parametrize('kind', ['tpe', 'cmaes'])
def test_optuna_agents_take_a_large_search_seed_and_are_drawn_by_it(tmp_path, kind):
  # The sampler's seed is derived from the search seed, 6000 · 1,000,003 here, past the
  # 32 bits numpy accepts: cut to them, it still fixes what is drawn (the same seed in
  # another study: the same proposals) and a neighbouring seed draws others.
  best = genotype_lib.from_config(default.get_config())
  proposed = {(seed, run): _drive(_make(kind, tmp_path / f'{seed}_{run}', seed=seed), best, 3)
              for seed, run in ((6000, 0), (6000, 1), (6001, 0))}
  assert proposed[6000, 0] == proposed[6000, 1]
  assert proposed[6001, 0] != proposed[6000, 0]


@pytest.mark.parametrize('kind', ['tpe', pytest.param('cmaes', marks=pytest.mark.slow)])
def test_optuna_agents_stay_in_the_space_and_are_told_invalid_proposals_as_failed(tmp_path, kind):
  best = genotype_lib.from_config(default.get_config())
  agent = _make(kind, tmp_path)
  proposed = _drive(agent, best, 30)
  for g in proposed:
    genotype_lib.make(g)  # in the space (validity is the trial's to check)
  trials = agent.study.get_trials()
  assert len(trials) == 31 and trials[0].params == optuna_agents.to_params(best)
  invalid = [not genotype_lib.is_valid(g, SPACE.max_params, SPACE.max_step_flops)[0]
             for g in proposed]
  assert [t.state.name for t in trials[1:]] == ['FAIL' if bad else 'COMPLETE' for bad in invalid]
  complete = [t for t in trials[1:] if t.state.name == 'COMPLETE']
  assert complete and all(t.value == pytest.approx(_score(optuna_agents.from_params(t.params)))
                          for t in complete)


@pytest.mark.parametrize('kind', ['random', 'random_global', 'evolution',
                                  pytest.param('ppo', marks=pytest.mark.slow), 'tpe',
                                  pytest.param('cmaes', marks=pytest.mark.slow)])
def test_state_round_trips_through_the_checkpoint(tmp_path, kind):
  best = genotype_lib.from_config(default.get_config())
  agent = _make(kind, tmp_path / 'work')
  _drive(agent, best, 13)
  arrays, meta = agent.state_dict()
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ckpt'))
  ckpt.save(1, {'agent': arrays}, meta)
  ckpt.close()
  continued = _drive(agent, best, 6)
  # A fresh process: a new agent restored from the checkpoint (and, for Optuna, from the
  # journal, which now holds 6 trials more than the checkpoint knows of).
  restored = _make(kind, tmp_path / 'work')
  _, arrays_back, meta_back = checkpointing.Checkpointer(str(tmp_path / 'ckpt')).restore(
      {'agent': restored.state_dict()[0]})
  restored.load_state_dict(arrays_back['agent'], meta_back)
  assert _drive(restored, best, 6) == continued


@pytest.mark.slow
def test_tiny_benchmark_pairs_seeds_retrains_and_resumes(tmp_path):
  results = tmp_path / 'results'
  command = [sys.executable, 'benchmarks/search_quality.py', '--preset=tiny',
             '--arms=ppo,random', '--seeds=2', '--lanes=2', f'--results={results}']
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[-2] == 'seeds_per_agent: 2'
  assert lines[-1].startswith('ppo_vs_best_baseline_ci_low: ')
  float(lines[-1].split(': ')[1])
  runs = sorted((results / 'per_run').glob('*.json'))
  assert [p.name for p in runs] == ['ppo_seed0.json', 'ppo_seed1.json', 'random_seed0.json',
                                    'random_seed1.json']
  run = json.loads(runs[0].read_text())
  assert set(run['retrained']) == {'baseline', '0.0', '0.5', '1.0'}
  assert all(len(v) == 3 and v[0]['test_bpb'] > 0 for v in run['retrained'].values())
  assert run['retrained']['0.0'] == run['retrained']['baseline']   # at 0 the best is the baseline
  # Every arm of a seed shares the baseline's noise runs (the baseline cache).
  other = json.loads((results / 'per_run' / 'random_seed0.json').read_text())
  assert run['baseline_bpb'] == other['baseline_bpb']
  rows = (results / 'trajectories.tsv').read_text().splitlines()
  assert rows[0].split('\t')[:3] == ['arm', 'seed', 'trial']
  assert (results / 'search_quality.png').stat().st_size > 10_000
  table = (results / 'table.md').read_text()
  assert '| ppo | 2 |' in table and '| random | 2 |' in table and lines[-1] in table
  # A second invocation finds every run finished: it trains nothing and says the same.
  stamps = [p.stat().st_mtime_ns for p in runs]
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
  assert again.returncode == 0 and again.stdout.strip().splitlines()[-2:] == lines[-2:]
  assert [p.stat().st_mtime_ns for p in runs] == stamps and 'trial 1 |' not in again.stdout

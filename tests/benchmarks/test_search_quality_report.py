"""The search-quality statistics on hand-made runs: gains, pairing by seed, and the
other agent read at half its time."""

import pytest

from benchmarks import search_quality_report as report


def _trained(bpb: float) -> list[dict]:
  return [{'status': 'ok', 'val_bpb': bpb, 'test_bpb': bpb + 0.1}] * 3


def _run(arm: str, seed: int, half: float, full: float) -> dict:
  """A run whose re-trained best is `half` and `full` bpb below a 3.0 baseline."""
  return {'arm': arm, 'seed': seed, 'baseline_bpb': 3.0, 'search_best_bpb': 3.0 - full,
          'points': [{'proposer': 'ppo', 'status': 'keep'}],
          'retrained': {'baseline': _trained(3.0), '0.0': _trained(3.0),
                        '0.5': _trained(3.0 - half), '1.0': _trained(3.0 - full)}}


RUNS = [_run('ppo', 0, 0.05, 0.10), _run('ppo', 1, 0.10, 0.20),
        _run('cmaes', 0, 0.20, 0.40), _run('cmaes', 1, 0.05, 0.30),
        _run('cmaes', 2, 0.50, 0.50)]   # seed 2 has no PPO run: not paired


def test_run_gain_is_the_retrained_baseline_minus_the_retrained_best():
  assert report.run_gain(RUNS[2], '1.0', 'val_bpb') == pytest.approx(0.40)
  assert report.run_gain(RUNS[2], '0.5', 'test_bpb') == pytest.approx(0.20)


def test_pairs_by_seed_at_full_and_at_half_the_other_agents_time():
  full, _, n = report.paired(RUNS, 'ppo', 'cmaes')
  assert n == 2 and full.mean == pytest.approx(((0.10 - 0.40) + (0.20 - 0.30)) / 2)
  half, _, n = report.paired(RUNS, 'ppo', 'cmaes', other_fraction='0.5')
  assert n == 2 and half.mean == pytest.approx(((0.10 - 0.20) + (0.20 - 0.05)) / 2)


def test_the_table_gives_the_half_time_comparison_for_agents_only():
  runs = RUNS + [_run('ppo_frozen', 0, 0.0, 0.1)]
  lines = report.table_lines(runs, report.arm_table(runs, ['ppo', 'cmaes', 'ppo_frozen']))
  half = lines[lines.index('| ppo minus, the other at half its time | seeds | val (95% CI) '
                           '| p (sign flip) |'):]
  assert any(line.startswith('| cmaes | 2 | +0.0250 [') for line in half)
  assert not any(line.startswith('| ppo_frozen |') for line in half)


def _points(bpbs: list[float]) -> list[dict]:
  return [{'proposer': 'x', 'status': 'discard', 'val_bpb': b} for b in bpbs]


def test_arms_that_made_the_same_trials_on_every_seed_are_marked_as_one():
  runs = [dict(_run('cmaes', s, 0.1, 0.2), points=_points([2.0, 2.1 + s])) for s in (0, 1)]
  runs += [dict(_run('random', s, 0.1, 0.2), points=_points([2.0, 2.1 + s])) for s in (0, 1)]
  runs += [dict(_run('tpe', 0, 0.1, 0.2), points=_points([2.0, 2.1])),
           dict(_run('tpe', 1, 0.1, 0.2), points=_points([2.0, 2.3]))]   # differs on seed 1
  assert report.coincident(runs, 'cmaes', 'random')
  assert not report.coincident(runs, 'cmaes', 'tpe')
  assert report.identical_to(runs, 'random', ['cmaes', 'random', 'tpe']) == ['cmaes']
  lines = report.table_lines(runs, report.arm_table(runs, ['cmaes', 'random', 'tpe']))
  assert any(line.startswith('| cmaes |') and line.endswith('| random |') for line in lines)
  assert any(line.startswith('| tpe |') and line.endswith('| - |') for line in lines)


def test_at_few_seeds_the_table_gives_the_t_interval_and_the_exact_p():
  lines = report.table_lines(RUNS, report.arm_table(RUNS, ['ppo', 'cmaes']))
  row = next(line for line in lines if line.startswith('| cmaes | 2 |'))
  # ppo - cmaes on seeds 0 and 1: -0.30 and -0.10; exact p over 4 sign patterns = 2/4.
  assert '-0.2000 [' in row and 'p = 0.500' in row

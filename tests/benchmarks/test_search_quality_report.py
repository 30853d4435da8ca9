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

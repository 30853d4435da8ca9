"""The search-quality benchmark's charge: programs served by the run's recent trials
cost less, and a run's claims stop at its end."""

import types

import pytest

from autoresearch.space import genotype as genotype_lib
from benchmarks import search_quality
from configs import default

BASE = genotype_lib.from_config(default.get_config())
PRESET = search_quality.Preset(default, {}, run_seconds=30.0, seeds=1, setup_seconds=3.0,
                               eval_seconds=0.5, cached_setup_seconds=1.0)


def _row(trial, genotype, status='discard', baseline=False, bpb=2.0):
  return types.SimpleNamespace(trial=trial, genotype=genotype, status=status,
                               is_baseline=baseline, agent='baseline' if baseline else 'x',
                               train_seconds=8.0, steps=10, compile_seconds=1.0, scored=True,
                               val_bpb=bpb, best_bpb=bpb, total_seconds=99.0)


def test_a_trial_whose_programs_a_recent_trial_compiled_pays_the_cached_setup():
  lr_edit = dict(BASE, matrix_lr=1e-2)          # numbers only: the same programs
  wider = dict(BASE, d_model=256)               # new programs
  rows = [_row(1, BASE), _row(2, lr_edit), _row(3, wider), _row(4, BASE)]
  full, cached = 0.1 + 8.0 + 3.0 + 0.5, 0.1 + 8.0 + 1.0 + 0.5
  assert search_quality.charges(rows, PRESET) == pytest.approx([full, cached, full, cached])
  # With room for one program only, the baseline's were pushed out by the wider model's.
  assert search_quality.charges(rows, PRESET, cache_entries=1)[3] == pytest.approx(full)


def test_the_row_that_crosses_the_run_s_end_is_cut_with_its_keep():
  # Charges of 11.6 s (miss) then 9.6 s (hits): ends at 11.6, 21.2, 30.8 > 30.
  rows = [_row(0, BASE, 'keep', baseline=True, bpb=2.5), _row(1, BASE),
          _row(2, BASE), _row(3, dict(BASE, matrix_lr=1e-2), 'keep', bpb=2.0)]
  points = search_quality.trajectory(rows, PRESET)
  assert [p['trial'] for p in points] == [0, 1, 2]
  assert points[-1]['best_genotype'] == BASE and points[-1]['seconds'] == pytest.approx(21.2)
  assert search_quality.spent_seconds(rows, PRESET) == pytest.approx(30.8)

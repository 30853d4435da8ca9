"""The search-quality benchmark's charge (programs served by the run's recent trials cost
less, and a run's claims stop at its end) and its strong start."""

import dataclasses
import json
import types

import pytest

from autoresearch.space import genotype as genotype_lib
from benchmarks import search_quality, strong_start
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


def test_a_preset_with_a_start_begins_from_that_genotype(tmp_path):
  strong = dict(BASE, d_model=192, n_heads=3, n_kv_heads=3)
  (tmp_path / 'start.json').write_text(json.dumps(strong))
  preset = dataclasses.replace(PRESET, start=str(tmp_path / 'start.json'))
  config = search_quality.base_config(preset, str(tmp_path))
  assert genotype_lib.from_config(config) == genotype_lib.make(strong)
  assert genotype_lib.from_config(search_quality.base_config(PRESET, str(tmp_path))) == BASE


def test_the_strong_start_is_the_best_recorded_genotype_that_finished_every_seed():
  def row(gid, seed, bpb, status='ok', budget=16.0):
    return {'id': gid, 'budget_seconds': budget, 'seed': seed, 'status': status,
            'val_bpb': bpb, 'genotype': {'name': gid}}
  rows = [row('a', 1, 2.0), row('a', 2, 2.2), row('b', 1, 1.5), row('b', 2, None, 'crash'),
          row('c', 1, 2.05), row('c', 2, 2.05), row('d', 1, 1.0, budget=60.0)]
  assert strong_start.best_recorded(rows, 16.0) == ({'name': 'c'}, pytest.approx(2.05), 2)
  with pytest.raises(ValueError, match='no recorded genotype'):
    strong_start.best_recorded(rows, 4.0)

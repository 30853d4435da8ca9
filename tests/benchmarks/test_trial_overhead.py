"""The fixed-seconds benchmark's mixes and figures (its paired runs take minutes: not here)."""

import json

from autoresearch.space import genotype as genotype_lib
from benchmarks import trial_overhead
from configs import tiny


def test_gene_edits_are_the_baseline_and_every_valid_single_gene_edit_of_it():
  mix = trial_overhead.gene_edits_mix()
  base = genotype_lib.from_config(tiny.get_config())
  assert mix[0] == base
  changed = [[name for name in base if g[name] != base[name]] for g in mix[1:]]
  assert all(len(names) == 1 for names in changed)
  assert len({genotype_lib.genotype_id(g) for g in mix}) == len(mix)
  # Every gene with another valid value is edited: the tiny baseline can take them all.
  assert {names[0] for names in changed} == {g.name for g in genotype_lib.GENES}


def _row(mix, code, index, total, train, compile_seconds, bpb, status='ok'):
  return {'mix': mix, 'code': code, 'index': index, 'total_seconds': total,
          'wall_train_seconds': train, 'compile_seconds': compile_seconds, 'eval_seconds': 0.25,
          'val_bpb': bpb, 'status': status, 'reason': '', 'steps': 10}


def test_the_report_pairs_old_and_new_and_ends_with_the_trials_per_hour_ratio(tmp_path, capsys):
  rows = [_row('ppo', 'old', i, 1.0 + fixed, 1.0, 3.0, 2.5) for i, fixed in enumerate((6, 6, 8))]
  rows += [_row('ppo', 'new', i, 1.0 + fixed, 1.0, c, bpb)
           for i, (fixed, c, bpb) in enumerate(((4, 3.0, 2.5), (0.5, 0.0, 2.5001), (0.5, 0.0, 9)))]
  rows[-1]['status'] = 'crash'   # not paired for the val_bpb comparison
  (tmp_path / 'trials.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  trial_overhead.report(str(tmp_path), ['ppo'])
  lines = capsys.readouterr().out.splitlines()
  assert lines[1].startswith('ppo new: 3 trials, fixed seconds median 0.500, p90 4.000, '
                             'mean 1.667 (compile 1.000, scoring 0.250, the rest 0.417)')
  assert '0 refused at once, 2 of the rest compiled in < 0.05 s' in lines[1]
  assert lines[2].startswith('ppo: max |new - old| val_bpb 1.00e-04 over 2 trials both scored')
  assert lines[-3:] == ['fixed_seconds_median: 0.500', 'fixed_seconds_p90: 4.000',
                        f'trials_per_hour_ratio: {(4 + 20 / 3) / (4 + 5 / 3):.3f}']


def test_a_genotype_refused_at_once_is_not_counted_as_a_compile_hit():
  refused = dict(_row('cmaes', 'new', 0, 0.01, 0.0, 0.0, None, status='crash'),
                 reason='invalid genotype: n_kv_heads=2 must divide n_heads=1', steps=0)
  hit = _row('cmaes', 'new', 1, 2.0, 1.0, 0.0, 3.0)
  figures = trial_overhead.summary([refused, hit])
  assert (figures['refused'], figures['compiled_under_0.05s']) == (1, 1)

"""The progress plot, report.md and headline of a recorded workdir."""

import json
import math
import os

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.text import Annotation

from autoresearch.views import report, summary
from autoresearch.workdir import ledger as ledger_lib
from autoresearch.workdir.records import TrialRecord


BASELINE_GENOTYPE = {'n_layers': 2, 'd_model': 64, 'n_heads': 2, 'beta2': 0.95,
                     'matrix_lr': 0.001, 'qk_norm': False}
SIGMA = float(np.std([2.00, 2.02], ddof=1))

# (description, status, val_bpb, best_bpb after, edited genes, extra fields)
_TRIALS = [
    ('baseline (noise run 1/2)', 'keep', 2.00, 2.00, {}, {}),
    ('baseline (noise run 2/2)', 'keep', 2.02, 2.01, {}, {}),
    ('n_layers 2->3', 'discard', 2.05, 2.01, {'n_layers': 3}, {'reward': -2.8}),
    ('d_model 64->96', 'keep', 1.95, 1.95, {'d_model': 96}, {'reward': 4.2}),
    ('matrix_lr 0.001->0.1', 'crash', None, 1.95, {'matrix_lr': 0.1}, {'reward': -5.0}),
    ('n_layers 2->1', 'aborted', None, 1.95, {'n_layers': 1},
     {'reward': -5.0, 'predicted_bpb': 2.30}),
    ('qk_norm False->True', 'discard', 1.96, 1.95, {'qk_norm': True}, {'reward': -0.7}),
    # A re-run pair inside the noise band, kept on the mean 1.93 of its two runs.
    ('beta2 0.95->0.99', 'keep', 1.94, 1.93, {'beta2': 0.99}, {'reward': 1.4}),
    ('beta2 0.95->0.99 (re-run, mean 1.930000)', 'keep', 1.92, 1.93, {'beta2': 0.99},
     {'reward': 1.4, 'rerun_of': 8}),
    ('n_layers 2->4', 'discard', 1.97, 1.93, {'n_layers': 4}, {'reward': -2.8}),
    ('n_heads 2->4', 'keep', 1.90, 1.90, {'n_heads': 4}, {'reward': 2.1}),
    ('n_layers 2->6', 'discard', 5.00, 1.90, {'n_layers': 6}, {'reward': -5.0}),
]
ENTROPIES = {6: 3.1, 12: 2.7}   # trial -> policy entropy after a PPO update


def _write_workdir(workdir, entropy=True):
  ledger = ledger_lib.Ledger(str(workdir))
  kept = dict(BASELINE_GENOTYPE)
  for trial, (description, status, bpb, best, genes, extra) in enumerate(_TRIALS, start=1):
    genotype = dict(kept, **genes)
    agent = 'baseline' if description.startswith('baseline') else 'ppo'
    record = dict(genotype_id=f'g{trial}', genotype=genotype, reason='', val_bpb=bpb,
                  train_seconds=60.0, compile_seconds=20.0,
                  eval_seconds=10.0 if bpb is not None else 0.0, total_seconds=100.0,
                  steps=100, tokens=6400, params=1000, loss_curve=[[1.0, 1, 5.0]],
                  status=status, description=description, trial=trial, agent=agent,
                  best_bpb=best, sigma=SIGMA if trial > 1 else 0.002, budget_seconds=60.0)
    record.update(extra)
    if description.startswith('beta2'):
      record['mean_bpb'] = 1.93   # on both runs of the pair
    if agent != 'baseline':
      record.update(log_prob=-3.0, critic=0.1, edit=[0, 1])
    if entropy and trial in ENTROPIES:
      record['agent_metrics'] = {'entropy': ENTROPIES[trial], 'policy_loss': 0.1}
    ledger.append(TrialRecord(**record))
    if status == 'keep':
      kept = genotype
  return str(workdir)


@pytest.fixture
def workdir(tmp_path):
  return _write_workdir(tmp_path / 'run')


def test_headline_figures_are_right(workdir, capsys):
  figures = report.write_report(workdir)
  assert set(figures) == set(summary.HEADLINE_KEYS)
  assert figures['trials'] == 12
  assert figures['best_val_bpb'] == pytest.approx(1.90)
  assert figures['baseline_val_bpb'] == pytest.approx(2.01)
  assert figures['improvement_bpb'] == pytest.approx(0.11)
  assert figures['improvement_sigmas'] == pytest.approx(0.11 / SIGMA)
  assert figures['kept'] == 3   # d_model, the beta2 pair once, n_heads; not the baseline
  assert figures['aborted_percent'] == pytest.approx(100 / 12)
  assert figures['crashed_percent'] == pytest.approx(100 / 12)
  # wall = 12 trials x 100 s
  assert figures['trials_per_hour'] == pytest.approx(12 * 3600 / 1200)
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split(': ')[0] for line in lines] == list(summary.HEADLINE_KEYS)
  assert 'best_val_bpb: 1.900000' in lines and 'trials: 12' in lines


def test_outputs_are_a_png_and_markdown_and_nothing_else(workdir):
  before = set(os.listdir(workdir))
  report.write_report(workdir)
  assert set(os.listdir(workdir)) - before == {'progress.png', 'report.md'}
  with open(os.path.join(workdir, 'progress.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  report.write_report(workdir)   # rewriting replaces them, leaving no temp files behind
  assert set(os.listdir(workdir)) - before == {'progress.png', 'report.md'}


def test_figure_has_one_point_per_trial_and_the_best_line_ends_at_the_best(workdir):
  records = summary.load(workdir)
  ax = report.build_figure(records).axes[0]
  points = {c.get_label().split(' (')[0]: c.get_offsets() for c in ax.collections
            if isinstance(c, PathCollection)}
  xs = sorted(x for offsets in points.values() for x in np.asarray(offsets)[:, 0])
  assert xs == list(range(1, 13))
  assert sorted(np.asarray(points['keep'])[:, 0]) == [4, 8, 9, 11]
  assert sorted(np.asarray(points['baseline'])[:, 0]) == [1, 2]
  assert np.asarray(points['crash']).tolist() == [[5, 1.0]]   # on the top edge (axes y=1)
  assert np.asarray(points['aborted']).tolist() == [[6, 2.30]]   # at its predicted bpb
  (best_line,) = [line for line in ax.lines if line.get_label() == 'running best']
  assert best_line.get_ydata()[-1] == pytest.approx(1.90)
  # It starts at the last noise run (trial 2), not at the first run's value alone.
  assert np.isnan(best_line.get_ydata()[0]) and not np.isnan(best_line.get_ydata()[1])
  labels = {t.get_text() for t in ax.texts if isinstance(t, Annotation)}
  assert labels == {'d_model 64->96', 'beta2 0.95->0.99', 'n_heads 2->4'}
  assert '12 trials' in ax.get_title() and '1.900000' in ax.get_title()
  assert ax.get_ylim()[1] < 5.0   # the 5.0 outlier does not squash the plot


def test_report_md_names_the_best_and_every_kept_edit(workdir):
  report.write_report(workdir)
  with open(os.path.join(workdir, 'report.md')) as f:
    text = f.read()
  assert 'best_val_bpb: 1.900000' in text
  for description in ('d_model 64->96', 'beta2 0.95->0.99', 'n_heads 2->4'):
    assert description in text
  assert '| d_model | 64 | 96 |' in text and '| beta2 | 0.95 | 0.99 |' in text
  assert '| n_layers |' not in text.split('## Kept edits')[0]   # only genes that differ
  gain_sigmas = f'{0.02 / SIGMA:+.2f}'
  assert f'1.930000 (mean of 2 runs) | +0.020000 | {gain_sigmas} |' in text
  assert '| 12 | 2.7000 | - |' in text   # the policy's updates over time (no KL recorded)
  assert '| n_heads | 1 | +2.100 | 1 |' in text.split('## Genes whose edits gained most')[1]
  assert 'h of trial time' in text and 'trials per hour' in text


def test_the_figure_plots_the_policy_updates_below_the_trials(workdir):
  fig = report.build_figure(summary.load(workdir))
  below = fig.axes[1]
  lines = {line.get_label(): line for ax in fig.axes[1:] for line in ax.lines}
  assert sorted(lines['entropy (nats)'].get_xdata()) == sorted(ENTROPIES)
  assert list(lines['entropy (nats)'].get_ydata()) == [ENTROPIES[t] for t in sorted(ENTROPIES)]
  assert {'approx_kl', 'clip_fraction', 'explained_variance'} <= set(lines)
  assert below.get_xlabel() == 'trial'


def test_policy_updates_are_not_recorded_when_absent(tmp_path):
  workdir = _write_workdir(tmp_path / 'run', entropy=False)
  assert len(report.build_figure(summary.load(workdir)).axes) == 1   # no updates panel
  report.main(None, workdir)
  with open(os.path.join(workdir, 'report.md')) as f:
    assert f.read().split('## Policy updates')[1].split('##')[0].strip() == 'not recorded'


def test_missing_or_empty_ledger_is_a_clear_error(tmp_path):
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='nowhere'):
    report.write_report(missing)
  empty = tmp_path / 'empty'
  ledger_lib.Ledger(str(empty))   # results.tsv header only: no trials.jsonl yet
  with pytest.raises(FileNotFoundError, match='empty'):
    report.write_report(str(empty))
  (empty / 'trials.jsonl').write_text('{"status": "ke')   # only a torn line
  with pytest.raises(ValueError, match='empty'):
    report.write_report(str(empty))
  assert not (empty / 'progress.png').exists()


def test_a_torn_last_line_is_tolerated(workdir):
  with open(os.path.join(workdir, 'trials.jsonl'), 'a') as f:
    f.write(json.dumps({'status': 'keep', 'val_bpb': 1.0})[:15])   # a search mid-append
  figures = report.write_report(workdir)
  assert figures['trials'] == 12 and figures['best_val_bpb'] == pytest.approx(1.90)


def test_a_search_still_measuring_noise_reports_its_baseline(tmp_path):
  ledger = ledger_lib.Ledger(str(tmp_path))
  ledger.append(TrialRecord(genotype=BASELINE_GENOTYPE, status='keep', val_bpb=2.0,
                            best_bpb=2.0, description='baseline (noise run 1/3)', trial=1,
                            agent='baseline', genotype_id='g1', sigma=0.002,
                            budget_seconds=60.0))
  figures = report.write_report(str(tmp_path))
  assert figures['trials'] == 1 and figures['kept'] == 0
  assert figures['improvement_sigmas'] == 0.0 and math.isnan(figures['trials_per_hour'])
  with open(tmp_path / 'report.md') as f:
    assert 'The best genotype is the baseline.' in f.read()

"""What each recorded step leaves for a person: the lines, the new-best block, the report
refreshed after the trials, and no failure of a view stopping the search."""

import re

import pytest

from autoresearch.search import loop
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import ConfigError
from autoresearch.trial.results import LossReading, TrialResult
from autoresearch.views import outputs, progress
from autoresearch.workdir import ledger as ledger_lib
from configs import tiny


GAIN_PER_GENE = 0.03   # bits/byte: every gene changed from the baseline gains this much


def _gain_run(genotype, corpus, cfg, watch=None, **placement):
  """A stand-in for runner.run: the baseline scores 3.0, each changed gene gains 0.03."""
  del corpus, cfg, watch, placement
  baseline = genotype_lib.from_config(tiny.get_config())
  changed = sum(genotype[g.name] != baseline[g.name] for g in genotype_lib.GENES)
  return TrialResult(genotype_lib.genotype_id(genotype), dict(genotype), status='ok',
                     val_bpb=3.0 - GAIN_PER_GENE * changed, train_seconds=1.0,
                     total_seconds=1.0, steps=1)


def _config(max_trials):
  config = tiny.get_config()
  config.search.max_trials = max_trials
  config.search.noise_repeats = 2
  config.search.min_sigma = 0.004
  config.agent.kind = 'random'
  config.evaluator.enabled = False
  config.output.tensorboard = False
  return config


def test_each_trial_prints_its_line_and_each_new_best_a_block_with_its_sigmas(tmp_path, capsys):
  loop.Search.open(_config(max_trials=8), str(tmp_path), run_trial=_gain_run).run()
  out = capsys.readouterr().out
  rows = ledger_lib.read_records(str(tmp_path / 'trials.jsonl'))
  assert [int(t) for t in re.findall(r'^trial (\d+) \|', out, re.MULTILINE)] == list(range(1, 9))
  new_bests = [r for r in rows if r.status == 'keep' and not r.is_baseline and r.rerun_of is None]
  assert new_bests, 'the stand-in landscape gives clear gains'
  blocks = re.findall(r'^== new best at trial (\d+): (.*)$', out, re.MULTILINE)
  assert blocks == [(str(r.trial), r.description) for r in new_bests]
  baseline = genotype_lib.from_config(tiny.get_config())
  for r in new_bests:
    before = rows[r.trial - 2].best_bpb           # the best after the row before
    gain, total = before - r.outcome_bpb, 3.0 - r.outcome_bpb   # a re-run pair: its mean
    block = out[out.index(f'== new best at trial {r.trial}:'):].split('\n')[:3]
    assert f'{gain:+.6f} bpb = {gain / r.sigma:+.1f} σ against the best before' in block[1]
    assert f'{total:+.6f} bpb = {total / r.sigma:+.1f} σ below the baseline' in block[2]
    assert block[2].endswith(genotype_lib.describe_diff(r.genotype, baseline))
  # The report was refreshed with the last trial in it.
  assert 'trials: 8\n' in (tmp_path / 'report.md').read_text()
  assert (tmp_path / 'progress.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_quiet_outputs_print_the_lines_without_the_block(tmp_path, capsys):
  config = _config(max_trials=4)
  config.output.best_block = config.output.live_report = False
  loop.Search.open(config, str(tmp_path), run_trial=_gain_run).run()
  out = capsys.readouterr().out
  assert 'trial 4 |' in out and '== new best' not in out
  assert not (tmp_path / 'report.md').exists() and not (tmp_path / 'progress.png').exists()


class _FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _step_outputs(tmp_path, clock, overhead=0.05, writes_files=True):
  config = _config(max_trials=0)
  config.output.report_overhead = overhead
  return outputs.StepOutputs(config.output, str(tmp_path), writes_files, first_trial=1,
                             best_bpb=3.0, baseline_genotype={}, clock=clock)


def _rows(tmp_path):
  """Real rows, from a short search's ledger."""
  loop.Search.open(_config(max_trials=3), str(tmp_path / 'source'), run_trial=_gain_run).run()
  return ledger_lib.read_records(str(tmp_path / 'source' / 'trials.jsonl'))


def test_the_report_refresh_takes_at_most_its_share_of_the_time(tmp_path, monkeypatch):
  rows, clock, calls = _rows(tmp_path), _FakeClock(), []

  def write_report(workdir, quiet):   # a refresh that costs 1 s
    calls.append(clock.now)
    assert quiet
    clock.now += 1.0
  monkeypatch.setattr(outputs.report, 'write_report', write_report)
  views = _step_outputs(tmp_path, clock, overhead=0.05)
  views.after_step(rows[:1], 3.0)          # the first step: at once
  clock.now += 19.0                         # 19 s after a 1 s refresh: 1/20 = 5 % not yet
  views.after_step(rows[1:2], 3.0)
  clock.now += 1.0
  views.after_step(rows[2:3], 3.0)          # 20 s: refreshed
  assert calls == [100.0, 121.0]
  views.close()                             # nothing new since: no refresh
  assert len(calls) == 2
  views.after_step(rows[2:3], 3.0)          # too soon, then close draws it
  views.close()
  assert len(calls) == 3


def test_a_failing_view_warns_once_and_the_search_goes_on(tmp_path, monkeypatch, caplog):
  calls = []

  def broken(workdir, quiet):
    calls.append(workdir)
    raise OSError('disk quota exceeded')
  monkeypatch.setattr(outputs.report, 'write_report', broken)
  config = _config(max_trials=5)
  config.output.report_overhead = 1.0
  with caplog.at_level('WARNING'):
    state = loop.Search.open(config, str(tmp_path), run_trial=_gain_run).run()
  assert state.trials == 5 and len(calls) >= 2   # tried again, warned once
  warnings = [r.getMessage() for r in caplog.records if 'was not written' in r.getMessage()]
  assert warnings == ['the report was not written (the search goes on): '
                      'OSError: disk quota exceeded']


def test_an_in_memory_view_writes_no_files(tmp_path, monkeypatch):
  rows = _rows(tmp_path)
  monkeypatch.setattr(outputs.report, 'write_report',
                      lambda *a, **k: pytest.fail('an in-memory search drew a report'))
  views = _step_outputs(tmp_path / 'mem', _FakeClock(), writes_files=False)
  views.after_step(rows, 3.0)
  views.close()
  assert views.tensorboard is None and not (tmp_path / 'mem').exists()


def test_a_bad_report_overhead_is_refused_before_any_file(tmp_path):
  config = _config(max_trials=2)
  for bad in (0.0, -0.1, 1.5):
    config.output.report_overhead = bad
    with pytest.raises(ConfigError, match='output.report_overhead'):
      loop.Search.open(config, str(tmp_path / 'w'), run_trial=_gain_run)
  assert not (tmp_path / 'w').exists()


class _Terminal:
  """A stream that says it is a terminal and keeps what is written to it."""

  def __init__(self):
    self.text = ''

  def isatty(self):
    return True

  def write(self, text):
    self.text += text

  def flush(self):
    pass


def test_the_bar_says_compiling_until_the_first_reading_and_its_counter_agrees_with_it():
  terminal = _Terminal()
  bar = progress.ProgressLine(3.0, 64, 'trial 6', stream=terminal)
  assert 'trial 6' in terminal.text and 'compiling' in terminal.text
  bar.bar.mininterval = 0.0
  bar(LossReading(seconds=2.6, progress=2.6 / 3.0, step=100, loss=2.5, wall_seconds=2.6))
  last = terminal.text.split('\r')[-1]
  assert '2.6/3.0 s' in last and 'left=1s' in last and 'compiling' not in last
  bar.close()
  assert progress.seconds_left(3.0, 3.0) == '0s' and progress.seconds_left(60.0, 0.2) == '60s'
  assert '{n:.0f}/{total:.0f}' in progress.bar_format(60.0)

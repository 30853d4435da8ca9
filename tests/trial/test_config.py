"""Nonsense trial settings are a ConfigError naming the field, at start-up: before the
search, the trial or the report writes anything into the workdir."""

import dataclasses
import math
import subprocess
import sys

import pytest

from autoresearch.trial.config import ConfigError, TrialConfig
from configs import default, tiny
from tests.helpers import ROOT


NONSENSE = [
    ('budget_seconds', 0.0), ('budget_seconds', -5.0), ('budget_seconds', math.nan),
    ('budget_seconds', math.inf), ('val_bytes', 0), ('val_bytes', -1),
    ('eval_batch_tokens', 0), ('max_params', -1), ('max_step_fraction', -0.1),
    ('max_step_fraction', math.nan), ('max_steps', -3), ('micro_batch_size', -4),
    ('max_loss', 0.0), ('max_loss', -1.0), ('max_loss', math.nan),
    ('compute_dtype', 'float16'), ('clock', 'sundial'),
    ('reference_flops_per_second', 0.0), ('reference_flops_per_second', -1e9),
    ('reference_flops_per_second', math.inf), ('val_bytes', 'many'),
]


def test_the_shipped_configs_are_sound():
  for config in (default.get_config(), tiny.get_config()):
    cfg = TrialConfig.from_config(config)
    assert cfg.clock == 'wall' and cfg.reference_flops_per_second > 0


@pytest.mark.parametrize('field,value', NONSENSE)
def test_nonsense_setting_is_a_config_error_naming_the_field(field, value):
  config = tiny.get_config()
  with config.trial.ignore_type():  # e.g. a string for a number, as a hand-edited config may
    config.trial[field] = value
  with pytest.raises(ConfigError, match=f'trial.{field}='):
    TrialConfig.from_config(config)
  assert issubclass(ConfigError, ValueError)


def test_every_problem_is_named_at_once():
  config = tiny.get_config()
  config.trial.val_bytes, config.trial.clock = 0, 'sundial'
  with pytest.raises(ConfigError, match='val_bytes.*; trial.clock'):
    TrialConfig.from_config(config)


def test_a_budget_of_zero_is_refused_in_a_config_but_not_in_code():
  # In code, budget 0 trains no step and scores the initial parameters (the tests do).
  cfg = TrialConfig.from_config(tiny.get_config())
  assert dataclasses.replace(cfg, budget_seconds=0.0).budget_seconds == 0.0
  with pytest.raises(ConfigError, match='budget_seconds=-1'):
    dataclasses.replace(cfg, budget_seconds=-1.0)


def _main(workdir, *overrides, mode='search'):
  return subprocess.run(
      [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
       f'--mode={mode}', *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('override,field', [
    ('budget_seconds=0', 'budget_seconds'),
    pytest.param('budget_seconds=-5', 'budget_seconds', marks=pytest.mark.slow),
    pytest.param('budget_seconds=nan', 'budget_seconds', marks=pytest.mark.slow),
    ('val_bytes=0', 'val_bytes'),
    pytest.param('clock=sundial', 'clock', marks=pytest.mark.slow),
])
def test_main_refuses_nonsense_before_writing_anything(tmp_path, override, field):
  workdir = tmp_path / 'w'
  proc = _main(workdir, f'--config.trial.{override}')
  assert proc.returncode != 0
  assert f'autoresearch: trial.{field}=' in proc.stderr, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists() or not any(workdir.iterdir())


@pytest.mark.slow
def test_main_refuses_nonsense_in_every_mode(tmp_path):
  for mode in ('trial', 'train'):
    workdir = tmp_path / mode
    proc = _main(workdir, '--config.trial.max_loss=-1', mode=mode)
    assert proc.returncode != 0 and 'autoresearch: trial.max_loss=' in proc.stderr, proc.stderr
    assert not workdir.exists() or not any(workdir.iterdir())

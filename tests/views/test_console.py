"""A quiet terminal: Orbax's and JAX's INFO chatter off by default and our lines in a short
format, both back to absl's with -v."""

import logging as std_logging
import os
import re
import subprocess
import sys
import sysconfig
import time

import jax.numpy as jnp
import pytest
from absl import flags, logging

from autoresearch.views import console
from autoresearch.workdir import checkpointing
from tests.helpers import ROOT


ORBAX_DIRS = console._package_dirs(('orbax',))
# An absl-formatted line: 'I1203 18:37:25.104027 140115981282176 search.py:117] ...'
ABSL_LINE = re.compile(r'^[DIWEF]\d{4} [\d:.]+\s+\d+ (\S+?\.py):\d+\]', re.MULTILINE)
SHORT_LINE = re.compile(r'^\d\d:\d\d:\d\d ', re.MULTILINE)   # console.ShortFormatter


class _Collect(std_logging.Handler):
  def __init__(self):
    super().__init__(std_logging.DEBUG)
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.fixture
def logging_state():
  """The global logging state console.quiet_libraries changes, put back afterwards."""
  absl_logger = std_logging.getLogger('absl')
  filters = list(absl_logger.filters)
  levels = {name: std_logging.getLogger(name).level for name in console.QUIET_LOGGERS}
  verbosity, installed = logging.get_verbosity(), console._installed
  console._installed = None
  yield
  absl_logger.filters[:] = filters
  for name, level in levels.items():
    std_logging.getLogger(name).setLevel(level)
  logging.set_verbosity(verbosity)
  console._installed = installed


def _record(path, level):
  return std_logging.LogRecord('absl', level, path, 1, 'message', None, None)


def test_the_filter_drops_orbax_info_and_keeps_its_warnings_and_our_lines():
  assert ORBAX_DIRS, 'orbax is installed with the pinned requirements'
  quiet = console.LibraryFilter(ORBAX_DIRS)
  inside = os.path.join(ORBAX_DIRS[0], 'checkpoint', 'checkpoint_manager.py')
  assert not quiet.filter(_record(inside, std_logging.INFO))
  assert not quiet.filter(_record(inside, std_logging.DEBUG))
  assert quiet.filter(_record(inside, std_logging.WARNING))
  assert quiet.filter(_record(inside, std_logging.ERROR))
  assert quiet.filter(_record(os.path.join(ROOT, 'autoresearch', 'search.py'), std_logging.INFO))
  # A folder whose name only starts like the package's is not the package.
  lookalike = ORBAX_DIRS[0].rstrip(os.sep) + 'like' + os.sep + 'x.py'
  assert quiet.filter(_record(lookalike, std_logging.INFO))


def test_an_orbax_save_logs_info_unless_quiet_and_then_only_warnings(tmp_path, logging_state):
  logging.set_verbosity(logging.INFO)
  collect = _Collect()
  std_logging.getLogger().addHandler(collect)
  try:
    def orbax_records(folder):
      collect.records.clear()
      ckpt = checkpointing.Checkpointer(str(tmp_path / folder))
      ckpt.save(1, {'w': jnp.arange(4.0)}, {'step': 1})
      ckpt.close()
      return [r for r in collect.records
              if os.path.realpath(r.pathname).startswith(ORBAX_DIRS)
              or r.name.startswith('orbax')]
    loud = orbax_records('loud')
    assert any(r.levelno == std_logging.INFO for r in loud)   # the chatter is real
    console.quiet_libraries()
    console.quiet_libraries()   # idempotent: one filter
    assert std_logging.getLogger('absl').filters.count(console._installed) == 1
    assert [r.getMessage() for r in orbax_records('quiet') if r.levelno < std_logging.WARNING] == []
    logging.info('our own line')
    assert [r.getMessage() for r in collect.records] == ['our own line']
  finally:
    std_logging.getLogger().removeHandler(collect)


def test_verbosity_or_logger_levels_on_the_command_line_keep_the_libraries_loud(logging_state):
  def parsed(*argv):
    fv = flags.FlagValues()
    flags.DEFINE_integer('verbosity', -1, 'absl verbosity', short_name='v', flag_values=fv)
    flags.DEFINE_string('logger_levels', '', 'per-logger levels', flag_values=fv)
    fv(['prog', *argv])
    return fv
  assert not console.verbosity_requested(parsed())
  assert console.verbosity_requested(parsed('-v', '1'))
  assert console.verbosity_requested(parsed('--verbosity=0'))
  assert console.verbosity_requested(parsed('--logger_levels=orbax:INFO'))
  console.configure(parsed('-v', '0'))
  assert console._installed is None and std_logging.getLogger('orbax').level != std_logging.WARNING
  console.configure(parsed(), quiet=True)
  assert console._installed in std_logging.getLogger('absl').filters
  assert std_logging.getLogger('orbax').level == std_logging.WARNING
  assert logging.get_verbosity() == logging.WARNING   # --quiet: our INFO lines too


def _python_files(folder: str) -> set[str]:
  """Basenames of the .py files under `folder`, hidden folders (.venv, .git) skipped: a
  virtual environment inside the project holds Orbax itself."""
  names = set()
  for _, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    names |= {f for f in files if f.endswith('.py')}
  return names


def _orbax_file_names() -> set[str]:
  """Basenames of Orbax's modules that no module of this project shares."""
  names = set().union(*(_python_files(d) for d in ORBAX_DIRS))
  return names - _python_files(ROOT) - {os.path.basename(p) for p in sysconfig.get_paths().values()}


def test_the_short_format_is_a_stamp_and_a_sentence_and_names_warnings():
  def record(level, message, *args):
    r = std_logging.LogRecord('absl', level, 'x.py', 1, message, args, None)
    r.created = 0.0
    return r
  fmt = console.ShortFormatter()
  stamp = time.strftime('%H:%M:%S', time.localtime(0.0))
  assert (fmt.format(record(std_logging.INFO, 'resumed: %d trials', 12))
          == f'{stamp} resumed: 12 trials')
  assert fmt.format(record(std_logging.WARNING, 'disk slow')) == f'{stamp} warning: disk slow'
  assert fmt.format(record(std_logging.ERROR, 'failed')) == f'{stamp} error: failed'


def test_orbax_module_names_are_found_with_a_virtual_environment_inside_the_project(tmp_path):
  venv_copy = tmp_path / '.venv' / 'orbax'
  venv_copy.mkdir(parents=True)
  (venv_copy / 'checkpoint_manager.py').write_text('')
  assert 'checkpoint_manager.py' not in _python_files(str(tmp_path))
  assert 'checkpoint_manager.py' in _orbax_file_names()


def _search_output(workdir, *extra) -> str:
  proc = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
       '--config.search.max_trials=2', '--config.search.noise_repeats=2',
       '--config.trial.budget_seconds=1', *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_tiny_search_prints_no_orbax_line_unless_verbosity_is_asked_for(tmp_path):
  orbax_files = _orbax_file_names()
  quiet = _search_output(tmp_path / 'quiet')
  # The terminal gets sentences behind a short stamp; no absl prefix, no library line
  # (the filter itself: test_the_filter_drops_orbax_info_and_keeps_its_warnings_and_our_lines).
  assert ABSL_LINE.findall(quiet) == []
  assert 'Unable to initialize backend' not in quiet
  assert 'trial 1 | baseline' in quiet and 'trial 2 | baseline' in quiet
  assert re.search(r'^\d\d:\d\d:\d\d .*: a new search$', quiet, re.MULTILINE)
  assert re.search(r'^\d\d:\d\d:\d\d search stopped: 2 trials', quiet, re.MULTILINE)
  loud = _search_output(tmp_path / 'loud', '--verbosity=0')
  assert [f for f in ABSL_LINE.findall(loud) if f in orbax_files]   # -v brings them back
  assert 'loop.py' in ABSL_LINE.findall(loud)   # in absl's full format
  assert SHORT_LINE.findall(loud) == []

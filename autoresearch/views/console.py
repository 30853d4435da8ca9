"""What the terminal shows: the search's own lines, not its libraries' chatter.

    console.quiet_libraries()          # main.py, unless --verbosity/-v was given

By default a search prints its one summary line per trial, the live bar of the running
trial, a short block at each new best, its own log lines and every warning. Orbax logs
about 40 INFO lines per checkpoint and JAX one per backend it probes ("Unable to
initialize backend 'tpu'"); those are dropped below WARNING. Orbax logs through absl's
logger, so its records are told apart by the file they come from; JAX (and a few Orbax
modules) use their own stdlib loggers, which are set to WARNING. An explicit
`--verbosity` (`-v`) or `--logger_levels` brings everything back.

The search's own log lines on the terminal read as sentences behind a short time stamp
(`15:38:06 resumed: 12 trials, ...`; `15:38:06 warning: ...`), not behind absl's
`I1207 15:38:06.814349 139709080738688 loop.py:17]` prefix. A log file, and any run
with `--verbosity`, keep absl's full format.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import math
import os
import sys
import time
from typing import Optional

from absl import logging


# Libraries whose INFO lines a person running a search does not need.
QUIET_PACKAGES = ('orbax',)                   # log through absl's logger: filtered by file
QUIET_LOGGERS = ('orbax', 'jax', 'jaxlib')    # stdlib loggers: set to WARNING


def _package_dirs(packages: tuple[str, ...]) -> tuple[str, ...]:
  """The folders of `packages` (a namespace package may have several), each ending in a
  separator so that 'orbax' does not match 'orbaxlike'."""
  dirs = []
  for name in packages:
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
      dirs += [os.path.join(os.path.realpath(d), '') for d in spec.submodule_search_locations]
  return tuple(dirs)


class LibraryFilter(std_logging.Filter):
  """Drops records below WARNING logged from files inside `dirs` (absl's logger reports
  the caller's file as the record's pathname, so Orbax's absl calls are recognised)."""

  def __init__(self, dirs: tuple[str, ...]):
    super().__init__()
    self.dirs = dirs

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    path = os.path.realpath(record.pathname) if record.pathname else ''
    return not path.startswith(self.dirs)


_installed: Optional[LibraryFilter] = None


def quiet_libraries() -> None:
  """Orbax's and JAX's records below WARNING off (warnings and errors stay). Idempotent.
  A JAX_LOGGING_LEVEL in the environment is left to JAX."""
  global _installed
  if _installed is None:
    _installed = LibraryFilter(_package_dirs(QUIET_PACKAGES))
    std_logging.getLogger('absl').addFilter(_installed)
  for name in QUIET_LOGGERS:
    if name.startswith('jax') and os.environ.get('JAX_LOGGING_LEVEL'):
      continue
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def verbosity_requested(flag_values) -> bool:
  """Whether the command line set absl's `--verbosity`/`-v` or `--logger_levels`."""
  return any(name in flag_values and flag_values[name].present
             for name in ('verbosity', 'logger_levels'))


class ShortFormatter(std_logging.Formatter):
  """'HH:MM:SS message', with 'warning: ' (or 'error: ') before the message at WARNING
  and above, and a traceback after it where the record has one."""

  def format(self, record: std_logging.LogRecord) -> str:
    stamp = time.strftime('%H:%M:%S', time.localtime(record.created))
    level = f'{record.levelname.lower()}: ' if record.levelno >= std_logging.WARNING else ''
    line = f'{stamp} {level}{record.getMessage()}'
    if record.exc_info:
      line += '\n' + self.formatException(record.exc_info)
    return line


def short_format_on_terminal() -> None:
  """absl's lines in the short format, where they go to the terminal (stderr)."""
  handler = logging.get_absl_handler().python_handler
  if handler.stream is sys.stderr:
    handler.setFormatter(ShortFormatter())


def configure(flag_values, quiet: bool = False) -> None:
  """The logging of a command: quiet libraries and short lines on the terminal unless
  verbosity was asked for; `quiet` (--quiet) also drops this project's INFO lines."""
  if not verbosity_requested(flag_values):
    quiet_libraries()
    short_format_on_terminal()
  if quiet:
    logging.set_verbosity(logging.WARNING)


# --- The search's own lines ---------------------------------------------------------------


def summary_line(row) -> str:
  """A trial's one line (what --quiet keeps): number, agent, edit, val_bpb, decision, best."""
  bpb = f'{row.val_bpb:.6f}' if row.val_bpb is not None else '-'
  if row.status == 'aborted' and row.predicted_bpb is not None:
    bpb = f'~{row.predicted_bpb:.6f} (predicted)'
  return (f'trial {row.trial} | {row.agent} | {row.description} | val_bpb {bpb} | '
          f'{row.status} | best {row.best_bpb:.6f}')


def new_best_block(row, best_before: float, baseline_bpb: float,
                   from_baseline: str) -> str:
  """The lines printed when an agent's edit becomes the best: what changed, by how much
  in bits/byte and in σ (the σ the keep rule used), and where the best now stands
  against the baseline. `row` is the candidate's first ledger row; `from_baseline`
  names every gene in which the new best differs from the baseline."""
  bpb = row.mean_bpb if row.mean_bpb is not None else row.val_bpb
  runs = ' (mean of 2 runs)' if row.mean_bpb is not None else ''
  sigma = row.sigma if row.sigma > 0 else math.nan
  gain = best_before - bpb
  lines = [f'== new best at trial {row.trial}: {row.description}',
           f'   val_bpb {bpb:.6f}{runs}: {gain:+.6f} bpb = {gain / sigma:+.1f} σ '
           f'against the best before ({best_before:.6f}; σ {row.sigma:.6f})']
  if math.isfinite(baseline_bpb):
    total = baseline_bpb - bpb
    lines.append(f'   {total:+.6f} bpb = {total / sigma:+.1f} σ below the baseline '
                 f'({baseline_bpb:.6f}); from it: {from_baseline}')
  return '\n'.join(lines)

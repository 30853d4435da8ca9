"""What the timing benchmarks on a shared machine (benchmarks/clock_noise.py and
benchmarks/step_throughput.py) share: their `--config` flag, the host's cores, the load
other processes put on it meanwhile, and the `key: value` lines they print."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_config_flag() -> flags.FlagValues:
  """Defines `--config`, a config file, by default the repository's configs/default.py
  (its fields settable as `--config.trial.budget_seconds=...`); returns absl's FLAGS."""
  config_flags.DEFINE_config_file(
      'config', os.path.join(REPO_ROOT, 'configs', 'default.py'), 'Configuration file.')
  return flags.FLAGS


def print_figure(key: str, value) -> None:
  """Prints one `key: value` line, flushed at once."""
  print(f'{key}: {value}', flush=True)


def cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # pragma: no cover - not Linux
    return os.cpu_count() or 1


def _cpu_seconds():
  """(busy CPU seconds of the machine, of this process, wall time), or None off Linux."""
  try:
    hz = os.sysconf('SC_CLK_TCK')
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    with open('/proc/self/stat') as f:
      own = f.read().rsplit(')', 1)[1].split()
    return busy / hz, (int(own[11]) + int(own[12])) / hz, time.perf_counter()
  except (OSError, ValueError, IndexError, AttributeError):
    return None


class ForeignLoad:
  """CPU cores other processes kept busy from its creation to `cores()`, from /proc
  (Linux); None elsewhere. A large value means a measurement on a shared, busy machine."""

  def __init__(self):
    self._start = _cpu_seconds()

  def cores(self):
    """Cores other processes kept busy since the start, or None where unreadable."""
    end = _cpu_seconds()
    if self._start is None or end is None or end[2] <= self._start[2]:
      return None
    busy, own, wall = (b - a for a, b in zip(self._start, end))
    return max(0.0, (busy - own) / wall)


def spawn_lanes(script: str, lanes: int, extra: list[str]) -> None:
  """Runs `lanes` workers of `script` (`--lane=i --lanes=N` plus `extra`), worker i
  pinned to core i mod cores, and waits for them; exits naming the script when one
  fails (the benchmarks that use lanes continue from what they wrote)."""
  cores = sorted(os.sched_getaffinity(0))
  procs = [subprocess.Popen(
      [sys.executable, os.path.abspath(script), f'--lane={lane}', f'--lanes={lanes}'] + extra,
      preexec_fn=lambda core=cores[lane % len(cores)]: os.sched_setaffinity(0, {core}))
      for lane in range(lanes)]
  codes = [p.wait() for p in procs]
  if any(codes):
    sys.exit(f'{os.path.basename(script)}: a lane failed (exit codes {codes}); '
             'rerun to continue')

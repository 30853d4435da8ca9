"""main.py's search, with crash-test hooks: kill -9, or fill the disk, at a named point
of the search (tests/helpers/faults.py).

  python tests/helpers/search_script.py --config=configs/tiny.py --workdir=W [--config.x=...] \
      [--kill_at=POINT:N] [--disk_full_at=POINT:N]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

from tests.helpers import faults  # noqa: E402
import main as entry  # noqa: E402  (defines --config and --workdir)
from autoresearch.runtime import faults as fault_points  # noqa: E402

flags.DEFINE_string('kill_at', '', 'POINT:N: SIGKILL the N-th time the search reaches POINT.')
flags.DEFINE_string('disk_full_at', '', 'POINT:N: every write fails with ENOSPC from the N-th '
                    'time the search reaches POINT.')
FLAGS = flags.FLAGS


def run(argv):
  fault = faults.both(faults.kill_at(FLAGS.kill_at), faults.disk_full_at(FLAGS.disk_full_at))
  fault_points.point = fault   # every fault point of the search calls it
  entry.main(argv)   # main.py's own handling of errors


if __name__ == '__main__':
  app.run(run)

"""main.py's search, with a crash-test hook: kill -9 at a named point of the search.

  python tests/search_script.py --config=configs/tiny.py --workdir=W [--config.x=...] \
      --kill_at=POINT:N
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import faults  # noqa: E402
import main as entry  # noqa: E402,F401  (defines --config and --workdir)
from autoresearch import search  # noqa: E402

flags.DEFINE_string('kill_at', '', 'POINT:N: SIGKILL the N-th time the search reaches POINT.')
FLAGS = flags.FLAGS


def run(argv):
  del argv
  search.run(FLAGS.config, FLAGS.workdir, fault=faults.kill_at(FLAGS.kill_at))


if __name__ == '__main__':
  app.run(run)

"""autoresearch entry point.

  python main.py --config=configs/default.py [--workdir=runs/default] [--mode=trial]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from autoresearch import modes

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Configuration file.')
flags.DEFINE_string('workdir', 'runs/default', 'Folder for results, caches and checkpoints.')
flags.DEFINE_enum('mode', 'trial', list(modes.MODES), 'What to run.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  modes.log_devices()
  modes.MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)

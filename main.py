"""autoresearch entry point.

  python main.py --config=configs/default.py [--workdir=runs/default]
      [--mode=search|trial|report|train|pretrain]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from autoresearch import modes, pretrain
from autoresearch.agents.ppo import saved_policies
from autoresearch.data.errors import DataError
from autoresearch.runtime import distributed
from autoresearch.search import loop
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import ConfigError, TrialConfig
from autoresearch.views import console, report
from autoresearch.workdir import io as workdir_io


MODES = {'search': loop.run, 'trial': modes.run_trial, 'report': report.main,
         'train': modes.run_train, 'pretrain': pretrain.pretrain}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Configuration file.')
flags.DEFINE_string('workdir', 'runs/default', 'Folder for results, caches and checkpoints.')
flags.DEFINE_enum('mode', 'search', list(MODES), 'What to run.')
flags.DEFINE_bool('quiet', False, 'Only the one-line summary of each trial (and warnings).')
flags.DEFINE_string('genotype', '', 'JSON genotype to train (--mode=train); same as '
                    '--config.genotype_json.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.genotype:
    FLAGS.config.genotype_json = FLAGS.genotype
  console.configure(FLAGS, quiet=FLAGS.quiet)  # library chatter off unless -v/--verbosity
  if FLAGS.quiet:
    FLAGS.config.output.progress_bar = FLAGS.config.output.best_block = False
  distributed.initialize(FLAGS.config)  # several hosts: config.distributed or the environment
  modes.log_devices()
  try:
    TrialConfig.from_config(FLAGS.config)  # nonsense settings: before any file
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)
  except (DataError, genotype_lib.InvalidGenotype, workdir_io.WorkdirError,
          ConfigError, saved_policies.PolicyError) as e:
    logging.debug('the error in full (shown at --verbosity=1):', exc_info=True)
    sys.exit(f'autoresearch: {e}')


if __name__ == '__main__':
  app.run(main)

"""Example search states for the benchmarks that time the agent and the checkpoint, and
the real trial they compare against."""

import numpy as np

from autoresearch.agents.api import HistoryEntry, SearchSpace, SearchView
from autoresearch.data import corpora
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import runner
from autoresearch.trial.config import TrialConfig


def example_history(rng: np.random.Generator, n: int) -> list[HistoryEntry]:
  """`n` past edits with random genes and outcomes, as a search 40 trials in has."""
  return [HistoryEntry(int(rng.integers(genotype_lib.N_GENES)), 0, 1, 'discard',
                       2.4 + 0.004 * float(rng.normal()), 2.4, 0.004, 1.0, False)
          for _ in range(n)]


def example_view(config, history: list) -> SearchView:
  """The default search's view with `history`, the edit mask built as the search does."""
  best = genotype_lib.from_config(config)
  space = SearchSpace(config.trial.max_params, 0.0)
  mask = genotype_lib.edit_mask(best, space.max_params, space.max_step_flops)
  return SearchView(best, 2.4, 0.004, 40, 3, tuple(history), mask, space, 2.5)


def trial_wall_seconds(config, given_seconds: float) -> float:
  """`given_seconds` when positive, else the wall seconds of one real baseline trial of
  `config` (compile + train + eval), in this process; prints that trial's val_bpb."""
  if given_seconds > 0:
    return given_seconds
  result = runner.run(genotype_lib.from_config(config), corpora.corpus_from_config(config),
                      TrialConfig.from_config(config))
  print(f'trial_val_bpb: {result.val_bpb:.4f}')
  return result.total_seconds


def print_trial_fraction(config, given_seconds: float, key: str, seconds: float,
                         digits: int) -> None:
  """Prints `trial_wall_seconds` (see `trial_wall_seconds`), then the headline
  `key: seconds / trial wall seconds` to `digits` decimals, as the last line."""
  trial_wall = trial_wall_seconds(config, given_seconds)
  print(f'trial_wall_seconds: {trial_wall:.1f}')
  print(f'{key}: {seconds / trial_wall:.{digits}f}')

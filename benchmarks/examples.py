"""Example search states for the benchmarks that time the agent and the checkpoint."""

import numpy as np

from autoresearch import agents, data, genotype as genotype_lib, trial


def example_history(rng: np.random.Generator, n: int) -> list[agents.HistoryEntry]:
  """`n` past edits with random genes and outcomes, as a search 40 trials in has."""
  return [agents.HistoryEntry(int(rng.integers(genotype_lib.N_GENES)), 0, 1, 'discard',
                              2.4 + 0.004 * float(rng.normal()), 2.4, 0.004, 1.0, False)
          for _ in range(n)]


def example_view(config, history: list) -> agents.SearchView:
  """The default search's view with `history`, the edit mask built as the search does."""
  best = genotype_lib.from_config(config)
  space = agents.SearchSpace(config.trial.max_params, 0.0)
  mask = genotype_lib.edit_mask(best, space.max_params, space.max_step_flops)
  return agents.SearchView(best, 2.4, 0.004, 40, 3, tuple(history), mask, space, 2.5)


def trial_wall_seconds(config, given_seconds: float) -> float:
  """`given_seconds` when positive, else the wall seconds of one real baseline trial of
  `config` (compile + train + eval), in this process; prints that trial's val_bpb."""
  if given_seconds > 0:
    return given_seconds
  result = trial.run(genotype_lib.from_config(config), data.corpus_from_config(config),
                     trial.TrialConfig.from_config(config))
  print(f'trial_val_bpb: {result.val_bpb:.4f}')
  return result.total_seconds

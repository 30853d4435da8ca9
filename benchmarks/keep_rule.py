"""How often the search's keep rule keeps, against a fake trial of known noise.

    python benchmarks/keep_rule.py [--samples=20000]

The fake trial scores val_bpb = true value + σ·ε with ε a fresh standard normal per
run (independent runs: no seed shares noise with another, the worst case for false
keeps). Each sample replays what the search does with one candidate, through
`keep_rule` itself: the baseline's `search.noise_repeats` runs give the best (their
mean) and the pooled σ̂; the candidate's first run goes to `keep_rule.first_run`, a
run inside the band is re-run and `keep_rule.decide` judges the two-run mean. A
neutral edit (true gain 0) measures the false-keep rate (goal ≤ `search.keep_alpha`),
a true gain of 3σ the power (goal ≥ 0.8). Rows also show the rule later in a search:
σ pooled with 10 re-run pairs more, and a best that is one run. Prints
`false_keep_rate:` and, last, `power_3sigma:` for the default config's rule at the
start of a search.
"""

import argparse
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from autoresearch.search import keep_rule  # noqa: E402
from configs import default  # noqa: E402


def keep_rate(gain_sigmas: float, samples: int, seed: int, noise_repeats: int, alpha: float,
              extra_pairs: int = 0, best_runs: Optional[int] = None) -> float:
  """The fraction of `samples` candidates of true gain `gain_sigmas`·σ that are kept
  (σ = 1; `best_runs`: the best is a mean of that many runs, else of the baseline's)."""
  rng = np.random.default_rng(seed)
  kept = 0
  for _ in range(samples):
    baseline = rng.normal(0.0, 1.0, noise_repeats)
    groups = [baseline] + [rng.normal(0.0, 1.0, 2) for _ in range(extra_pairs)]
    noise = keep_rule.pooled(groups, 0.0)
    runs = best_runs or noise_repeats
    best = float(baseline[:runs].mean())
    first = float(rng.normal(-gain_sigmas, 1.0))
    stage = keep_rule.first_run(best - first, noise, runs, alpha)
    second = float(rng.normal(-gain_sigmas, 1.0)) if stage == 'rerun' else None
    status, _ = keep_rule.decide(best, runs, first, second, stage == 'rerun', noise, alpha)
    kept += status == 'keep'
  return kept / samples


def main(argv=None) -> list[str]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--samples', type=int, default=20_000)
  args = parser.parse_args(argv)
  search = default.get_config().search
  repeats, alpha, n = search.noise_repeats, search.keep_alpha, args.samples
  lines = [f'rule: one-sided t test at alpha {alpha:g} ({keep_rule.FIRST_RUN_SHARE:g} of it '
           f'after one run), baseline of {repeats} runs; {n} samples a row, '
           f'standard error <= {0.5 / np.sqrt(n):.4f}']
  for label, extra, runs in (('start of a search', 0, None),
                             ('after 10 re-run pairs', 10, None),
                             ('best of one run', 0, 1)):
    fk = keep_rate(0.0, n, 1, repeats, alpha, extra, runs)
    power = keep_rate(3.0, n, 2, repeats, alpha, extra, runs)
    lines.append(f'{label}: false_keep {fk:.4f}, power_3sigma {power:.4f}')
  lines.append(f'false_keep_rate: {keep_rate(0.0, n, 3, repeats, alpha):.4f}')
  lines.append(f'power_3sigma: {keep_rate(3.0, n, 4, repeats, alpha):.4f}')
  for line in lines:
    print(line)
  return lines


if __name__ == '__main__':
  main()

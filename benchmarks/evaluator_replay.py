"""Replays the self-evaluator on recorded trials, as if online, against Optuna's pruners.

    python benchmarks/evaluator_replay.py PATH/trials.jsonl [MORE.jsonl ...]
        [--budget_seconds=S] [--margin_sigmas=M] [--no-optuna] [--no-sweep]

Each file is one search (a ledger recorded with the evaluator off), replayed trial by
trial in its order. Several files are separate searches, replayed one after the other:
each starts with its own best, sigma and an empty calibration, as a new search would
(the calibration is part of a search's state); the metrics are pooled over all files.

The replayed search, per file:
* **Baseline.** The rows with agent 'baseline' (the noise runs) are never watched. The
  best starts as the mean of their val_bpb, sigma is their std (ddof 1, at least
  `min_sigma`: `keep_rule.pooled`); as in search.py they are the first calibration rows
  (unpaired) and the Reference is the mean of their features, with their mean val_bpb.
* **Searched trials.** The evaluator (a fresh `Evaluator` per trial, with the search's
  Calibration, the best before the trial, a margin of `--margin_sigmas`·sigma (search.py
  gives 0) and the Reference of the current best) gets the recorded curve through
  `evaluator.replay`. A trial it stops does not feed the calibration, is not re-run and
  cannot become the best, exactly as online. One that ran to completion with a finite
  val_bpb is added with `Calibration.update`, paired with the Reference it was watched
  against, and the search's keep rule (`keep_rule.py`, at `search.keep_alpha`) decides:
  a clear gain keeps it; a gain inside the noise band uses the recorded re-run row (the
  one whose `rerun_of` is the trial),
  which is never watched (nor is it online) and joins the calibration and the pooled σ,
  and the two-run mean decides. A gain in the band
  without a recorded re-run (the recorded search had another best) is a discard, and a
  recorded re-run whose first run the replay stops or does not put in the band never
  runs. A new best's Reference is built from its run(s) and its (mean) val_bpb.
  `check_stall` is not replayed (nor by evaluator.replay): it needs a live clock.

Costs: a trial that runs to the end costs its recorded total_seconds; a stopped one
costs everything but the training time it did not spend and its eval (total - train -
eval + the training seconds at the stop, on the machine's seconds: under the flops clock
the same fraction of `wall_train_seconds`): compile plus the trial's setup, which it
pays too. The time spent in the method itself (fits, calibration, Optuna's bookkeeping),
measured here on the host, is added serially; online the fits overlap the device's
steps, so this is an upper bound.

Metrics (benchmarks/replay_metrics.py): speedup; false kills against one set of
winners for every method, the searched trials that beat the best of the unstopped
search (the replay with no method) when they ran, with the Wilson 95% upper bound;
aborted % of searched trials (first runs: not baseline, not re-runs); for the
evaluator, MAE at 10, 25 and 50% of the budget and the coverage of its 90% interval.
Each method keeps its own best trajectory (a stopped trial never becomes the best),
but its false kills are counted on the common winners.

Optuna's MedianPruner and SuccessiveHalvingPruner see, at the evaluator's checkpoints
(step k = k·check_every of the budget), the mean of the recorded training loss over the
last half checkpoint interval, through `trial.report` / `should_prune`; a completed trial
is told its recorded val_bpb, a crashed one FAIL. Baseline rows and re-runs are told
with their reports but never asked should_prune (so they are in the median's history,
not in successive halving's rungs). Rows: Optuna's defaults, and a setting for a
~100-trial search: warm-up to the evaluator's default min_progress and, for the median,
10 completed trials first. The sweep adds more cautious settings (median: 10 or 20
start-up trials x 4, 8 or 12 warm-up checkpoints; successive halving: min_resource 4, 8
or 12 x min_early_stopping_rate 0, 1 or 2) and, for the evaluator, one knob at a time
(delta x confirm, min_progress, the keep margin, the checkpoint schedule). A line per
family (evaluator, median, successive halving) names its fastest row with a false-kill
rate of at most 5%: each family's best case, picked the same way in hindsight on these
curves, beside the evaluator's fixed default.

An oracle row bounds every method that may stop only after its `min_progress` (one row
per min_progress of the evaluator rows): it knows the recorded finals and stops, at
`min_progress`, each trial that will not beat the best (so it has no false kill). Its
speedup is the most such a method can reach on these curves, whatever its predictions.

Prints the trials, budget and sources, the table, then `speedup: X`,
`false_kill_rate: Y` and `false_kill_upper95: Z` (the evaluator at its default
EvaluatorConfig) as the last lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from autoresearch.early_stop import evaluator  # noqa: E402
from autoresearch.early_stop.calibration import Calibration  # noqa: E402
from autoresearch.early_stop.config import EvaluatorConfig, PREDICTORS  # noqa: E402
from autoresearch.workdir.records import TrialRecord  # noqa: E402
from benchmarks.replay_methods import (  # noqa: E402
    EVALUATOR_DEFAULTS, EvaluatorMethod, OptunaMethod, OracleMethod)
from benchmarks.replay_metrics import (  # noqa: E402
    MAX_FALSE_KILL_RATE, Metrics, best_within, summary, table)
from benchmarks.replay_search import RecordedSearch, replay_search, winners  # noqa: E402
from configs import default  # noqa: E402

SWEEP_DELTAS = (0.01, 0.05, 0.1)   # P(beats the best) thresholds of the sweep rows
SWEEP_CONFIRMS = (1, 2)            # consecutive hopeless checks of the sweep rows
SWEEP_MIN_PROGRESS = (0.1, 0.15, 0.2)   # earliest predicted-bpb stops of the sweep rows
SWEEP_MARGINS = (0.5, 1.0)         # keep margins (sigma) of the sweep rows
SWEEP_CHECK_EVERY = (0.1,)         # checkpoint schedules (fractions of the budget) swept
PRUNER_WARMUPS = (4, 8, 12)        # Optuna sweep rows: checkpoints before a first prune


def warm_up() -> None:
  """Compiles the evaluator's fits outside the timed replay (once per process, as the
  search does before its first trial's clock starts)."""
  cfg = EVALUATOR_DEFAULTS
  calibration = Calibration.create(cfg)
  seconds = np.linspace(0.5, 10.0, 40)
  curve = [[float(s), i + 1, float(2.0 + s ** -0.5)] for i, s in enumerate(seconds)]
  calibration.update(TrialRecord(genotype_id='', genotype={}, status='discard', trial=1,
                                 agent='warm-up', description='', best_bpb=2.5, sigma=0.0,
                                 budget_seconds=10.0, val_bpb=2.5, loss_curve=curve), None, 10.0)
  evaluator.replay(evaluator.Evaluator(cfg, calibration, 2.0, 0.004, 10.0), curve, 10.0)


def evaluator_rows(base: EvaluatorConfig, margin_sigmas: float, sweep: bool):
  """[(label, EvaluatorMethod)]: `base` first, then the other predictor, then (with
  `sweep`) one knob changed at a time: delta x confirm, min_progress, the keep margin
  and the checkpoint schedule."""
  rows = [(f'evaluator default (predictor={base.predictor}, delta={base.delta:g}, '
           f'confirm={base.confirm}, min_progress={base.min_progress:g})',
           EvaluatorMethod(base, margin_sigmas))]
  for predictor in PREDICTORS:
    if predictor != base.predictor:
      rows.append((f'evaluator predictor={predictor}', EvaluatorMethod(
          dataclasses.replace(base, predictor=predictor), margin_sigmas)))
  if not sweep:
    return rows

  def row(label, margin=margin_sigmas, **changes):
    rows.append((f'evaluator {label}',
                 EvaluatorMethod(dataclasses.replace(base, **changes), margin)))

  for delta in SWEEP_DELTAS:
    for confirm in SWEEP_CONFIRMS:
      if (delta, confirm) != (base.delta, base.confirm):
        row(f'delta={delta:g}, confirm={confirm}', delta=delta, confirm=confirm)
  for min_progress in SWEEP_MIN_PROGRESS:
    if min_progress != base.min_progress:
      row(f'min_progress={min_progress:g}', min_progress=min_progress)
  for margin in SWEEP_MARGINS:
    if margin != margin_sigmas:
      row(f'margin={margin:g} sigma', margin=margin)
  for check_every in SWEEP_CHECK_EVERY:
    if check_every != base.check_every:
      row(f'check_every={check_every:g}', check_every=check_every)
  return rows


def methods(margin_sigmas: float, with_optuna: bool, sweep: bool, notes: list,
            predictor_path: str = ''):
  """[(row label, method)]: the default evaluator first, then the sweep, the oracle
  bounds and Optuna. `predictor_path`: another learned predictor than the config's."""
  base = EVALUATOR_DEFAULTS
  if predictor_path:
    base = dataclasses.replace(base, predictor_path=predictor_path)
  rows = evaluator_rows(base, margin_sigmas, sweep)
  for min_progress in sorted({base.min_progress, *(SWEEP_MIN_PROGRESS if sweep else ())}):
    rows.append((f'oracle bound (stops every loser at {min_progress:g})',
                 OracleMethod(min_progress)))
  if not with_optuna:
    return rows
  try:
    import optuna
  except ImportError:
    notes.append('optuna is not installed: no pruner rows (pip install -r '
                 'requirements-dev.txt)')
    return rows
  warmup = int(round(base.min_progress / base.check_every))   # steps before min_progress
  pruners = optuna.pruners

  def median(startup, warmup_steps):
    return (f'optuna median (startup {startup}, warmup {warmup_steps})', OptunaMethod(
        lambda: pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup_steps),
        base.check_every))

  def sha(min_resource, min_rate):
    return (f'optuna SHA (min_resource {min_resource}, min_early_stopping_rate {min_rate})',
            OptunaMethod(lambda: pruners.SuccessiveHalvingPruner(
                min_resource=min_resource, min_early_stopping_rate=min_rate),
                base.check_every))

  rows += [('optuna median (defaults)', OptunaMethod(pruners.MedianPruner, base.check_every)),
           median(10, warmup),
           ('optuna SHA (defaults)', OptunaMethod(pruners.SuccessiveHalvingPruner,
                                                  base.check_every)),
           sha(warmup, 0)]
  if sweep:   # more cautious settings: later first stops, more trials before pruning
    rows += [median(startup, steps) for startup in (10, 20) for steps in PRUNER_WARMUPS
             if (startup, steps) != (10, warmup)]
    rows += [sha(steps, rate) for steps in PRUNER_WARMUPS for rate in (0, 1, 2)
             if (steps, rate) != (warmup, 0)]
  return rows


def _parse_args(argv: Optional[list]) -> argparse.Namespace:
  """The command line (see the module docstring); `argv` None: sys.argv."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('paths', nargs='+', help='trials.jsonl files, one per search')
  parser.add_argument('--budget_seconds', type=float, default=0.0,
                      help='training budget of the trials; 0: inferred from the curves')
  parser.add_argument('--margin_sigmas', type=float, default=0.0,
                      help='keep margin given to the evaluator, in sigma (the search gives 0: '
                      'any trial below the best may be kept after its re-run)')
  parser.add_argument('--predictor_path', default='',
                      help='folder of the learned curve predictor (default: the config\'s)')
  parser.add_argument('--no-optuna', dest='optuna', action='store_false',
                      help='skip the Optuna pruner rows')
  parser.add_argument('--no-sweep', dest='sweep', action='store_false',
                      help='skip the sweep rows (evaluator delta x confirm and min_progress; '
                      'cautious Optuna settings)')
  return parser.parse_args(argv)


def _emit_sources(searches: list, keep_alpha: float, margin_sigmas: float, emit) -> None:
  """A line per recorded search, then the trial counts and the replay's settings."""
  for s in searches:
    emit(f'source: {s.path}: {len(s.records)} trials ({len(s.baseline)} baseline), budget '
         f'{s.budget_seconds:g} s, baseline val_bpb {s.baseline_bpb:.6f}, sigma {s.sigma:.6f}')
  rows_total = sum(len(s.records) for s in searches)
  reruns = sum((r.rerun_of is not None) for s in searches for r in s.records)
  baseline = sum(r.is_baseline for s in searches for r in s.records)
  emit(f'trials: {rows_total} ({baseline} baseline, {reruns} re-runs, '
       f'{rows_total - baseline - reruns} searched) in {len(searches)} search(es), each '
       f'replayed with its own best, sigma and calibration; keep rule at alpha {keep_alpha:g}, '
       f'evaluator margin {margin_sigmas:g} sigma')


def _replay_rows(searches: list, winning: list, keep_alpha: float, args, notes: list):
  """Replays every method of `methods` over every search. Returns [(label, Metrics pooled
  over the searches)], the default evaluator first, and its Metrics per search."""
  rows, default_per_search = [], None
  for label, method in methods(args.margin_sigmas, args.optuna, args.sweep, notes,
                               args.predictor_path):
    per_search = [replay_search(method, s, keep_alpha, w) for s, w in zip(searches, winning)]
    rows.append((label, sum(per_search, Metrics())))
    default_per_search = default_per_search or per_search
  return rows, default_per_search


def _emit_conclusions(searches: list, rows: list, default_per_search: list, emit) -> None:
  """The default evaluator per search, each family's fastest row within the false-kill
  limit, then the default's summary and its figures, `false_kill_upper95:` last."""
  if len(searches) > 1:
    for s, m in zip(searches, default_per_search):
      emit('  ' + summary(f'evaluator default on {s.path}', m))
  for prefix in ('evaluator', 'optuna median', 'optuna SHA'):
    # The same hindsight pick for every family: its fastest swept row within the limit.
    best = best_within(rows, prefix)
    emit(f'fastest {prefix} row with false-kill rate <= {MAX_FALSE_KILL_RATE:g}: ' + (
        'none (each either stops nothing or kills more)' if best is None
        else summary(best[0], best[1])))
  default_metrics = rows[0][1]
  if not default_metrics.better:
    emit('note: no searched trial beat the best at its time: false-kill rate 0/0, reported '
         'as 0 (upper95 1)')
  emit('speedup = seconds without / with (compile, setup, eval and the method\'s own '
       '"method s" included); aborted % of searched trials; MAE in bits/byte; cover90: '
       'share of calibrated predictions whose 90% interval holds the recorded final')
  emit(summary('evaluator default', default_metrics))
  emit(f'speedup: {default_metrics.speedup:.4f}')
  emit(f'false_kill_rate: {default_metrics.false_kill_rate:.4f}')
  emit(f'false_kill_upper95: {default_metrics.false_kill_upper95:.4f}')


def main(argv: Optional[list] = None) -> list[str]:
  """Runs the benchmark on the files in argv; prints and returns the report lines."""
  args = _parse_args(argv)
  search_cfg = default.get_config().search
  keep_alpha = float(search_cfg.keep_alpha)
  searches = [RecordedSearch.load(p, args.budget_seconds, search_cfg.min_sigma)
              for p in args.paths]

  lines = []

  def emit(line: str) -> None:
    lines.append(line)
    print(line, flush=True)

  _emit_sources(searches, keep_alpha, args.margin_sigmas, emit)
  notes = []
  warm_up()
  winning = [winners(s, keep_alpha) for s in searches]
  emit(f'winners (searched trials that beat the best of the unstopped search when they '
       f'ran; the false-kill denominator of every row): {sum(map(len, winning))}')
  rows, default_per_search = _replay_rows(searches, winning, keep_alpha, args, notes)
  for line in notes + table(rows):
    emit(line)
  _emit_conclusions(searches, rows, default_per_search, emit)
  return lines


if __name__ == '__main__':
  main()

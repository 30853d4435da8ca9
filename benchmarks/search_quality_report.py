"""What `search_quality.py`'s finished runs show: per-arm improvements with bootstrap 95%
intervals, PPO minus each other arm paired by seed (interval and sign-flip p-value, and
at up to `stats.EXACT_MAX_N` seeds the t interval and the exact sign-flip p beside them;
for the other agents also read at half their time, as if their trials cost double), the
table, the trajectories and the plot. A run's improvement at a snapshot is the mean
over the re-training seeds of the baseline's bpb minus the snapshot best's (val or test).
Arms that made the very same trials on every seed (at a short run length CMA-ES before
its first generation, or PPO frozen and learning before its first update) are one
procedure there: the table says so instead of counting them as separate evidence.
"""

import datetime
import math
import os
import platform

import numpy as np

from benchmarks import stats


SPLITS = ('val_bpb', 'test_bpb')


def _mean_bpb(trained: list[dict], split: str) -> float:
  values = [t[split] for t in trained]
  if any(t['status'] != 'ok' or v is None for t, v in zip(trained, values)):
    return math.nan   # a re-trained run that crashed: no score (shown as nan)
  return float(np.mean(values))


def run_gain(run: dict, fraction: str, split: str) -> float:
  """Re-trained improvement of `run`'s best at `fraction` over the baseline, bits/byte."""
  return (_mean_bpb(run['retrained']['baseline'], split)
          - _mean_bpb(run['retrained'][fraction], split))


def _by_seed(runs: list[dict], arm: str, fraction: str, split: str) -> dict[int, float]:
  return {r['seed']: run_gain(r, fraction, split) for r in runs if r['arm'] == arm}


def arm_table(runs: list[dict], arms: list[str]) -> dict[str, dict]:
  """Per arm: re-trained improvement (val, test) with its interval, the search's own
  claimed improvement, trials per run and the shares of aborted and crashed proposals."""
  table = {}
  for arm in arms:
    mine = [r for r in runs if r['arm'] == arm]
    if not mine:
      continue
    row = {'runs': len(mine)}
    for split in SPLITS:
      row[split] = stats.bootstrap_mean([run_gain(r, '1.0', split) for r in mine])
    row['claimed'] = float(np.mean([r['baseline_bpb'] - r['search_best_bpb'] for r in mine]))
    proposals = [p['status'] for r in mine for p in r['points'] if p['proposer'] != 'baseline']
    row['trials'] = len(proposals) / len(mine)
    row['aborted'] = 100.0 * proposals.count('aborted') / max(1, len(proposals))
    row['crashed'] = 100.0 * proposals.count('crash') / max(1, len(proposals))
    table[arm] = row
  return table


def _is_ppo(arm: str) -> bool:
  """PPO or one of its ablations (not another agent)."""
  return arm == 'ppo' or arm.startswith('ppo_')


def _paired_diffs(runs: list[dict], arm: str, other: str, split: str = 'val_bpb',
                  other_fraction: str = '1.0') -> list[float]:
  """`arm` minus `other` on each seed both finished (`other` read at `other_fraction`)."""
  a, b = _by_seed(runs, arm, '1.0', split), _by_seed(runs, other, other_fraction, split)
  return [a[s] - b[s] for s in sorted(set(a) & set(b)) if math.isfinite(a[s] - b[s])]


def paired(runs: list[dict], arm: str, other: str, split: str = 'val_bpb',
           other_fraction: str = '1.0'):
  """(interval, p-value, n) of PPO-arm `arm` minus `other` on the seeds both finished;
  `other` read at `other_fraction` of its run ('0.5': as if its trials cost double)."""
  diffs = _paired_diffs(runs, arm, other, split, other_fraction)
  if not diffs:
    return None, math.nan, 0
  return stats.bootstrap_mean(diffs), stats.sign_flip_p(diffs), len(diffs)


def _trials(run: dict) -> list[tuple]:
  return [(p['proposer'] != 'baseline', p['status'], p.get('val_bpb')) for p in run['points']]


def coincident(runs: list[dict], arm: str, other: str) -> bool:
  """Whether `arm` and `other` made the same trials with the same results on every seed
  (both run on the same seeds, at least one)."""
  mine = {r['seed']: _trials(r) for r in runs if r['arm'] == arm}
  theirs = {r['seed']: _trials(r) for r in runs if r['arm'] == other}
  return bool(mine) and mine.keys() == theirs.keys() and all(
      mine[s] == theirs[s] for s in mine)


def identical_to(runs: list[dict], arm: str, arms) -> list[str]:
  """The other arms of `arms` that coincide with `arm` on every seed."""
  return [o for o in arms if o != arm and coincident(runs, arm, o)]


def headline(runs: list[dict], table: dict) -> tuple[str, float]:
  """(the best other agent by mean re-trained val improvement, the lower 95% bound of PPO
  minus it, paired by seed). Ablations are not other agents. Choosing the best by its
  mean favours that agent, so the bound errs against PPO."""
  others = [a for a in table if not _is_ppo(a)]
  if 'ppo' not in table or not others:
    return '-', math.nan
  best = max(others, key=lambda a: table[a]['val_bpb'].mean)
  interval = paired(runs, 'ppo', best)[0]
  return best, interval.low if interval else math.nan


def _ci(x: stats.Interval) -> str:
  return f'{x.mean:+.4f} [{x.low:+.4f}, {x.high:+.4f}]'


def _small_n(runs: list[dict], other: str) -> str:
  """PPO minus `other` on val as a t interval with the exact sign-flip p, or '-' beyond
  `stats.EXACT_MAX_N` seeds (or under 2)."""
  diffs = _paired_diffs(runs, 'ppo', other)
  if not 2 <= len(diffs) <= stats.EXACT_MAX_N:
    return '-'
  return f'{_ci(stats.t_interval(diffs))}; p = {stats.exact_sign_flip_p(diffs):.3f}'


def table_lines(runs: list[dict], table: dict) -> list[str]:
  lines = ['| arm | seeds | re-trained improvement, val (95% CI) | test (95% CI) | '
           'claimed by the search | trials per run | aborted % | crashed % | identical to |',
           '|---|---|---|---|---|---|---|---|---|']
  for arm, row in table.items():
    same = ', '.join(identical_to(runs, arm, table)) or '-'
    lines.append(f'| {arm} | {row["runs"]} | {_ci(row["val_bpb"])} | {_ci(row["test_bpb"])} | '
                 f'{row["claimed"]:+.4f} | {row["trials"]:.1f} | {row["aborted"]:.0f} | '
                 f'{row["crashed"]:.0f} | {same} |')
  if 'ppo' in table:
    lines += ['', '| ppo minus | seeds | val (95% bootstrap CI) | p (sign flip) | '
              f'val (95% t CI; exact sign-flip p), n <= {stats.EXACT_MAX_N} | test (95% CI) |',
              '|---|---|---|---|---|---|']
    for other in table:
      if other == 'ppo':
        continue
      val, p, n = paired(runs, 'ppo', other)
      test = paired(runs, 'ppo', other, 'test_bpb')[0]
      if val is not None:
        same = ' (identical on every seed)' if coincident(runs, 'ppo', other) else ''
        lines.append(f'| {other}{same} | {n} | {_ci(val)} | {p:.3f} | {_small_n(runs, other)} | '
                     f'{_ci(test) if test else "-"} |')
    lines += ['', 'The charge gives every built trial the same fixed costs, but a bigger model '
              'compiles longer. If the other agent\'s trials cost double, its run ends at '
              'half its modelled time:', '',
              '| ppo minus, the other at half its time | seeds | val (95% CI) | p (sign flip) |',
              '|---|---|---|---|']
    for other in filter(lambda arm: not _is_ppo(arm), table):
      val, p, n = paired(runs, 'ppo', other, other_fraction='0.5')
      if val is not None:
        lines.append(f'| {other} | {n} | {_ci(val)} | {p:.3f} |')
  return lines


def write_tsv(runs: list[dict], path: str) -> None:
  columns = ('arm', 'seed', 'trial', 'seconds', 'proposer', 'status', 'val_bpb', 'best_bpb',
             'best_genotype')
  with open(path, 'w') as f:
    f.write('\t'.join(columns) + '\n')
    for run in runs:
      for p in run['points']:
        row = dict(p, arm=run['arm'], seed=run['seed'])
        f.write('\t'.join('' if row[c] is None else f'{row[c]:.6f}' if isinstance(row[c], float)
                          else str(row[c]) for c in columns) + '\n')


def plot(runs: list[dict], table: dict, path: str, title: str) -> None:
  """Re-trained improvement of the best so far against modelled hours, per arm: the mean
  over seeds at each snapshot with its bootstrap 95% band."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5))
  for arm in table:
    mine = [r for r in runs if r['arm'] == arm]
    fractions = sorted(mine[0]['retrained'].keys() - {'baseline'}, key=float)
    hours = [float(f) * mine[0]['run_seconds'] / 3600 for f in fractions]
    cis = [stats.bootstrap_mean([g for g in (run_gain(r, f, 'val_bpb') for r in mine)
                                 if math.isfinite(g)] or [math.nan]) for f in fractions]
    style = '--' if arm.startswith('ppo_') else '-'
    line, = ax.plot(hours, [c.mean for c in cis], style, marker='o',
                    label=f'{arm} ({len(mine)} seeds)')
    ax.fill_between(hours, [c.low for c in cis], [c.high for c in cis], color=line.get_color(),
                    alpha=0.12, linewidth=0)
  ax.axhline(0.0, color='gray', linewidth=0.8)
  ax.set_xlabel('modelled hours of search')
  ax.set_ylabel('re-trained improvement over the baseline, val (bits/byte)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(runs: list[dict], arms: list[str], results: str, preset_name: str, preset,
          seconds: float) -> list[str]:
  """Writes table.md, trajectories.tsv and search_quality.png; returns the lines to
  print, the last two `seeds_per_agent: N` and `ppo_vs_best_baseline_ci_low: X`."""
  import jax
  table = arm_table(runs, arms)
  best, ci_low = headline(runs, table)
  seeds = min((row['runs'] for row in table.values()), default=0)
  write_tsv(runs, os.path.join(results, 'trajectories.tsv'))
  if table:
    plot(runs, table, os.path.join(results, 'search_quality.png'),
         f'preset {preset_name}: {preset.run_seconds:.0f} modelled seconds of agent trials per run')
  corpus = preset.corpus or "the config's"
  header = [
      f'# Search quality, preset `{preset_name}`', '',
      f'- written {datetime.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} '
      f'CPU cores, JAX {jax.__version__}; this invocation {seconds / 60:.0f} min',
      f'- {preset.run_seconds:g} modelled seconds of agent trials per run; config overrides '
      f'{preset.overrides}; corpus {corpus}',
      '- improvement: re-trained baseline minus re-trained final best (3 fresh seeds), '
      'bits/byte, higher is better; "claimed": the search\'s own estimate', '']
  tail = [f'best other agent: {best}', f'seeds_per_agent: {seeds}',
          f'ppo_vs_best_baseline_ci_low: {ci_low:+.4f}']
  lines = table_lines(runs, table) + [''] + tail
  with open(os.path.join(results, 'table.md'), 'w') as f:
    f.write('\n'.join(header + lines) + '\n')
  return lines

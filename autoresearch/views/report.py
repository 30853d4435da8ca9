"""The progress plot and report.md of a search's workdir.

    headline = report.write_report(workdir)   # progress.png, report.md; returns the figures

Reads `trials.jsonl` only (never the checkpoint), so it can run while a search is still
appending to the same workdir; a torn last line is skipped by `ledger.read_records`. It
writes nothing but `progress.png` and `report.md`, each atomically
(`workdir_io.write_atomic`: local or gs://), so a reader never sees half a file. The
figures and their conventions are `summary.py`'s.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoresearch.views.summary import (TIME_PARTS, Edit, baseline_stats, best_bpb, edits,
                                        format_headline, headline, kept_gain, load, number,
                                        time_totals)
from autoresearch.workdir import io as workdir_io
from autoresearch.workdir.records import TrialRecord


STATUS_COLOURS = {'keep': 'tab:green', 'discard': 'tab:gray', 'aborted': 'tab:orange',
                  'crash': 'tab:red'}


# --- The plot ---------------------------------------------------------------------------


def _y_limits(records: list[TrialRecord], baseline: float) -> tuple[float, float]:
  """A y range that shows the best, the baseline and the near misses; far-off discards
  (a diverged recipe at 5 bpb) would otherwise squash the interesting band flat."""
  ys = [_plotted_y(r) for r in records] + [number(r.best_bpb) for r in records]
  ys = [y for y in ys if y is not None]
  if not ys:
    return 0.0, 1.0
  low, high = min(ys), max(ys)
  if math.isfinite(baseline):
    span = max(baseline - low, 0.02 * abs(baseline), 1e-6)
    high = min(high, baseline + 3 * span)
  pad = max(high - low, 1e-6) * 0.06
  return low - pad, high + pad


def _plotted_y(record: TrialRecord) -> Optional[float]:
  if record.status == 'aborted':
    return number(record.predicted_bpb)
  return number(record.val_bpb)


def _scatter_trials(ax, records: list[TrialRecord], trials: list[int]) -> None:
  """One point per trial, a collection per status ('baseline' for the noise runs);
  crashes and unscored rows on the top edge (y in axes coordinates)."""
  edge = ax.get_xaxis_transform()  # x in data, y in axes fraction

  def scatter(rows, ys, label, transform=None, **style):
    if rows:
      ax.scatter([trials[i] for i in rows], ys, label=f'{label} ({len(rows)})',
                 transform=transform or ax.transData, zorder=3, **style)

  by_status = {s: [i for i, r in enumerate(records) if r.status == s] for s in STATUS_COLOURS}
  scored = {s: [i for i in by_status[s] if number(records[i].val_bpb) is not None]
            for s in ('keep', 'discard')}
  # The baseline's noise runs are keeps too, told apart from the agent's by their marker.
  baseline_rows = [i for i in scored['keep'] if records[i].is_baseline]
  scatter(baseline_rows, [records[i].val_bpb for i in baseline_rows], 'baseline', s=30,
          marker='D', color=STATUS_COLOURS['keep'], alpha=0.5)
  for status, size, alpha in (('discard', 18, 0.6), ('keep', 36, 1.0)):
    rows = [i for i in scored[status] if i not in baseline_rows]
    scatter(rows, [records[i].val_bpb for i in rows], status, s=size, alpha=alpha,
            color=STATUS_COLOURS[status])
  predicted = [i for i in by_status['aborted'] if number(records[i].predicted_bpb) is not None]
  scatter(predicted, [records[i].predicted_bpb for i in predicted], 'aborted (predicted)',
          s=36, facecolors='none', edgecolors=STATUS_COLOURS['aborted'])
  # Rows with no score to place: on the top edge, so none of them goes unseen.
  unplaced = [i for i in by_status['aborted'] if i not in predicted]
  unplaced += [i for s in ('keep', 'discard') for i in by_status[s] if i not in scored[s]]
  scatter(unplaced, [1.0] * len(unplaced), 'aborted/unscored', transform=edge, marker='x',
          color=STATUS_COLOURS['aborted'], clip_on=False)
  scatter(by_status['crash'], [1.0] * len(by_status['crash']), 'crash', transform=edge,
          marker='x', color=STATUS_COLOURS['crash'], clip_on=False)


def _annotate_kept(ax, records: list[TrialRecord], trials: list[int]) -> None:
  """The description of each kept edit beside its point."""
  for edit in edits(records):
    if edit.status == 'keep' and edit.bpb is not None:
      y = number(records[trials.index(edit.trial)].val_bpb)
      text = edit.description if len(edit.description) <= 40 else edit.description[:39] + '…'
      ax.annotate(text, (edit.trial, edit.bpb if y is None else y), xytext=(3, 4),
                  textcoords='offset points', rotation=30, fontsize=7, color='darkgreen',
                  zorder=4, bbox=dict(boxstyle='square,pad=0.1', fc='white', ec='none',
                                      alpha=0.7))


def build_figure(records: list[TrialRecord]) -> Figure:
  """The progress figure (karpathy/autoresearch's picture): one scatter point per trial,
  each collection labelled with its status ('baseline' for the noise runs); crashes and
  aborts without a prediction sit on the top edge (y in axes coordinates); the running
  best is the line labelled 'running best'."""
  updates = _updates(records)
  fig = Figure(figsize=(12, 8 if updates else 6), dpi=100, layout='constrained')
  FigureCanvasAgg(fig)  # Agg without pyplot: no global backend state to disturb
  if updates:
    ax, below = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    _plot_updates(below, updates)
  else:
    ax = fig.add_subplot()
  baseline, _ = baseline_stats(records)
  best = best_bpb(records)
  trials = [r.trial for r in records]
  _scatter_trials(ax, records, trials)
  if math.isfinite(baseline):
    ax.axhline(baseline, color='dimgray', linestyle='--', linewidth=0.8, label='baseline mean')
  # While the noise runs come in, the best is their running mean, not a search result:
  # the line starts at the last of them.
  last_noise_run = max((i for i, r in enumerate(records) if r.is_baseline), default=-1)
  running = [None if i < last_noise_run else number(r.best_bpb) for i, r in enumerate(records)]
  ax.step(trials, [math.nan if b is None else b for b in running], where='post',
          color=STATUS_COLOURS['keep'], alpha=0.7, linewidth=1.5, label='running best')
  _annotate_kept(ax, records, trials)
  low, high = _y_limits(records, baseline)
  ax.set_ylim(low, high)
  ax.set_xlim(min(trials) - 0.5, max(trials) + 0.5)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  hidden = sum(1 for r in records if (_plotted_y(r) or -math.inf) > high)
  if hidden:
    ax.text(0.01, 0.97, f'{hidden} trial(s) above {high:.3f} not shown', transform=ax.transAxes,
            fontsize=8, va='top', color='dimgray')
  (below if updates else ax).set_xlabel('trial')
  ax.set_ylabel('val_bpb (lower is better)')
  ax.set_title(f'{len(records)} trials, best val_bpb {best:.6f} (baseline {baseline:.6f})')
  ax.grid(alpha=0.3)
  ax.legend(loc='upper right', fontsize=8)
  return fig


def _updates(records: list[TrialRecord]) -> list[TrialRecord]:
  """The rows that carry a PPO update's diagnostics."""
  return [r for r in records if number(r.agent_metrics.get('entropy')) is not None]


def _plot_updates(ax, updates: list[TrialRecord]) -> None:
  """The policy updates' diagnostics against the trial they followed: approximate KL,
  clip fraction and the critic's explained variance (left), entropy in nats (right)."""
  trials, top = [r.trial for r in updates], 1.05
  for name in ('approx_kl', 'clip_fraction', 'explained_variance'):
    ys = [number(r.agent_metrics.get(name)) for r in updates]
    ys = [math.nan if y is None else y for y in ys]
    ax.plot(trials, ys, marker='o', markersize=3, linewidth=1, label=name)
    top = max([top] + [y + 0.05 for y in ys if math.isfinite(y)])
  ax.set_ylim(-1.05, top)   # an explained variance below -1 says only "worse than none"
  ax.set_ylabel('update')
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left', fontsize=7)
  right = ax.twinx()
  right.plot(trials, [number(r.agent_metrics['entropy']) for r in updates], color='black',
             linestyle=':', linewidth=1, label='entropy (nats)')
  right.set_ylabel('entropy (nats)')
  right.legend(loc='upper right', fontsize=7)


# --- The markdown summary ---------------------------------------------------------------


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  return str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return lines + ['| ' + ' | '.join(str(c).replace('|', '\\|') for c in row) + ' |'
                  for row in rows]


def _genotype_section(records: list[TrialRecord]) -> list[str]:
  baseline = records[0].genotype
  kept = [r for r in records if r.status == 'keep']
  best = kept[-1].genotype if kept else baseline
  names = list(baseline) + [k for k in best if k not in baseline]
  rows = [(name, _fmt(baseline.get(name, '-')), _fmt(best.get(name, '-')))
          for name in names if baseline.get(name) != best.get(name)]
  lines = ['## Best genotype vs baseline', '']
  if kept:
    lines += [f'Best: `{kept[-1].genotype_id}` (trial {kept[-1].trial}); '
              f'baseline: `{records[0].genotype_id}`.', '']
  if not rows:
    return lines + ['The best genotype is the baseline.']
  return lines + _table(('gene', 'baseline', 'best'), rows)


def _kept_section(all_edits: list[Edit], sigma: float) -> list[str]:
  rows = []
  for edit in all_edits:
    if edit.status != 'keep':
      continue
    gain = kept_gain(edit)
    bpb = edit.best_after if edit.best_after is not None else edit.bpb
    note = ' (mean of 2 runs)' if edit.runs == 2 else ''
    rows.append((edit.trial, edit.description, f'{bpb:.6f}{note}' if bpb is not None else '-',
                 f'{gain:+.6f}' if gain is not None else '-',
                 f'{gain / sigma:+.2f}' if gain is not None else '-'))
  lines = ['## Kept edits', '', 'gain = best val_bpb before the edit - its val_bpb.', '']
  return lines + (_table(('trial', 'edit', 'val_bpb', 'gain (bpb)', 'gain (sigma)'), rows)
                  if rows else ['No edit has been kept yet.'])


def _time_section(records: list[TrialRecord], figures: dict) -> list[str]:
  totals = time_totals(records)
  wall = sum(totals.values())
  lines = ['## Time', '',
           f'{figures["trials"]} trials in {wall / 3600:.2f} h of trial time: '
           f'{figures["trials_per_hour"]:.2f} trials per hour. The search\'s start-up, '
           'proposals and checkpoints between trials are not counted.', '']
  rows = [(part, f'{totals[part]:.1f}', f'{100 * totals[part] / wall:.1f}%' if wall > 0 else '-')
          for part in TIME_PARTS]
  return lines + _table(('part', 'seconds', 'share'), rows)


def _outcome_section(records: list[TrialRecord], all_edits: list[Edit]) -> list[str]:
  n = len(records)
  rows = [(s, sum(r.status == s for r in records),
           f'{100 * sum(r.status == s for r in records) / n:.1f}%')
          for s in STATUS_COLOURS]
  reruns = sum(e.runs == 2 for e in all_edits)
  baseline_rows = sum(r.is_baseline for r in records)
  lines = ['## Outcomes', '',
           f'{n} trials: {baseline_rows} baseline runs, {len(all_edits)} edits proposed, '
           f'{reruns} of them re-run inside the noise band.', '']
  return lines + _table(('status', 'trials', 'share'), rows)


UPDATE_METRICS = ('entropy', 'approx_kl', 'clip_fraction', 'explained_variance', 'value_loss',
                  'wm_rmse_sigmas')


def _updates_section(records: list[TrialRecord]) -> list[str]:
  """The PPO updates' diagnostics over the search: policy entropy (nats), approximate KL
  to the acting policy, share of clipped ratios, the critic's explained variance, the
  world model's error on trials it had not seen (in σ; with imagination on)."""
  updates = _updates(records)
  lines = ['## Policy updates', '']
  if not updates:
    return lines + ['not recorded']
  # At most 12 rows, evenly spread, the first and the last included.
  picks = sorted(set(np.linspace(0, len(updates) - 1, min(12, len(updates))).round().astype(int)))
  cell = lambda x: '-' if x is None else f'{x:.4f}'
  rows = [(updates[i].trial,) + tuple(cell(number(updates[i].agent_metrics.get(m)))
                                      for m in UPDATE_METRICS) for i in picks]
  return lines + _table(('trial',) + UPDATE_METRICS, rows)


def _gene_section(all_edits: list[Edit]) -> list[str]:
  by_gene: dict[str, list[Edit]] = {}
  for edit in all_edits:
    if edit.reward is not None:
      by_gene.setdefault(edit.gene, []).append(edit)
  ranked = sorted(by_gene.items(), key=lambda kv: -np.mean([e.reward for e in kv[1]]))[:5]
  rows = [(gene, len(es), f'{np.mean([e.reward for e in es]):+.3f}',
           sum(e.status == 'keep' for e in es)) for gene, es in ranked]
  lines = ['## Genes whose edits gained most', '',
           'Mean reward per edit of the gene: log1p of its gain over the best before, in σ '
           '(0 when worse); a discarded edit that gained less than the keep rule asks for '
           'still earns some.', '']
  return lines + (_table(('gene', 'edits', 'mean reward', 'kept'), rows)
                  if rows else ['No rewarded edit yet.'])


def build_markdown(records: list[TrialRecord], workdir: str = '') -> str:
  """report.md: headline, best vs baseline genotype, kept edits, time, outcomes, policy
  updates and the genes that gained most."""
  figures = headline(records)
  _, sigma = baseline_stats(records)
  all_edits = edits(records)
  title = os.path.basename(os.path.normpath(workdir)) if workdir else 'search'
  sections = [
      [f'# autoresearch report: {title}', '', '![progress](progress.png)', '', '```',
       format_headline(figures), f'sigma: {sigma:.6f}', '```', '',
       'sigma: the σ of val_bpb the keep rule used last, pooled over the baseline\'s noise '
       'runs and every re-run pair (the start-up log\'s σ is the noise runs\' alone).'],
      _genotype_section(records),
      _kept_section(all_edits, sigma),
      _time_section(records, figures),
      _outcome_section(records, all_edits),
      _updates_section(records),
      _gene_section(all_edits),
  ]
  return '\n\n'.join('\n'.join(s) for s in sections) + '\n'


# --- Writing ----------------------------------------------------------------------------


def write_report(workdir: str, quiet: bool = False) -> dict[str, Any]:
  """Writes `workdir/progress.png` and `workdir/report.md` from trials.jsonl, prints the
  headline as `key: value` lines (unless `quiet`: the search's refresh after each trial)
  and returns it (keys `HEADLINE_KEYS`).

  Raises:
    FileNotFoundError: the workdir has no trials.jsonl.
    ValueError: trials.jsonl holds no complete record.
  """
  records = load(workdir)
  figures = headline(records)
  fig = build_figure(records)
  png = io.BytesIO()
  fig.savefig(png, format='png')
  workdir_io.write_atomic(workdir_io.path(workdir, 'progress.png'), png.getvalue())
  workdir_io.write_atomic(workdir_io.path(workdir, 'report.md'), build_markdown(records, workdir))
  if not quiet:
    print(format_headline(figures))
  return figures


def main(config, workdir: str) -> dict[str, Any]:
  """`--mode=report`: the report of `workdir` (`config` is accepted and unused)."""
  del config  # The ledger holds everything the report needs.
  return write_report(workdir)

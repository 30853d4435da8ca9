"""The live view of a running trial: a tqdm bar on a terminal, a log line otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional

import tqdm
from absl import logging

from autoresearch.trial.results import LossReading


class ProgressLine:
  """A watcher that shows a trial's progress: a tqdm bar on a terminal (step, loss,
  tokens/s, seconds left, and the self-evaluator's predicted val_bpb once it has one),
  an absl log line every 10 s otherwise. `prediction` returns (mean, std) or None.
  Until the first loss reading the bar says 'compiling' (compile is not budget time)."""

  def __init__(self, budget_seconds: float, tokens_per_step: int, label: str = 'trial',
               prediction: Optional[Callable[[], Optional[tuple]]] = None, stream=sys.stderr):
    self.budget, self.tokens_per_step = budget_seconds, tokens_per_step
    self.prediction = prediction
    self.bar = None
    if stream.isatty():
      self.bar = tqdm.tqdm(total=round(budget_seconds, 1), desc=label, unit='s', file=stream,
                           leave=False, bar_format=bar_format(budget_seconds))
      self.bar.set_postfix_str('compiling')
    self.last_logged = -float('inf')

  def __call__(self, reading: LossReading):
    wall = reading.wall_seconds if reading.wall_seconds is not None else reading.seconds
    tokens_per_s = reading.step * self.tokens_per_step / max(wall, 1e-9)
    fields = {'step': reading.step, 'loss': f'{reading.loss:.4f}',
              'tok/s': f'{tokens_per_s:,.0f}',
              'left': seconds_left(self.budget, reading.seconds)}
    predicted = self.prediction() if self.prediction else None
    if predicted is not None:
      fields['pred_bpb'] = f'{predicted[0]:.3f}±{predicted[1]:.3f}'
    if self.bar is not None:
      self.bar.n = min(reading.seconds, self.budget)
      self.bar.set_postfix(fields, refresh=False)
      self.bar.update(0)
    elif time.perf_counter() - self.last_logged >= 10.0:
      self.last_logged = time.perf_counter()
      logging.info(' | '.join(f'{k} {v}' for k, v in fields.items()))
    return None

  def close(self):
    if self.bar is not None:
      self.bar.close()


def bar_format(budget_seconds: float) -> str:
  """The bar's layout: seconds of the budget in tenths under 10 s, so that the counter
  and the fill agree (a 3 s budget at 2.6 s read '3/3 s' with the bar 87% full)."""
  digits = 1 if budget_seconds < 10 else 0
  return f'{{desc}} {{bar}} {{n:.{digits}f}}/{{total:.{digits}f}} s{{postfix}}'


def seconds_left(budget_seconds: float, seconds: float) -> str:
  """Seconds of the budget left, rounded up: '0s' only when none is left."""
  return f'{math.ceil(max(budget_seconds - seconds, 0.0) - 1e-9)}s'

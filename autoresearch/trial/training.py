"""The budgeted training loop of a trial (`train`), from a built genotype's initial state.

Training runs until `budget_seconds` of training time are spent on the trial's clock
(`clocks.py`); no step is dispatched that would end past the budget. The loss of step
t-1 is read after step t is dispatched, so the host never stalls the device; each batch
is sampled and placed ahead of its step by a prefetch thread (`prefetch.Prefetcher`), in
the order an inline loop would draw them. Under a batch-size warmup (gene
`batch_warmup`) the steps that start before that progress are the half-batch step.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from autoresearch.data import windows
from autoresearch.runtime import distributed, faults
from autoresearch.trial import prefetch, step_cost
from autoresearch.trial.clocks import make_clock
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.placement import Placement
from autoresearch.trial.results import Built, LossReading, Trained, Watcher, check_loss
from autoresearch.trial.step_plan import StepPlan


def _sharing():
  """How process 0's step plan reaches the others: None on a single process."""
  return distributed.share_plan if jax.process_count() > 1 else None


class _StepChoice:
  """The compiled step that trains at a progress: a batch-size warmup's half-batch step
  before `built.warmup_until`, the full step after (the clock is told when they
  change); counts the tokens trained."""

  def __init__(self, built: Built, clock):
    self._built, self._clock = built, clock
    self._in_warmup = built.warmup_step is not None
    self.tokens = 0

  def __call__(self, progress: float):
    if self._in_warmup and progress >= self._built.warmup_until:
      self._in_warmup = False
      self._clock.step_changed()
    rows = self._built.batch_size // 2 if self._in_warmup else self._built.batch_size
    self.tokens += rows * self._built.seq_len
    return self._built.warmup_step if self._in_warmup else self._built.train_step


def _clock(built: Built, cfg: TrialConfig):
  def charged(rows):
    return step_cost.clock_seconds(cfg, built.model_cfg, built.optim_cfg, rows)
  return make_clock(cfg, charged(built.batch_size), charged(built.batch_size // 2),
                    built.warmup_until)


def train(built: Built, train_split: np.ndarray, cfg: TrialConfig, watch: Optional[Watcher],
          placement: Placement) -> Trained:
  """The budgeted loop from `built`'s initial state (donated): step t is dispatched
  before step t-1's loss is read, if the plan (`step_plan.StepPlan`: the clock, and on
  several hosts process 0's plan shared every `cfg.sync_steps` steps) says it runs;
  its batch was sampled and placed ahead by a prefetch thread; every reading goes to
  `watch`."""
  # The steps take the state as lists of leaves (`steps.make_train_step(flat=True)`).
  params, params_def = jax.tree_util.tree_flatten(built.params)
  opt_state = jax.tree_util.tree_leaves(built.opt_state)
  batch_size, seq_len = built.batch_size, built.seq_len

  def make_batch(rng):
    return placement.put(windows.sample_batch(rng, train_split, batch_size, seq_len),
                         placement.batch)
  loss_curve, final_train_loss = [], None
  pending = None   # (step index, loss array): dispatched, not yet read
  dispatched_steps = 0
  own_stop = None  # this process's watcher or loss check; process 0's decides
  with prefetch.Prefetcher(make_batch, cfg.seed) as batches:
    clock = _clock(built, cfg)
    step_at = _StepChoice(built, clock)
    plan = StepPlan(clock, cfg.max_steps, cfg.sync_steps, _sharing())
    while True:
      stop, progress = plan.next(own_stop, pending is not None, dispatched_steps)
      if stop is not None:
        break
      previous, pending = pending, None
      if progress is not None:
        batch, train_step = batches.next(), step_at(progress)
        clock.dispatched()
        params, opt_state, loss = train_step(params, opt_state, batch, np.float32(progress),
                                             built.values)
        dispatched_steps += 1
        pending = (dispatched_steps, loss)
      if previous is None:
        if pending is None:
          break
        continue
      step, loss_value = previous[0], float(previous[1])  # Waits for step t-1 only.
      seconds = clock.finished()
      loss_curve.append([round(seconds, 4), step, loss_value])
      if step == 1:
        faults.point('train')
      final_train_loss = loss_value
      if own_stop is None:
        own_stop = check_loss(loss_value, step, cfg)
      if own_stop is None and watch is not None:
        own_stop = watch(LossReading(seconds, clock.progress(seconds), step, loss_value,
                                     clock.wall_seconds()))
  params = jax.block_until_ready(jax.tree_util.tree_unflatten(params_def, params))
  return Trained(params, dispatched_steps, loss_curve, final_train_loss, clock.seconds(), stop,
                 clock.wall_seconds(), step_at.tokens)

"""The step plan: on one process the clock decides each step; on several, process 0's
plan of up to `sync_steps` steps is shared at once, and a stop counts at the next sync.
The sharing collective is replaced here by a recording identity (the two-process test
in tests/test_parallel.py runs the real one, where another process's stop is ignored)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from autoresearch.runtime import distributed
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import runner, training
from autoresearch.trial.placement import Placement
from autoresearch.trial.clocks import FixedStepClock, WallClock
from autoresearch.trial.config import TrialConfig
from autoresearch.trial.results import Stop
from autoresearch.trial.step_plan import StepPlan
from configs import tiny
from models import gpt


class _Recorder:
  """A `share` for one process, its process 0: hands its arguments back, and records
  the plans."""

  def __init__(self):
    self.calls = []

  def __call__(self, record, planned, capacity):
    assert len(planned) <= capacity
    self.calls.append(list(planned))
    return record, planned


class _FakeTime:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_wall_clock_plans_steps_a_median_step_apart_within_the_budget():
  time = _FakeTime()
  clock = WallClock(10.0, now=time)
  assert clock.plan_ahead(in_flight=False, steps=4) == [0.0]  # no duration known: one step
  clock.dispatched()
  assert clock.plan_ahead(in_flight=True, steps=4) == []      # wait for its duration
  time.now = 1.0
  clock.finished()
  time.now = 2.0
  assert clock.plan_ahead(in_flight=False, steps=4) == pytest.approx([0.2, 0.3, 0.4, 0.5])
  assert clock.plan_ahead(False, 1) == pytest.approx([clock.plan(False)[1]])
  time.now = 7.5
  assert clock.plan_ahead(in_flight=False, steps=4) == pytest.approx([0.75, 0.85])
  assert clock.plan_ahead(in_flight=False, steps=0) == []


def test_flops_clock_plans_exactly_the_steps_its_budget_holds():
  clock = FixedStepClock(1.0, step_seconds=0.25)
  assert clock.plan_ahead(False, 8) == pytest.approx([0.0, 0.25, 0.5, 0.75])
  clock.dispatched()
  assert clock.plan_ahead(True, 2) == pytest.approx([0.25, 0.5])


def test_flops_clock_charges_a_batch_warmup_s_half_steps_half():
  clock = FixedStepClock(1.0, step_seconds=0.25, warmup_step_seconds=0.125, warmup_until=0.5)
  assert clock.plan_ahead(False, 10) == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.75])
  for _ in range(5):
    clock.dispatched()
  assert clock.seconds() == pytest.approx(0.75)
  assert [clock.finished() for _ in range(5)] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.75])


def test_wall_clock_forgets_the_old_steps_durations_when_the_step_changes():
  time = _FakeTime()
  clock = WallClock(10.0, now=time)
  for end in (1.0, 2.0):   # two half steps of 1 s
    clock.dispatched()
    time.now = end
    clock.finished()
  clock.dispatched()       # the last half step, in flight when the step changes
  clock.step_changed()
  clock.dispatched()       # the first whole step
  time.now = 3.0
  clock.finished()         # the half step: its duration is not the new kind's
  assert clock.plan(in_flight=True)[0] is False   # no duration known: wait for the step
  time.now = 5.0
  clock.finished()         # the whole step, 2 s
  assert clock.plan_ahead(False, 3) == pytest.approx([0.5, 0.7])   # 9 s; 11 s does not fit


def _tiny(**changes):
  config = tiny.get_config()
  genotype = genotype_lib.from_config(config)
  step_flops = gpt.flops_per_token(genotype_lib.model_config(genotype)) * 4 * 32
  # The FLOPs clock: 12 steps of exactly known progress, on any machine.
  cfg = dataclasses.replace(TrialConfig.from_config(config), clock='flops',
                            budget_seconds=1.0, reference_flops_per_second=12 * step_flops,
                            **changes)
  return genotype, cfg


@pytest.fixture(scope='module')
def built(stdlib_corpus):
  """The tiny genotype compiled once; each run trains a copy of its initial state."""
  genotype, cfg = _tiny()
  placement = Placement.over(jax.devices()[:1], fsdp=False)
  return runner.build(genotype_lib.make(genotype), stdlib_corpus, cfg, placement), placement


def _train(built, cfg, corpus, monkeypatch, share=None, watch=None):
  monkeypatch.setattr(training, '_sharing', lambda: share)
  built, placement = built
  fresh = built._replace(params=jax.tree_util.tree_map(jnp.copy, built.params),
                         opt_state=jax.tree_util.tree_map(jnp.copy, built.opt_state))
  return training.train(fresh, corpus.train, cfg, watch, placement)


def test_a_shared_plan_trains_the_same_steps_with_one_sync_per_sync_steps(
    built, stdlib_corpus, monkeypatch):
  _, cfg = _tiny(sync_steps=4)
  alone = _train(built, cfg, stdlib_corpus, monkeypatch)
  share = _Recorder()
  shared = _train(built, cfg, stdlib_corpus, monkeypatch, share)
  assert alone.steps == shared.steps == 12 and alone.stop is shared.stop is None
  assert shared.loss_curve == alone.loss_curve  # same batches, same progresses, same losses
  # Three plans of four steps, then two empty ones while the last step is read: five
  # collectives for twelve steps, where every step used to need one.
  assert [len(p) for p in share.calls] == [4, 4, 4, 0, 0]
  assert [p for plan in share.calls for p in plan] == pytest.approx([k / 12 for k in range(12)])


def test_process_0_s_stop_counts_at_the_next_sync(built, stdlib_corpus, monkeypatch):
  _, cfg = _tiny(sync_steps=4)
  stop = Stop('hopeless', predicted_bpb=3.5)
  watch = lambda r: stop if r.step == 3 else None  # noqa: E731
  trained = _train(built, cfg, stdlib_corpus, monkeypatch, _Recorder(), watch)
  # Step 3's reading (after step 4 was dispatched) stops; the plan of steps 1-4 has
  # run out, so the next sync ends the trial, as one process would at once.
  assert trained.stop == stop and trained.steps == 4 and len(trained.loss_curve) == 3
  _, cfg = _tiny(sync_steps=6)
  trained = _train(built, cfg, stdlib_corpus, monkeypatch, _Recorder(), watch)
  # Planned steps 5 and 6 still run (and step 5 is read) before the sync that stops.
  assert trained.stop == stop and trained.steps == 6 and len(trained.loss_curve) == 5


def test_single_process_share_is_the_identity_and_checks_its_capacity():
  assert distributed.share_plan(None, [0.1, 0.2], 4) == (None, [0.1, 0.2])
  assert distributed.share_plan({'reason': 'x'}, [], 4) == ({'reason': 'x'}, [])
  with pytest.raises(ValueError, match='3 planned steps exceed the capacity 2'):
    distributed.share_plan(None, [0.0, 0.1, 0.2], 2)


def test_one_process_plan_stops_at_once_and_honours_the_step_cap():
  plan = StepPlan(FixedStepClock(1.0, step_seconds=0.1), max_steps=2, sync_steps=16)
  assert plan.next(None, False, 0) == (None, 0.0)
  assert plan.next(None, False, 2) == (None, None)       # the cap
  stop = Stop('now')
  assert plan.next(stop, True, 1) == (stop, None)
  assert plan.syncs == 0


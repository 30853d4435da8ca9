"""One trial: a genotype compiled into jitted functions, trained for a fixed budget of
training seconds, scored in validation bits per byte.

    result = runner.run(genotype, corpus, trial_config, watch=...)
    # = build (compile), train (the budget), evaluate (bits per byte), stage by stage:
    built = runner.build(genotype_lib.make(genotype), corpus, cfg, placement)
    trained = runner.train(built, corpus.train, cfg, watch, placement)
    scores = scoring.evaluate(built, trained.params, placement)

* Compilation is ahead of time (`jit(...).lower(...).compile()`), timed, and outside
  the budget; JAX's persistent compilation cache (`enable_compilation_cache`) makes a
  genotype seen before compile at once.
* Training runs until `budget_seconds` of training time are spent on the trial's clock
  (`trial.clock`: the machine's seconds, or model FLOPs at a reference rate; see
  `clocks.py`); no step is dispatched that would end past the budget. The loss of
  step t-1 is read after step t is dispatched, so the host never stalls the device;
  each batch is sampled and placed ahead of its step by a prefetch thread
  (`prefetch.Prefetcher`), in the order an inline loop would draw them.
* Every loss reading goes to `watch`, which may stop the trial (the self-evaluator and
  the preemption handler plug in there) by returning a `Stop`.
* Data-parallel over the devices given (all by default): a `jax.sharding.Mesh` with
  axes ('data', 'fsdp'); each batch is split across all devices. Parameters and
  optimizer state are replicated, or, with `fsdp`, sharded along the 'fsdp' axis (each
  array on its first dimension that divides evenly; the rest replicated). Parameters
  are float32 master weights whatever `compute_dtype` the activations use. On several
  hosts (`jax.distributed`), every process samples the same global batch and feeds its
  own devices' rows, and process 0's clock and watcher decide when to stop and at
  which progress each step runs, shared once per `sync_steps` steps rather than before
  every step (`step_plan`), so every process runs the same steps.
* val_bpb = sum of cross-entropy in nats / (ln 2 x bytes scored) over the `val_bytes`
  bytes of the val split at `windows.eval_positions` (of a document corpus, only bytes
  outside the long lines that train also holds verbatim: `Corpus.val_scorable`): the
  same bytes for every genotype, whatever its sequence length, with one host sync per
  split (`scoring.py`). No gene reaches this code path.
* A genotype that is invalid, goes NaN, explodes or fails to compile returns a result
  with status 'crash' and the reason; only KeyboardInterrupt escapes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autoresearch.data import corpora, windows
from autoresearch.runtime import distributed, faults
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import hardware, prefetch, scoring
from autoresearch.trial.clocks import make_clock
from autoresearch.trial.config import ConfigError, TrialConfig
from autoresearch.trial.results import (Built, LossReading, Scores, Trained, TrialResult, Watcher,
                                        check_loss)
from autoresearch.trial.scoring import evaluate
from autoresearch.trial.step_plan import StepPlan
from models import gpt, optim


def enable_compilation_cache(cache_dir: str, max_mb: float) -> None:
  """JAX's persistent compilation cache in `cache_dir`, caching every compiled step, at
  most `max_mb` MB: past that JAX deletes the least recently used entries (0: no
  cache). Takes effect before the process's first compile."""
  if not max_mb >= 0:
    raise ConfigError(f'compilation_cache_mb={max_mb}: MB, at least 0 (0 = no cache)')
  if max_mb == 0:
    return
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_compilation_cache_max_size', int(max_mb * 2**20))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def max_step_flops(cfg: TrialConfig, num_devices: int = 1) -> float:
  """The step-FLOPs cap of `cfg.max_step_fraction` (0: none): a step that would take
  more than that fraction of the budget, at the matmul ceiling of `num_devices` devices
  (clock 'wall') or at the reference rate (clock 'flops')."""
  if not cfg.max_step_fraction:
    return 0.0
  rate = (cfg.reference_flops_per_second if cfg.clock == 'flops' else
          num_devices * hardware.peak_flops(cfg.compute_dtype))
  return cfg.max_step_fraction * cfg.budget_seconds * rate


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a trial's arrays live: a mesh ('data', 'fsdp') over its devices."""
  mesh: Mesh

  @classmethod
  def over(cls, devices, fsdp: bool) -> 'Placement':
    devices = np.asarray(list(devices))
    shape = (1, devices.size) if fsdp else (devices.size, 1)
    return cls(Mesh(devices.reshape(shape), ('data', 'fsdp')))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    """Leading (batch) dimension split over every device."""
    return NamedSharding(self.mesh, P(('data', 'fsdp')))

  @property
  def batches(self) -> NamedSharding:
    """A stack of batches (n, N, ...): each batch's rows split over every device."""
    return NamedSharding(self.mesh, P(None, ('data', 'fsdp')))

  def state(self, abstract_tree):
    """Shardings of a parameter or optimizer-state tree: replicated, or with `fsdp` each
    array split on its first dimension divisible by the number of devices."""
    n = self.mesh.shape['fsdp']

    def sharding(leaf):
      shape = getattr(leaf, 'shape', ())
      for axis, size in enumerate(shape):
        if n > 1 and size % n == 0:
          return NamedSharding(self.mesh, P(*([None] * axis), 'fsdp'))
      return self.replicated
    return jax.tree_util.tree_map(sharding, abstract_tree)

  def put(self, array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds whole (each process
    transfers only its own devices' part)."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _loss_fn(graphdef, params, batch_BxT1, progress):
  """(the loss minimised, the next-byte cross-entropy reported): `GPT.train_loss`."""
  return nnx.merge(graphdef, params).train_loss(batch_BxT1, progress)


def make_train_step(graphdef, tx, optim_cfg: optim.OptimConfig, micro_batches: int,
                    shardings: Optional[tuple] = None):
  """(params, opt_state, batch uint8 (B, T+1), progress) -> (params, opt_state, loss).
  With micro_batches > 1 the gradient is accumulated over equal slices of the batch
  (rows i, i + m, i + 2m, ... form slice i, so a batch split over devices splits each
  slice alike). `shardings`: (params, opt_state, batch) shardings, or None."""
  grad_fn = jax.value_and_grad(lambda p, b, progress: _loss_fn(graphdef, p, b, progress),
                               has_aux=True)

  def step(params, opt_state, batch, progress):
    if micro_batches == 1:
      (_, loss), grads = grad_fn(params, batch, progress)
    else:
      slices = batch.reshape(-1, micro_batches, batch.shape[-1]).swapaxes(0, 1)

      def accumulate(carry, micro):
        loss_sum, grad_sum = carry
        (_, loss), grads = grad_fn(params, micro, progress)
        return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, grad_sum, grads)), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
      (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros(()), zeros), slices)
      loss = loss / micro_batches
      grads = jax.tree_util.tree_map(lambda g: g / micro_batches, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = optim.scale_updates(updates, optim.lr_multiplier(progress, optim_cfg))
    return optax.apply_updates(params, updates), opt_state, loss

  if shardings is None:
    return jax.jit(step, donate_argnums=(0, 1))
  params_sh, opt_sh, batch_sh = shardings
  scalar = NamedSharding(batch_sh.mesh, P())
  return jax.jit(step, donate_argnums=(0, 1), in_shardings=(params_sh, opt_sh, batch_sh, scalar),
                 out_shardings=(params_sh, opt_sh, scalar))


def _check_batching(genotype, cfg: TrialConfig, num_devices: int) -> int:
  """Micro-batches per step; InvalidGenotype if the batch does not split evenly."""
  batch_size = genotype['batch_size']
  micro = cfg.micro_batch_size or batch_size
  if batch_size % micro:
    raise genotype_lib.InvalidGenotype(
        f'batch_size={batch_size} is not a multiple of micro_batch_size={micro}')
  if micro % num_devices:
    name = 'micro_batch_size' if micro < batch_size else 'batch_size'
    raise genotype_lib.InvalidGenotype(
        f'{name}={micro} is not divisible by {num_devices} devices')
  return batch_size // micro


def build(genotype: genotype_lib.Genotype, corpus: corpora.Corpus, cfg: TrialConfig,
          placement: Placement, score_test: bool = False) -> Built:
  """Initial state and both steps of a (made) genotype compiled ahead of time for
  `placement`, timed: everything a trial does before its clock starts."""
  model_cfg = gpt.resolve_attention(dataclasses.replace(
      genotype_lib.model_config(genotype, cfg.compute_dtype), attention=cfg.attention))
  optim_cfg = genotype_lib.optim_config(genotype)
  batch_size, seq_len = genotype['batch_size'], genotype['seq_len']
  micro_batches = _check_batching(genotype, cfg, placement.num_devices)

  # Abstract shapes first, then compile everything before the clock starts.
  compile_start = time.perf_counter()
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: gpt.GPT(model_cfg, nnx.Rngs(0))))
  tx = optim.build(optim_cfg, abstract_params)
  params_sh = placement.state(abstract_params)
  opt_sh = placement.state(jax.eval_shape(tx.init, abstract_params))
  init = jax.jit(lambda key: nnx.state(gpt.GPT(model_cfg, nnx.Rngs(key))), out_shardings=params_sh)
  params = init(jax.random.key(cfg.seed))
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  batch_spec = jax.ShapeDtypeStruct((batch_size, seq_len + 1), jnp.uint8)
  progress_spec = jax.ShapeDtypeStruct((), jnp.float32)
  train_step = make_train_step(graphdef, tx, optim_cfg, micro_batches,
                               (params_sh, opt_sh, placement.batch)).lower(
      params, opt_state, batch_spec, progress_spec).compile()
  eval_sets = scoring.eval_sets(corpus, cfg.val_bytes, cfg.eval_batch_tokens, seq_len,
                                placement.num_devices, score_test)
  eval_step = scoring.make_eval_step(graphdef, (params_sh, placement.batches)).lower(
      params, *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in eval_sets['val'])).compile()
  compile_seconds = time.perf_counter() - compile_start
  return Built(train_step=train_step, eval_step=eval_step, params=params, opt_state=opt_state,
               eval_sets=eval_sets, model_cfg=model_cfg, optim_cfg=optim_cfg,
               batch_size=batch_size, seq_len=seq_len, compile_seconds=compile_seconds,
               num_params=sum(x.size for x in jax.tree_util.tree_leaves(params)),
               memory_gb=hardware.compiled_memory_gb(train_step))


def run(genotype: genotype_lib.Genotype, corpus: corpora.Corpus, cfg: TrialConfig,
        watch: Optional[Watcher] = None, score_test: bool = False,
        devices: Optional[list] = None) -> TrialResult:
  """Compile, train for `cfg.budget_seconds`, score val_bpb (and, with `score_test`,
  the same number of bytes of the test split) on `devices` (default: all, of every
  process); never raises for a bad genotype. A crash keeps what the stages before it
  measured."""
  start = time.perf_counter()
  gid = genotype_lib.genotype_id(genotype) if _in_space(genotype) else 'invalid'
  result = TrialResult(genotype_id=gid, genotype=dict(genotype), status='crash',
                       device_kind=hardware.device_kind(), clock=cfg.clock,
                       data_fingerprint=corpus.fingerprint)
  try:
    placement = Placement.over(devices or jax.devices(), cfg.fsdp)
    genotype_lib.check(genotype, cfg.max_params, max_step_flops(cfg, placement.num_devices))
    faults.point('mid-compile')
    built = build(genotype_lib.make(genotype), corpus, cfg, placement, score_test)
    result = dataclasses.replace(result, compile_seconds=built.compile_seconds,
                                 params=built.num_params, peak_memory_gb=built.memory_gb)
    trained = train(built, corpus.train, cfg, watch, placement)
    result = _with_training(result, built, trained, cfg, placement.num_devices)
    if trained.stop is None:
      faults.point('mid-eval')
      result = _with_scores(result, built, evaluate(built, trained.params, placement))
  except genotype_lib.InvalidGenotype as e:
    result = dataclasses.replace(result, status='crash', reason=f'invalid genotype: {e}')
  except Exception as e:  # A bad genotype must never stop the search.
    logging.warning('trial %s crashed:\n%s', gid, traceback.format_exc())
    first_line = (str(e).strip().splitlines() or [''])[0][:300]
    result = dataclasses.replace(result, status='crash', reason=f'{type(e).__name__}: {first_line}')
  return dataclasses.replace(result, total_seconds=time.perf_counter() - start)


def _in_space(genotype) -> bool:
  try:
    genotype_lib.make(genotype)
    return True
  except genotype_lib.InvalidGenotype:
    return False


def _with_training(result: TrialResult, built: Built, trained: Trained, cfg: TrialConfig,
                   num_devices: int) -> TrialResult:
  """`result` with the training figures; status and reason from the stop, if any."""
  tokens = trained.steps * built.batch_size * built.seq_len
  mfu_percent = 0.0
  if trained.wall_seconds > 0:  # the machine's rate, whatever the clock
    flops = gpt.flops_per_token(built.model_cfg) * tokens / trained.wall_seconds
    mfu_percent = 100.0 * flops / (num_devices * hardware.peak_flops(cfg.compute_dtype))
  result = dataclasses.replace(
      result, steps=trained.steps, tokens=tokens, mfu_percent=mfu_percent,
      loss_curve=trained.loss_curve, final_train_loss=trained.final_train_loss,
      train_seconds=trained.train_seconds, wall_train_seconds=trained.wall_seconds)
  if trained.stop is None:
    return result
  stop = trained.stop
  return dataclasses.replace(result, status=stop.status, reason=stop.reason,
                             predicted_bpb=stop.predicted_bpb)


def _with_scores(result: TrialResult, built: Built, scores: Scores) -> TrialResult:
  """`result` scored: 'ok', or 'crash' on a non-finite val_bpb."""
  val_bpb = scores.bpb['val']
  status, reason = ('ok', '') if math.isfinite(val_bpb) else ('crash', f'val_bpb is {val_bpb}')
  return dataclasses.replace(
      result, status=status, reason=reason, val_bpb=val_bpb, test_bpb=scores.bpb.get('test'),
      eval_seconds=scores.eval_seconds, val_bytes_scored=int(built.eval_sets['val'][2].sum()))


def _sharing():
  """How process 0's step plan reaches the others: None on a single process."""
  return distributed.share_plan if jax.process_count() > 1 else None


def train(built: Built, train_split: np.ndarray, cfg: TrialConfig, watch: Optional[Watcher],
          placement: Placement) -> Trained:
  """The budgeted loop from `built`'s initial state (donated): step t is dispatched
  before step t-1's loss is read, if the plan (`step_plan.StepPlan`: the clock, and on
  several hosts process 0's plan shared every `cfg.sync_steps` steps) says it runs;
  its batch was sampled and placed ahead by a prefetch thread; every reading goes to
  `watch`."""
  train_step, params, opt_state = built.train_step, built.params, built.opt_state
  batch_size, seq_len = built.batch_size, built.seq_len

  def make_batch(rng):
    return placement.put(windows.sample_batch(rng, train_split, batch_size, seq_len),
                         placement.batch)
  loss_curve, final_train_loss = [], None
  pending = None   # (step index, loss array): dispatched, not yet read
  dispatched_steps = 0
  own_stop = None  # this process's watcher or loss check; process 0's decides
  with prefetch.Prefetcher(make_batch, cfg.seed) as batches:
    clock = make_clock(cfg, gpt.flops_per_token(built.model_cfg) * batch_size * seq_len)
    plan = StepPlan(clock, cfg.max_steps, cfg.sync_steps, _sharing())
    while True:
      stop, progress = plan.next(own_stop, pending is not None, dispatched_steps)
      if stop is not None:
        break
      previous, pending = pending, None
      if progress is not None:
        batch = batches.next()
        clock.dispatched()
        params, opt_state, loss = train_step(params, opt_state, batch, np.float32(progress))
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
  jax.block_until_ready(params)
  return Trained(params, dispatched_steps, loss_curve, final_train_loss, clock.seconds(), stop,
                 clock.wall_seconds())

"""One trial: a genotype compiled into jitted functions, trained for a fixed budget of
training seconds, scored in validation bits per byte.

    result = runner.run(genotype, corpus, trial_config, watch=...)
    # = build (compile), train (the budget), evaluate (bits per byte), stage by stage:
    built = runner.build(genotype_lib.make(genotype), corpus, cfg, placement)
    trained = training.train(built, corpus.train, cfg, watch, placement)
    scores = scoring.evaluate(built, trained.params, placement)

* Compilation is ahead of time (`jit(...).lower(...).compile()`), timed, and outside
  the budget. A genotype that differs from one built before only in the recipe's
  numbers (learning rates, betas, decay, clip, schedule) reuses its compiled programs
  from the process's cache (`programs.py`), the numbers being inputs of the train step;
  JAX's persistent compilation cache (`enable_compilation_cache`) spares the backend
  compile of a program seen in an earlier process.
* Training (`training.py`) runs until `budget_seconds` of training time are spent on
  the trial's clock (`trial.clock`: the machine's seconds, or model FLOPs at a
  reference rate; see `clocks.py`). Every loss reading goes to `watch`, which may stop
  the trial (the self-evaluator and the preemption handler plug in there) by returning
  a `Stop`.
* Data-parallel over the devices given (all by default; `placement.py`): each batch is
  split across all devices; parameters and optimizer state are replicated or, with
  `fsdp`, sharded. Parameters are float32 master weights whatever `compute_dtype` the
  activations use. On several hosts (`jax.distributed`), every process samples the
  same global batch and feeds its own devices' rows, and process 0's clock and watcher
  decide when to stop and at which progress each step runs, shared once per
  `sync_steps` steps rather than before every step (`step_plan`), so every process runs
  the same steps.
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
from absl import logging
from flax import nnx

from autoresearch.data import corpora
from autoresearch.runtime import faults
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial import hardware, programs, scoring
from autoresearch.trial.config import ConfigError, TrialConfig
from autoresearch.trial.placement import Placement
from autoresearch.trial.programs import ProgramKey, Programs
from autoresearch.trial.results import Built, Scores, Trained, TrialResult, Watcher
from autoresearch.trial.scoring import evaluate
from autoresearch.trial.steps import make_train_step
from autoresearch.trial.training import train
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
  (clock 'wall'), at the reference rate (clock 'flops') or at the modelled clock's
  rate of FLOPs (clock 'modelled': 1 / its seconds per FLOP; a cap on FLOPs alone, as
  the agents' edit masks check it, so the step's other costs are not in it)."""
  if not cfg.max_step_fraction:
    return 0.0
  per_flop = dict(cfg.step_cost).get('flops', 0.0)
  if cfg.clock == 'modelled' and per_flop > 0:
    rate = 1.0 / per_flop
  elif cfg.clock == 'flops':
    rate = cfg.reference_flops_per_second
  else:
    rate = num_devices * hardware.peak_flops(cfg.compute_dtype)
  return cfg.max_step_fraction * cfg.budget_seconds * rate


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
  if genotype['batch_warmup'] and micro == batch_size and (batch_size // 2) % num_devices:
    raise genotype_lib.InvalidGenotype(
        f'batch_warmup: half of batch_size={batch_size} is not divisible by {num_devices} devices')
  return batch_size // micro


def _compile_all(key: ProgramKey, placement: Placement) -> Programs:
  """Every program of `key` compiled ahead of time for `placement`, from abstract shapes."""
  model_cfg, optim_program = key.model_cfg, key.optim_program
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: gpt.GPT(model_cfg, nnx.Rngs(0))))
  tx = optim.build(optim_program, abstract_params)
  params_sh = placement.state(abstract_params)
  opt_sh = placement.state(jax.eval_shape(tx.init, abstract_params))
  init_params = jax.jit(lambda seed: nnx.state(gpt.GPT(model_cfg, nnx.Rngs(jax.random.key(seed)))),
                        in_shardings=placement.replicated, out_shardings=params_sh).lower(
      jax.ShapeDtypeStruct((), jnp.int32)).compile()
  init_opt_state = jax.jit(tx.init, in_shardings=(params_sh,), out_shardings=opt_sh).lower(
      abstract_params).compile()
  # The steps take the state as lists of leaves (`steps.make_train_step(flat=True)`).
  specs = (jax.tree_util.tree_leaves(abstract_params),
           jax.tree_util.tree_leaves(jax.eval_shape(tx.init, abstract_params)),
           jax.ShapeDtypeStruct((key.batch_shape[0], key.batch_shape[1] + 1), jnp.uint8),
           jax.ShapeDtypeStruct((), jnp.float32),
           {name: jax.ShapeDtypeStruct((), jnp.float32) for name in optim.RUNTIME_FIELDS})
  shardings = (params_sh, opt_sh, placement.batch)
  train_step = make_train_step(graphdef, optim_program, key.micro_batches, shardings,
                               flat=True).lower(*specs).compile()
  warmup_step = None
  if key.half_batch_step:
    warmup_step = make_train_step(graphdef, optim_program, max(1, key.micro_batches // 2),
                                  shardings, half_batch=True, flat=True).lower(*specs).compile()
  eval_step = scoring.make_eval_step(graphdef, (params_sh, placement.batches)).lower(
      abstract_params, *(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in key.eval_specs)
  ).compile()
  return Programs(graphdef, init_params, init_opt_state, train_step, warmup_step, eval_step,
                  hardware.compiled_memory_gb(train_step))


def build(genotype: genotype_lib.Genotype, corpus: corpora.Corpus, cfg: TrialConfig,
          placement: Placement, score_test: bool = False) -> Built:
  """Initial state and every step of a (made) genotype, compiled ahead of time for
  `placement` or taken from the programs of a genotype that differs only in numbers
  (`programs.py`): everything a trial does before its clock starts."""
  model_cfg = gpt.resolve_attention(dataclasses.replace(
      genotype_lib.model_config(genotype, cfg.compute_dtype), attention=cfg.attention))
  optim_cfg = genotype_lib.optim_config(genotype)
  batch_size, seq_len = genotype['batch_size'], genotype['seq_len']
  micro_batches = _check_batching(genotype, cfg, placement.num_devices)
  eval_sets = scoring.eval_sets(corpus, cfg.val_bytes, cfg.eval_batch_tokens, seq_len,
                                placement.num_devices, score_test)
  key = ProgramKey(model_cfg, optim.program_config(optim_cfg), (batch_size, seq_len),
                   micro_batches, bool(genotype['batch_warmup']),
                   tuple((a.shape, str(a.dtype)) for a in eval_sets['val']),
                   (tuple(d.id for d in placement.mesh.devices.flat), placement.mesh.devices.shape))
  compiled, compile_seconds, _ = programs.compiled(key, lambda: _compile_all(key, placement),
                                                   cfg.program_cache_entries)
  params = compiled.init_params(placement.put(np.asarray(cfg.seed, np.int32), placement.replicated))
  opt_state = compiled.init_opt_state(params)
  values = {name: placement.put(np.asarray(value), placement.replicated)
            for name, value in optim.runtime_values(optim_cfg).items()}
  return Built(train_step=compiled.train_step, eval_step=compiled.eval_step, params=params,
               opt_state=opt_state, eval_sets=eval_sets, model_cfg=model_cfg,
               optim_cfg=optim_cfg, batch_size=batch_size, seq_len=seq_len,
               compile_seconds=compile_seconds,
               num_params=sum(x.size for x in jax.tree_util.tree_leaves(params)),
               memory_gb=compiled.memory_gb, values=values,
               warmup_step=compiled.warmup_step, warmup_until=genotype['batch_warmup'])


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
  tokens = trained.tokens
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



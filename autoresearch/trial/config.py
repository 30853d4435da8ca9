"""A trial's settings (`config.trial`) and the rules they must meet: nonsense values
raise ConfigError naming each field, before any file is written. No JAX here."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Mapping


CLOCKS = ('wall', 'flops', 'modelled')
# What `trial.step_cost` may charge for (autoresearch/trial/step_cost.py; no JAX here).
STEP_COST_FEATURES = ('step', 'layer', 'flops', 'scores', 'residual', 'hidden', 'extra', 'logits',
                      'softcap', 'param', 'table', 'cautious', 'muon')
COMPUTE_DTYPES = ('float32', 'bfloat16')
ATTENTIONS = ('auto', 'explicit', 'xla', 'cudnn')  # models.attention.ATTENTIONS (no JAX here)


class ConfigError(ValueError):
  """Trial settings no trial can run with; the message names each field and why."""


def _finite(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _nonnegative_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0


# field -> (rule, what the field must be). budget_seconds 0 (in code only: the initial
# parameters scored) passes here; `from_config` asks for > 0.
_RULES = {
    'budget_seconds': (lambda x: _finite(x) and x >= 0, 'a finite number of seconds > 0'),
    'val_bytes': (lambda x: _nonnegative_int(x) and x > 0, 'a whole number of bytes > 0'),
    'eval_batch_tokens': (lambda x: _nonnegative_int(x) and x > 0,
                          'a whole number of tokens > 0'),
    'max_params': (_nonnegative_int, 'a whole number >= 0 (0: no cap)'),
    'max_step_fraction': (lambda x: _finite(x) and x >= 0, 'a finite fraction >= 0 (0: no cap)'),
    'max_loss': (lambda x: isinstance(x, numbers.Real) and x > 0, 'a number of nats > 0'),
    'micro_batch_size': (_nonnegative_int, 'a whole number >= 0 (0: the whole batch)'),
    'compute_dtype': (lambda x: x in COMPUTE_DTYPES, f'one of {COMPUTE_DTYPES}'),
    'max_steps': (_nonnegative_int, 'a whole number >= 0 (0: no cap)'),
    'clock': (lambda x: x in CLOCKS, f'one of {CLOCKS}'),
    'reference_flops_per_second': (lambda x: _finite(x) and x > 0, 'a finite FLOP/s > 0'),
    'attention': (lambda x: x in ATTENTIONS, f'one of {ATTENTIONS}'),
    'sync_steps': (lambda x: _nonnegative_int(x) and x > 0, 'a whole number of steps > 0'),
    'program_cache_entries': (_nonnegative_int, 'a whole number >= 0 (0: none kept)'),
    'step_cost': (lambda x: _step_cost(x),
                  f'seconds >= 0 per unit of some of {STEP_COST_FEATURES}, not all 0'),
}


@dataclasses.dataclass(frozen=True)
class TrialConfig:
  """How every trial of a search is run. Defaults live in configs/default.py only.
  Nonsense settings raise ConfigError when the config is made."""
  budget_seconds: float      # training seconds per trial on `clock` (compile and eval excluded)
  val_bytes: int             # bytes of the val split scored, same for every genotype
  eval_batch_tokens: int     # tokens per evaluation batch (memory, not results)
  max_params: int            # parameter cap of a genotype; 0: none
  max_step_fraction: float   # refuse a step over this x budget at the ceiling (or rate); 0: none
  max_loss: float            # nats; a training loss above this is an explosion
  micro_batch_size: int      # sequences per forward/backward; 0: the whole batch
  compute_dtype: str         # activations dtype ('float32' or 'bfloat16')
  fsdp: bool                 # shard parameters and optimizer state over the devices
  max_steps: int             # stop after this many steps even within the budget; 0: none
  seed: int                  # parameter init and batch sampling
  clock: str                 # what a training second is: 'wall' | 'flops' | 'modelled' (clocks.py)
  reference_flops_per_second: float  # FLOP/s; under clock='flops' a second is this many FLOPs
  attention: str             # attention kernel: 'auto' (the backend's faster) | explicit |
                             # xla | cudnn
  sync_steps: int            # steps; on several hosts process 0's plan is shared once per this many
  program_cache_entries: int  # genotypes whose compiled programs stay in memory (programs.py)
  # Under clock='modelled', a step's seconds per unit of each feature (step_cost.py), as
  # sorted (feature, seconds) pairs; a mapping given here is turned into them.
  step_cost: tuple

  def __post_init__(self):
    if isinstance(self.step_cost, Mapping):
      object.__setattr__(self, 'step_cost', tuple(sorted(
          (str(k), v) for k, v in self.step_cost.items())))
    problems = [f'trial.{name}={getattr(self, name)!r} must be {what}'
                for name, (rule, what) in _RULES.items() if not _holds(rule, getattr(self, name))]
    if problems:
      raise ConfigError('; '.join(problems))

  @classmethod
  def from_config(cls, config) -> 'TrialConfig':
    """From the `trial` part of an ml_collections config (e.g. configs/default.py);
    ConfigError, naming the fields, for nonsense settings (a budget of 0 too)."""
    settings = config.trial.to_dict()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
      raise ConfigError(f'unknown trial settings: {", ".join(unknown)}')
    try:
      cfg = cls(**settings)
    except TypeError as e:  # a field missing
      raise ConfigError(f'trial settings: {e}') from None
    if not cfg.budget_seconds > 0:
      raise ConfigError(f'trial.budget_seconds={cfg.budget_seconds!r} must be '
                        f'{_RULES["budget_seconds"][1]}')
    return cfg


def _step_cost(x) -> bool:
  return (isinstance(x, tuple) and bool(x) and all(
      name in STEP_COST_FEATURES and _finite(c) and c >= 0 for name, c in x)
      and any(c > 0 for _, c in x))


def _holds(rule, value) -> bool:
  try:
    return bool(rule(value))
  except TypeError:  # e.g. a string where a number belongs
    return False

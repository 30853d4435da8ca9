"""The search space as data: genes, their ordered value sets, validity, ids and diffs.

A genotype is the whole recipe of one trial: the architecture switches of
`models.gpt.GPTConfig`, the optimizer recipe of `autoresearch.optim.OptimConfig`, and
the batch (sequences per step, sequence length). Every gene takes one value of a
finite ordered set, so every proposal is cheap to describe and compiles; `check`
refuses the combinations that cannot be built, with a reason.

The baseline genotype lives in the config (`config.genotype`, overridable with
`--config.genotype.d_model=192`, or loaded from JSON with `config.genotype_json`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Mapping, Optional

import numpy as np

from autoresearch.space import builds
from models import gpt, optim


@dataclasses.dataclass(frozen=True)
class Gene:
  name: str
  values: tuple           # ordered: neighbouring values are neighbouring recipes
  part: str               # 'model', 'optim' or 'train'
  # A gene added after genotypes were first recorded: the value it takes where a genotype
  # (an old ledger row, a best_genotype.json) lacks it, which builds what was built before
  # the gene existed. None: every genotype names the gene.
  default: Any = None


_LR = (1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2, 6e-2, 1e-1)

GENES: tuple[Gene, ...] = (
    # Architecture.
    Gene('n_layers', (1, 2, 3, 4, 6, 8, 12, 16), 'model'),
    Gene('d_model', (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024), 'model'),
    Gene('n_heads', (1, 2, 3, 4, 6, 8, 12, 16), 'model'),
    Gene('n_kv_heads', (1, 2, 3, 4, 6, 8, 12, 16), 'model'),
    Gene('position', ('rope', 'learned'), 'model'),
    Gene('rope_base', (1e3, 1e4, 1e5, 5e5, 1e6), 'model'),
    Gene('qk_norm', (False, True), 'model'),
    Gene('window_pattern', ('L', 'SL', 'SSL', 'SSSL'), 'model'),
    Gene('short_window', (16, 32, 64, 128, 256, 512, 1024), 'model'),
    Gene('value_embeds', (False, True), 'model'),
    Gene('activation', ('relu2', 'gelu', 'swiglu'), 'model'),
    Gene('mlp_ratio', (1.0, 2.0, 2.5, 3.0, 4.0, 6.0), 'model'),
    Gene('norm', ('rms', 'rms_scale', 'layernorm'), 'model'),
    Gene('residual_mix', (False, True), 'model'),
    Gene('logit_softcap', (0.0, 10.0, 15.0, 30.0), 'model'),
    Gene('tie_embeddings', (False, True), 'model'),
    Gene('zero_init_proj', (False, True), 'model'),
    # Optimizer recipe.
    Gene('optimizer', ('adamw', 'muon'), 'optim'),
    Gene('matrix_lr', _LR, 'optim'),
    Gene('muon_lr', (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.08), 'optim'),
    Gene('muon_momentum', (0.85, 0.9, 0.95, 0.98), 'optim'),
    Gene('embed_lr', _LR + (0.3, 0.6), 'optim'),
    Gene('head_lr', _LR, 'optim'),
    Gene('scalar_lr', _LR + (0.3,), 'optim'),
    Gene('beta1', (0.8, 0.85, 0.9, 0.95), 'optim'),
    Gene('beta2', (0.95, 0.98, 0.99, 0.999), 'optim'),
    Gene('weight_decay', (0.0, 0.01, 0.05, 0.1, 0.2), 'optim'),
    Gene('grad_clip', (0.0, 0.5, 1.0, 2.0), 'optim'),
    Gene('warmup_frac', (0.0, 0.01, 0.02, 0.05, 0.1), 'optim'),
    Gene('warmdown_frac', (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0), 'optim'),
    Gene('final_lr_frac', (0.0, 0.05, 0.1, 0.3), 'optim'),
    # Batch.
    Gene('batch_size', (4, 8, 16, 32, 64, 128, 256, 512), 'train'),
    Gene('seq_len', (32, 64, 128, 256, 512, 1024, 2048), 'train'),
    # Later records of the modded-nanogpt speedrun (models/gpt.py, models/optim.py); last,
    # so the genes before them keep their indices in recorded edits.
    Gene('unet_skips', (False, True), 'model', default=False),
    Gene('window_warmup', (0.0, 0.25, 0.5, 1.0), 'model', default=0.0),
    Gene('bigram_buckets', (0, 1024, 4096, 16384), 'model', default=0),
    Gene('mtp_weight', (0.0, 0.1, 0.3, 0.5), 'model', default=0.0),
    Gene('cautious_wd', (False, True), 'optim', default=False),
    Gene('normuon', (False, True), 'optim', default=False),
    # The fraction of the budget that trains on half of each batch, at 1/sqrt(2) of the
    # learning rate (a batch-size warmup; record 46, whose stages grow the batch 8 -> 16
    # -> 24 and the LR about as batch^0.5).
    Gene('batch_warmup', (0.0, 0.25, 0.5, 0.75), 'train', default=0.0),
)
GENE_BY_NAME: dict[str, Gene] = {g.name: g for g in GENES}
# Genes the training loop reads and building the model and optimizer does not.
TRAIN_ONLY_GENES = ('batch_size', 'batch_warmup')
N_GENES = len(GENES)
MAX_VALUES = max(len(g.values) for g in GENES)
GENOME_DIM = sum(len(g.values) for g in GENES) + N_GENES  # one-hot + ordinal per gene

Genotype = Mapping[str, Any]
"""A genotype is a read-only mapping gene name -> value; see `make`."""


class InvalidGenotype(ValueError):
  """A genotype that cannot be trained; the message is the reason."""


def _canonical(gene: Gene, value):
  """`value` as the exact member of the gene's set (so 1e4 == 10000.0 == '1e4'), or
  raises InvalidGenotype naming the allowed values."""
  for allowed in gene.values:
    if isinstance(allowed, bool) or isinstance(value, bool):
      if isinstance(value, bool) and isinstance(allowed, bool) and value == allowed:
        return allowed
      continue
    if isinstance(allowed, str):
      if value == allowed:
        return allowed
      continue
    try:
      if float(value) == float(allowed):
        return allowed
    except (TypeError, ValueError):
      pass
  raise InvalidGenotype(f'{gene.name}={value!r} is not one of {list(gene.values)}')


LATER_DEFAULTS = {g.name: g.default for g in GENES if g.default is not None}


def complete(genotype: Genotype) -> dict[str, Any]:
  """`genotype` with the genes added later that it lacks at their defaults (a genotype
  of an old ledger or checkpoint), without canonicalising it (`make` does that)."""
  return {**LATER_DEFAULTS, **genotype}


def make(values: Mapping[str, Any]) -> dict[str, Any]:
  """A genotype from a mapping of every gene to a value of its set (canonicalised); a
  gene added later (`Gene.default`) that the mapping lacks takes its default. Raises
  InvalidGenotype on a missing, unknown or out-of-set gene."""
  unknown = sorted(set(values) - set(GENE_BY_NAME))
  values = complete(values)
  missing = [g.name for g in GENES if g.name not in values]
  if unknown:
    raise InvalidGenotype(f'unknown genes {unknown}; known: {list(GENE_BY_NAME)}')
  if missing:
    raise InvalidGenotype(f'missing genes {missing}')
  return {g.name: _canonical(g, values[g.name]) for g in GENES}


def from_config(config) -> dict[str, Any]:
  """The baseline genotype of an ml_collections config: `config.genotype`, updated by
  the JSON file `config.genotype_json` when that is set."""
  values = dict(config.genotype)
  path = config.get('genotype_json', '')
  if path:
    try:
      with open(path) as f:
        loaded = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise InvalidGenotype(f'cannot read genotype JSON {path}: {e}') from e
    if not isinstance(loaded, dict):
      raise InvalidGenotype(f'genotype JSON {path} must hold an object of gene: value')
    values.update(loaded)
  return make(values)


def to_json(genotype: Genotype) -> str:
  return json.dumps(dict(genotype), sort_keys=True)


def genotype_id(genotype: Genotype) -> str:
  """A stable 12-hex-digit id: sha256 of the canonical JSON, without the genes added
  later that are at their default (so a genotype keeps the id it had before them)."""
  genotype = make(genotype)
  named = {g.name: genotype[g.name] for g in GENES
           if g.default is None or genotype[g.name] != g.default}
  return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:12]


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  return str(value)


def describe_diff(genotype: Genotype, reference: Genotype) -> str:
  """One line naming the genes that differ, e.g. 'n_kv_heads 4->1, rope_base 1e+04->2e+05'."""
  genotype, reference = complete(genotype), complete(reference)
  changes = [f'{g.name} {_fmt(reference[g.name])}->{_fmt(genotype[g.name])}'
             for g in GENES if genotype[g.name] != reference[g.name]]
  return ', '.join(changes) if changes else 'baseline'


def _fields(cls, genotype: Genotype, **extra):
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in genotype.items() if k in names}, **extra)


def model_config(genotype: Genotype, compute_dtype: str = 'float32') -> gpt.GPTConfig:
  return _fields(gpt.GPTConfig, genotype, compute_dtype=compute_dtype)


def optim_config(genotype: Genotype) -> optim.OptimConfig:
  return _fields(optim.OptimConfig, genotype)


def step_flops(genotype: Genotype) -> float:
  """Training FLOPs of one optimizer step (matmuls; see `gpt.flops_per_token`)."""
  return gpt.flops_per_token(model_config(genotype)) * genotype['batch_size'] * genotype['seq_len']


def check(genotype: Genotype, max_params: int = 0, max_step_flops: float = 0.0) -> None:
  """Raises InvalidGenotype with the reason when the genotype cannot be trained:
  out-of-set values, heads not dividing d_model, kv heads not dividing heads, a
  short window longer than the sequence, more than `max_params` parameters, or more
  than `max_step_flops` FLOPs per optimizer step (too slow for the budget; 0: no cap)."""
  genotype = make(genotype)
  cfg = model_config(genotype)
  try:
    gpt.validate(cfg)
  except ValueError as e:
    raise InvalidGenotype(str(e)) from e
  if max_params:
    n = gpt.count_params(cfg)
    if n > max_params:
      raise InvalidGenotype(f'{n:,} parameters exceed the cap of {max_params:,}')
  if max_step_flops:
    flops = step_flops(genotype)
    if flops > max_step_flops:
      raise InvalidGenotype(f'{flops:.3g} FLOPs per step exceed the cap of {max_step_flops:.3g} '
                            '(too slow for the budget)')


def is_valid(genotype: Genotype, max_params: int = 0,
             max_step_flops: float = 0.0) -> tuple[bool, str]:
  """(True, '') or (False, reason)."""
  try:
    check(genotype, max_params, max_step_flops)
  except InvalidGenotype as e:
    return False, str(e)
  return True, ''


# --- Edits: one gene set to another value of its set. ---------------------------------


def value_index(genotype: Genotype, name: str) -> int:
  return GENE_BY_NAME[name].values.index(complete(genotype)[name])


def apply_edit(genotype: Genotype, gene_index: int, value_index_: int) -> dict[str, Any]:
  """A copy of `genotype` with gene `gene_index` set to its value `value_index_`."""
  gene = GENES[gene_index]
  if not 0 <= value_index_ < len(gene.values):
    raise InvalidGenotype(f'{gene.name} has no value #{value_index_}')
  return dict(complete(genotype), **{gene.name: gene.values[value_index_]})


def describe_edit(genotype: Genotype, gene_index: int, value_index_: int) -> str:
  """'n_layers 2->3': the edit as karpathy/autoresearch's ledger describes a change."""
  gene = GENES[gene_index]
  return f'{gene.name} {_fmt(genotype[gene.name])}->{_fmt(gene.values[value_index_])}'


@functools.lru_cache(maxsize=16384)
def _reads(genotype_json: str) -> Optional[builds.Reads]:
  """What building the genotype reads; None when it does not build."""
  genotype = json.loads(genotype_json)
  try:
    return builds.build_reads(model_config(genotype), optim_config(genotype),
                              (genotype['batch_size'], genotype['seq_len']))
  except ValueError:
    return None


def trains_alike(genotype: Genotype, other: Genotype) -> bool:
  """Whether the two genotypes build the same model, optimizer, schedule and batch
  (`builds.py`: what building `genotype` reads, `other` answers alike)."""
  genotype, other = complete(genotype), complete(other)
  reads = _reads(to_json(genotype))
  if reads is None or any(genotype[name] != other[name] for name in TRAIN_ONLY_GENES):
    return False   # what does not build is not alike anything
  return builds.builds_alike(reads, model_config(other), optim_config(other))


def edit_mask(genotype: Genotype, max_params: int = 0, max_step_flops: float = 0.0) -> np.ndarray:
  """bool (N_GENES, MAX_VALUES): True where setting the gene to that value gives a
  valid genotype that trains differently (edits that build the same training as the
  genotype, e.g. of a gene nothing reads, are False, as are the padding slots past a
  gene's value set). Memoised (a search asks for the same best's mask many times)."""
  return _edit_mask(to_json(complete(genotype)), max_params, max_step_flops).copy()


@functools.lru_cache(maxsize=16384)
def _edit_mask(genotype_json: str, max_params: int, max_step_flops: float) -> np.ndarray:
  genotype = json.loads(genotype_json)
  mask = np.zeros((N_GENES, MAX_VALUES), bool)
  for i, gene in enumerate(GENES):
    current = genotype[gene.name]
    for j, value in enumerate(gene.values):
      if value != current:
        child = dict(genotype, **{gene.name: value})
        mask[i, j] = (is_valid(child, max_params, max_step_flops)[0] and
                      not trains_alike(genotype, child))
  return mask


def encode(genotype: Genotype) -> np.ndarray:
  """float32 (GENOME_DIM,): per gene a one-hot of its value and its ordinal position
  in [0, 1] (neighbouring values are neighbouring recipes)."""
  genotype = complete(genotype)
  parts = []
  for gene in GENES:
    j = gene.values.index(genotype[gene.name])
    one_hot = np.zeros(len(gene.values), np.float32)
    one_hot[j] = 1.0
    parts += [one_hot, np.array([j / max(1, len(gene.values) - 1)], np.float32)]
  return np.concatenate(parts)


def edit_encodings() -> tuple[np.ndarray, np.ndarray]:
  """(keep (N_GENES, GENOME_DIM), put (N_GENES, MAX_VALUES, GENOME_DIM)) such that
  encode(apply_edit(g, gene, v)) == encode(g) * keep[gene] + put[gene, v]: the
  encoding of an edit's child without building it (for many edits at once, in JAX)."""
  keep = np.ones((N_GENES, GENOME_DIM), np.float32)
  put = np.zeros((N_GENES, MAX_VALUES, GENOME_DIM), np.float32)
  offset = 0
  for i, gene in enumerate(GENES):
    n = len(gene.values)
    keep[i, offset:offset + n + 1] = 0.0
    for j in range(n):
      put[i, j, offset + j] = 1.0
      put[i, j, offset + n] = j / max(1, n - 1)
    offset += n + 1
  return keep, put


def random_edit(rng: np.random.Generator, genotype: Genotype, max_params: int = 0,
                max_step_flops: float = 0.0) -> tuple[int, int]:
  """(gene index, value index) of a uniformly random valid edit of `genotype`."""
  valid = np.argwhere(edit_mask(genotype, max_params, max_step_flops))
  if not len(valid):
    raise InvalidGenotype('no valid edit of the genotype')
  gene, value = valid[rng.integers(len(valid))]
  return int(gene), int(value)


def random_genotype(rng: np.random.Generator, max_params: int = 0, max_step_flops: float = 0.0,
                    tries: int = 100_000):
  """A uniformly random valid genotype (rejection sampling over the whole space)."""
  for _ in range(tries):
    candidate = {g.name: g.values[rng.integers(len(g.values))] for g in GENES}
    if is_valid(candidate, max_params, max_step_flops)[0]:
      return candidate
  raise InvalidGenotype(f'no valid genotype in {tries} random draws')

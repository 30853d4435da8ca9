"""The search space: canonical values, validity with reasons, ids, diffs, JSON, configs."""

import json

import numpy as np
import pytest

from autoresearch.space import builds, genotype as genotype_lib
from configs import default, tiny


def _baseline():
  return genotype_lib.from_config(default.get_config())


def test_baseline_is_valid_and_every_gene_has_its_value_in_its_set():
  g = _baseline()
  genotype_lib.check(g, default.get_config().trial.max_params)
  for gene in genotype_lib.GENES:
    assert g[gene.name] in gene.values


@pytest.mark.parametrize('change,reason', [
    (dict(d_model=128, n_heads=3), 'must divide d_model'),
    (dict(n_heads=4, n_kv_heads=3), 'must divide n_heads'),
    (dict(window_pattern='SL', short_window=256, seq_len=128), 'short_window=256'),
    (dict(d_model=100), 'is not one of'),
    (dict(activation='tanh'), 'is not one of'),
])
def test_invalid_genotypes_are_refused_with_their_reason(change, reason):
  g = dict(_baseline(), **change)
  ok, why = genotype_lib.is_valid(g)
  assert not ok and reason in why
  with pytest.raises(genotype_lib.InvalidGenotype, match=reason):
    genotype_lib.check(g)


def test_parameter_cap():
  g = dict(_baseline(), n_layers=16, d_model=1024, n_heads=16, n_kv_heads=16)
  ok, why = genotype_lib.is_valid(g, max_params=20_000_000)
  assert not ok and 'exceed the cap of 20,000,000' in why
  assert genotype_lib.is_valid(g)[0]  # no cap


def test_unknown_and_missing_genes():
  with pytest.raises(genotype_lib.InvalidGenotype, match='unknown genes'):
    genotype_lib.make(dict(_baseline(), depth=3))
  g = dict(_baseline())
  del g['seq_len']
  with pytest.raises(genotype_lib.InvalidGenotype, match='missing genes'):
    genotype_lib.make(g)


def test_values_are_canonicalised():
  g = genotype_lib.make(dict(_baseline(), rope_base=1e4, d_model=128.0, qk_norm=False))
  assert g['rope_base'] == 10000.0 and g['d_model'] == 128 and isinstance(g['d_model'], int)
  with pytest.raises(genotype_lib.InvalidGenotype):
    genotype_lib.make(dict(_baseline(), qk_norm=1))  # not a bool


def test_id_is_stable_and_distinguishes_genotypes():
  a = _baseline()
  assert genotype_lib.genotype_id(a) == genotype_lib.genotype_id(dict(reversed(list(a.items()))))
  b = dict(a, n_kv_heads=1)
  assert genotype_lib.genotype_id(a) != genotype_lib.genotype_id(b)
  assert len(genotype_lib.genotype_id(a)) == 12


def test_describe_diff():
  a = _baseline()
  b = dict(a, n_kv_heads=1, rope_base=1e5)
  assert genotype_lib.describe_diff(b, a) == 'n_kv_heads 2->1, rope_base 10000->100000'
  assert genotype_lib.describe_diff(a, a) == 'baseline'


def test_command_line_style_override_and_json(tmp_path):
  config = default.get_config()
  config.genotype.d_model = 192    # what --config.genotype.d_model=192 does
  path = tmp_path / 'g.json'
  path.write_text(json.dumps({'n_layers': 3, 'activation': 'swiglu'}))
  config.genotype_json = str(path)
  g = genotype_lib.from_config(config)
  assert (g['d_model'], g['n_layers'], g['activation']) == (192, 3, 'swiglu')
  assert json.loads(genotype_lib.to_json(g)) == g


@pytest.mark.parametrize('content,match', [
    (None, 'cannot read genotype JSON'),
    ('{not json', 'cannot read genotype JSON'),
    ('[1, 2]', 'must hold an object'),
    ('{"d_model": 100}', 'is not one of'),
])
def test_bad_genotype_json(tmp_path, content, match):
  path = tmp_path / 'g.json'
  if content is not None:
    path.write_text(content)
  config = default.get_config()
  config.genotype_json = str(path)
  with pytest.raises(genotype_lib.InvalidGenotype, match=match):
    genotype_lib.from_config(config)


def test_conversion_to_frozen_configs():
  g = genotype_lib.from_config(tiny.get_config())
  model_cfg = genotype_lib.model_config(g, 'bfloat16')
  optim_cfg = genotype_lib.optim_config(g)
  assert (model_cfg.d_model, model_cfg.seq_len, model_cfg.compute_dtype) == (32, 32, 'bfloat16')
  assert optim_cfg.matrix_lr == g['matrix_lr'] and optim_cfg.optimizer == g['optimizer']
  # Every gene lands in exactly one place: the model, the optimizer or the training loop.
  model_fields = set(vars(model_cfg)) | set(vars(optim_cfg)) | set(genotype_lib.TRAIN_ONLY_GENES)
  assert {gene.name for gene in genotype_lib.GENES} <= model_fields


def _edits_checked_against_their_own_build(genotype, max_params, edits):
  """For each (gene, value) edit: the mask says it trains differently exactly when the
  child's own build (traced anew) asks different questions or gets different answers."""
  parent_reads = builds.build_reads(genotype_lib.model_config(genotype),
                                    genotype_lib.optim_config(genotype),
                                    (genotype['batch_size'], genotype['seq_len']))
  mask = genotype_lib.edit_mask(genotype, max_params)
  for i, j in edits:
    gene = genotype_lib.GENES[i]
    child = dict(genotype, **{gene.name: gene.values[j]})
    if not genotype_lib.is_valid(child, max_params)[0]:
      assert not mask[i, j]
      continue
    child_reads = builds.build_reads(genotype_lib.model_config(child),
                                     genotype_lib.optim_config(child),
                                     (child['batch_size'], child['seq_len']))
    differs = child_reads != parent_reads or any(
        child[name] != genotype[name] for name in genotype_lib.TRAIN_ONLY_GENES)
    assert mask[i, j] == differs, (gene.name, genotype[gene.name], gene.values[j])


def _all_edits(genotype):
  return [(i, j) for i, gene in enumerate(genotype_lib.GENES) for j, value in
          enumerate(gene.values) if value != genotype[gene.name]]


def test_the_known_no_op_edits_are_masked_by_what_is_built():
  base = genotype_lib.from_config(tiny.get_config())
  index = {g.name: i for i, g in enumerate(genotype_lib.GENES)}
  tied = dict(base, tie_embeddings=True, norm='rms', position='learned')
  mask = genotype_lib.edit_mask(tied)
  for name in ('head_lr', 'scalar_lr', 'rope_base', 'muon_lr', 'muon_momentum'):
    assert not mask[index[name]].any(), name   # no lm head, no scalars, no RoPE, AdamW
  for name in ('embed_lr', 'matrix_lr', 'd_model', 'batch_size', 'seq_len'):
    assert mask[index[name]].any(), name


@pytest.mark.slow   # builds every edit: about 25 s
def test_every_edit_of_the_baseline_builds_differently_exactly_when_the_mask_says():
  base = genotype_lib.from_config(tiny.get_config())
  _edits_checked_against_their_own_build(base, 0, _all_edits(base))


@pytest.mark.slow
def test_every_masked_edit_of_random_genotypes_builds_differently():
  rng = np.random.default_rng(7)
  for _ in range(50):
    genotype = genotype_lib.random_genotype(rng, max_params=1_000_000)
    edits = _all_edits(genotype)
    picks = rng.choice(len(edits), size=3, replace=False)
    _edits_checked_against_their_own_build(genotype, 1_000_000, [edits[k] for k in picks])

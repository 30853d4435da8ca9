"""The gene benchmark's pairing and statistics (its trials are real 60 s runs: not here)."""

import json

from benchmarks import gene_effects


def test_each_gene_is_paired_with_its_context_without_it():
  arms = gene_effects.arms()
  for gene, (context, on) in gene_effects.GENES.items():
    off_arm, on_arm = gene_effects.pair_of(gene)
    assert arms[off_arm] == context and arms[on_arm] == dict(context, **{gene: on})
  assert len(arms) == 1 + len(gene_effects.GENES) + 3   # baseline, the genes, 3 contexts


def test_the_report_reads_the_pairs_recorded_so_far(tmp_path, capsys):
  out = tmp_path / 'trials.jsonl'
  rows = []
  for seed, (base, skips) in enumerate([(2.0, 1.9), (2.1, 2.0), (2.05, 1.94)]):
    rows += [{'arm': 'baseline', 'seed': seed, 'status': 'ok', 'val_bpb': base, 'steps': 100},
             {'arm': 'unet_skips=True', 'seed': seed, 'status': 'ok', 'val_bpb': skips,
              'steps': 90}]
  out.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  gene_effects.report(str(out))
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('unet_skips: unet_skips=True vs baseline: -0.1033 bpb [')
  assert 'n=3, exact sign-flip p=0.250, steps 100 -> 90' in lines[0]
  assert lines[-1] == 'genes_with_a_resolved_gain: 1 of 1'

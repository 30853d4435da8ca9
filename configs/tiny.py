"""The default shrunk so that a whole trial takes a few seconds: tests and CI."""

from configs import default


def get_config():
  config = default.get_config()
  config.trial.budget_seconds = 2.0    # training seconds per trial
  config.trial.val_bytes = 8_192       # bytes scored
  config.trial.eval_batch_tokens = 4_096
  config.search.baseline_cache = 'none'   # each test measures its own baseline
  g = config.genotype
  g.n_layers = 1
  g.d_model = 32
  g.n_heads = 2
  g.n_kv_heads = 2
  g.mlp_ratio = 2.0
  g.short_window = 16
  g.batch_size = 4
  g.seq_len = 32
  return config

"""Accelerator scale, after karpathy/autoresearch: 300 s of training, depth 8,
d_model 512, sequences of 2048, 2^19 = 524,288-token batches, bf16 activations
(fp32 master weights), attention through cuDNN flash attention where the GPU's cuDNN
runs it (trial.attention='auto'; XLA's path otherwise), MFU over the bf16 matmul
ceiling measured at start-up. Not yet run on a GPU: benchmarks/gpu_check.sh is the
check to run on one.

Byte-level, so the corpus is enwik8 (downloaded once into the cache). Not run on
CPU; tests build it abstractly (jax.eval_shape) so it cannot rot.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'enwik8'
  config.trial.budget_seconds = 300.0      # training seconds per trial
  config.trial.val_bytes = 4_194_304       # 4 MiB of enwik8's val split
  config.trial.eval_batch_tokens = 262_144
  config.trial.max_params = 500_000_000
  config.trial.micro_batch_size = 32       # 8 micro-batches of 32 x 2048 tokens per step
  config.trial.compute_dtype = 'bfloat16'  # activations; fp32 master weights
  config.trial.attention = 'auto'          # cuDNN flash attention on a GPU (bf16, head_dim 128)
  g = config.genotype
  g.update(dict(
      n_layers=8, d_model=512, n_heads=4, n_kv_heads=4, position='rope', rope_base=10000.0,
      qk_norm=True, window_pattern='SSSL', short_window=1024, value_embeds=True,
      activation='relu2', mlp_ratio=4.0, norm='rms', residual_mix=True, logit_softcap=15.0,
      tie_embeddings=False, zero_init_proj=True,
      optimizer='muon', muon_lr=0.04, muon_momentum=0.95, embed_lr=0.6, head_lr=3e-3,
      scalar_lr=0.3, beta1=0.8, beta2=0.95, weight_decay=0.0, grad_clip=0.0,
      warmup_frac=0.0, warmdown_frac=0.5, final_lr_frac=0.0,
      batch_size=256, seq_len=2048,
  ))
  return config

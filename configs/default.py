"""Default configuration, sized for a 2-core CPU: a 60 s training budget per trial.

Override any field from the command line, e.g.
  python main.py --config=configs/default.py --config.trial.budget_seconds=30 \
      --config.genotype.d_model=192
"""

import ml_collections


def baseline_genotype() -> ml_collections.ConfigDict:
  """A sound, deliberately ordinary recipe: the search's job is to improve on it."""
  return ml_collections.ConfigDict(dict(
      # Architecture.
      n_layers=2,              # transformer blocks
      d_model=128,             # residual width (channels)
      n_heads=2,               # query heads (head_dim 64: XLA's CPU attention is faster at 64 than 32)
      n_kv_heads=2,            # key/value heads; < n_heads is GQA
      position='rope',         # 'rope' | 'learned'
      rope_base=10000.0,       # RoPE frequency base
      qk_norm=False,           # RMS-normalise queries and keys
      window_pattern='L',      # per-layer attention pattern of S (short) and L (full); last layer always L
      short_window=64,         # tokens seen by an S layer
      value_embeds=False,      # gated value embeddings on alternating layers
      activation='gelu',       # 'relu2' | 'gelu' | 'swiglu'
      mlp_ratio=4.0,           # MLP width / d_model
      norm='rms_scale',        # 'rms' | 'rms_scale' | 'layernorm'
      residual_mix=False,      # learned mixing with the embedding stream
      logit_softcap=0.0,       # tanh soft-cap of logits; 0 = off
      tie_embeddings=False,    # lm head shares the embedding matrix
      zero_init_proj=False,    # zero-init attention/MLP output projections
      # Optimizer recipe.
      optimizer='adamw',       # 'adamw' | 'muon' (Muon on hidden matrices)
      matrix_lr=3e-3,          # AdamW LR of hidden matrices
      muon_lr=0.02,            # Muon LR of hidden matrices (when optimizer='muon')
      muon_momentum=0.95,      # Muon momentum
      embed_lr=3e-3,           # AdamW LR of embeddings
      head_lr=3e-3,            # AdamW LR of the lm head
      scalar_lr=3e-3,          # AdamW LR of norm scales, gates and mixing scalars
      beta1=0.9,               # AdamW beta1
      beta2=0.95,              # AdamW beta2
      weight_decay=0.0,        # decoupled weight decay of hidden matrices
      grad_clip=1.0,           # global gradient-norm clip; 0 = off
      warmup_frac=0.0,         # fraction of the budget warming up
      warmdown_frac=0.3,       # fraction of the budget decaying the LR at the end
      final_lr_frac=0.0,       # final LR as a fraction of the peak
      # Batch.
      batch_size=16,           # sequences per optimizer step
      seq_len=128,             # tokens (bytes) per sequence
      # Later speedrun records (modded-nanogpt), each off here.
      unet_skips=False,        # layer i of the second half adds the output of layer L-1-i
      window_warmup=0.0,       # fraction of the budget over which short windows grow to full size
      bigram_buckets=0,        # rows of the (previous, current) byte hash embedding; 0 = off
      mtp_weight=0.0,          # weight of the auxiliary loss of predicting byte t+2; 0 = off
      cautious_wd=False,       # decay hidden matrices only where update and weight agree in sign
      normuon=False,           # normalise Muon's update per neuron (optimizer='muon')
  ))


def trial_config() -> ml_collections.ConfigDict:
  """How each trial is run: its budget, what is scored, its caps and its clock."""
  return ml_collections.ConfigDict(dict(
      budget_seconds=60.0,     # training seconds per trial (on `clock`); compile and eval excluded
      val_bytes=262_144,       # bytes of the val split scored (same for every genotype)
      eval_batch_tokens=16_384,  # tokens per evaluation batch (memory only)
      max_params=20_000_000,   # parameter cap: larger genotypes are refused
      max_step_fraction=0.05,  # refused: a step over this x budget at the matmul ceiling (or reference rate)
      max_loss=16.6,           # nats; a training loss above this ends the trial as a crash
      micro_batch_size=0,      # sequences per forward/backward (grad accumulation); 0 = batch
      compute_dtype='float32',  # activation dtype: 'float32' | 'bfloat16'; weights stay float32
      fsdp=False,              # shard parameters and optimizer state over devices; else replicated
      max_steps=0,             # steps; training ends after this many, even within budget; 0 = none
      seed=0,                  # init and batch-sampling seed
      clock='wall',            # a training second: 'wall' (the machine's) | 'modelled' | 'flops' (reproducible)
      # Under clock='modelled', seconds a step is charged per unit of each feature
      # (autoresearch/trial/step_cost.py), fitted to idle steps of one lane (one core, XLA on
      # one thread) of this 2-core CPU by benchmarks/clock_fidelity.py (the fitted features;
      # the others cost 0).
      step_cost=ml_collections.ConfigDict(dict(
          flops=1.4299e-11,    # s per model matmul FLOP (a rate of 70 GFLOP/s)
          scores=2.1678e-08,   # s per attention score (softmax, masking)
          extra=5.1603e-08,    # s per residual element of QK-norm, residual mixing, U-net skips
          muon=7.4139e-12,     # s per FLOP of Muon's Newton-Schulz iterations
      )),
      # FLOP/s; under clock='flops' a training second is this many model FLOPs: the baseline
      # alone on this idle 2-core CPU (1,369 steps a minute = 1.29e11; today's rate:
      # benchmarks/clock_noise.py's idle_wall_flops_per_second).
      reference_flops_per_second=1.3e11,
      attention='auto',        # attention kernel: 'auto' (per backend) | 'explicit' | 'xla' | 'cudnn'
      sync_steps=16,           # steps; several hosts share process 0's stop and progress this often
      # Genotypes whose compiled programs stay in memory, least recently used out first,
      # for the edits that change only numbers (learning rates, betas, decay, clip,
      # schedule); 0 = none (autoresearch/trial/programs.py). On CPU at the default sizes
      # the process's peak memory grew 25-50 MB per new program (the trial's arrays included).
      program_cache_entries=16,
  ))


def search_config(reward_clip: ml_collections.FieldReference) -> ml_collections.ConfigDict:
  """The search loop: how long, the noise runs and the keep rule."""
  return ml_collections.ConfigDict(dict(
      max_trials=0,            # stop after this many trials in the workdir in total; 0 = never
      noise_repeats=5,         # baseline runs (seeds s, s+1, ...) that first measure sigma of val_bpb
      keep_alpha=0.05,         # probability of keeping an edit that changes nothing (one-sided t test)
      min_sigma=0.002,         # bits/byte; floor of the pooled sigma
      reward_clip=reward_clip,  # sigma units: an edit's reward is log1p(its gain over the best / sigma, in [0, this])
      seed=0,                  # agent seed
      parallel_trials=1,       # K: trials at once, each on 1/K of the devices (K proposals a round)
      # Baseline runs kept for the next search of the same setting (autoresearch/search/baseline_cache.py):
      # '' = ~/.cache/autoresearch/baselines, 'none' = off, else a folder (local or gs://).
      baseline_cache='',
  ))


def agent_config(reward_clip: ml_collections.FieldReference) -> ml_collections.ConfigDict:
  """The agent that proposes the trials (PPO by default) and its learning."""
  return ml_collections.ConfigDict(dict(
      kind='ppo',              # 'ppo' | 'random' | 'random_global' | 'evolution' | 'tpe' | 'cmaes'
      history=30,              # past trials the policy reads
      update_every=8,          # trials between PPO updates
      hidden=64,               # policy width (channels)
      num_heads=4,             # attention heads over the history
      init_from='policies/default',  # the policy to start from: a policy folder (relative to the project works) or an earlier search's workdir; 'none' = from scratch
      evolution=ml_collections.ConfigDict(dict(
          population=12,       # trials in the population (regularized evolution)
          tournament=3,        # members drawn per tournament; the best is the parent (Real et al.: S/P = 1/4)
      )),
      ppo=ml_collections.ConfigDict(dict(
          gamma=0.0,           # discount per trial: 0, an edit's reward is immediate (ppo.py)
          gae_lambda=0.95,     # GAE lambda (no effect at gamma 0)
          clip_eps=0.2,        # PPO ratio clip
          value_clip_eps=1.0,  # critic change per update, reward units (rewards lie in [0, log1p(search.reward_clip)])
          vf_coef=0.5,         # value-loss weight
          ent_coef=0.01,       # entropy bonus weight (nats)
          learning_rate=1e-3,  # Adam LR
          max_grad_norm=0.5,   # global gradient-norm clip
          epochs=16,           # passes over each rollout
          minibatches=2,       # minibatches per pass (update_every must divide by it)
      )),
      dyna=ml_collections.ConfigDict(dict(  # imagined edits on a world model (dyna.py)
          imagined=0,          # imagined edits per real transition at each update; 0 = off (the default:
                               # on the design landscapes 8 did not resolve a gain, README)
          bonus=0.1,           # imagined reward per σ of the ensemble's disagreement
          min_trials=16,       # trials remembered before the world model is used
          reward_clip=reward_clip,  # = search.reward_clip (one value, referenced)
          members=5,           # MLPs in the world model's ensemble
          hidden=64,           # width of each member's two hidden layers
          steps=100,           # full-batch Adam steps per fit
          learning_rate=3e-3,  # the world model's Adam LR
          weight_decay=1e-2,   # its decoupled weight decay
          capacity=512,        # trials remembered (the oldest forgotten beyond it)
      )),
  ))


def pretrain_config() -> ml_collections.ConfigDict:
  """--mode=pretrain: the PPO policy pretrained on synthetic landscapes (pretrain.py),
  written to --workdir (the shipped one: policies/default)."""
  return ml_collections.ConfigDict(dict(
      iterations=30,           # PPO updates
      searches=24,             # synthetic searches (one landscape each) per update
      trials=60,               # ledger rows per search (baseline runs included)
      epochs=4,                # passes over each update's transitions
      minibatches=8,           # minibatches per pass
      learning_rate=1e-3,      # Adam step size
  ))


def evaluator_config() -> ml_collections.ConfigDict:
  """The self-evaluator: when a running trial is stopped as hopeless."""
  return ml_collections.ConfigDict(dict(
      enabled=True,            # stop hopeless trials early from their live loss curve
      min_progress=0.2,        # fraction of the budget before any predicted-bpb stop
      check_every=0.05,        # fraction of the budget between curve fits
      delta=0.05,              # stop when P(final beats the best) < delta ...
      confirm=2,               # ... at this many consecutive checks
      smoothing=0.01,          # loss EMA half-life (fraction of the budget), for divergence
      fit_start=0.25,          # the fit at progress p uses readings from fit_start*p to p
      divergence_factor=1.5,   # smoothed loss above this x its running minimum: stop at once
      stall_seconds=30.0,      # seconds without a finished step: stop (0 = off)
      min_history=8,           # completed trials before the calibrated std is trusted
      prior_std=0.5,           # bits/byte; prediction std before min_history trials
      min_std=0.003,           # bits/byte; floor of a calibrated prediction's std
      ridge=0.01,              # bits^2; ridge penalty of the calibration
      max_history=256,         # most recent completed trials the calibration keeps
      predictor='power_law',   # final-val_bpb predictor: 'power_law' (fit + calibration) | 'learned'
      predictor_path='predictors/curve_mlp',  # folder of the learned one (relative: to the project)
  ))


def get_config() -> ml_collections.ConfigDict:
  """The whole configuration: one part per concern, the genotype the search starts from."""
  config = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict(dict(
      source='pystdlib',       # 'pystdlib' (no download) | 'text' | 'enwik8'
      path='',                 # file or folder of UTF-8 text, for source='text'
      cache_dir='',            # enwik8 download cache; '' = ~/.cache/autoresearch
      val_fraction=0.05,       # share of documents in val (hash of the path)
      test_fraction=0.05,      # share of documents in test
  ))

  config.trial = trial_config()
  reward_clip = ml_collections.FieldReference(100.0)  # search.reward_clip = agent.dyna.reward_clip
  config.search = search_config(reward_clip)
  config.agent = agent_config(reward_clip)
  config.pretrain = pretrain_config()
  config.evaluator = evaluator_config()
  config.checkpoint = ml_collections.ConfigDict(dict(
      keep=3,                  # checkpoints kept (the newest; older ones are deleted)
      grace_seconds=30.0,      # seconds from SIGTERM/SIGINT to exit
      allow_config_change=False,  # resume even if data/trial/search/agent config changed
  ))
  # What a person sees while the search runs; none of it changes a result, so none of it
  # is part of the config fingerprint a resumed search is checked against.
  config.output = ml_collections.ConfigDict(dict(
      progress_bar=True,       # live progress of each trial (a tqdm bar on a terminal, else logs)
      best_block=True,         # at each new best, a short block on stdout: what changed, by how many σ
      live_report=True,        # refresh workdir/progress.png and report.md after every trial
      report_overhead=0.05,    # fraction of the search's time the refresh may take at most
      tensorboard=True,        # scalars per trial in workdir/tensorboard (when tensorboardX is installed)
  ))
  # JAX's compilation cache (workdir/jax_cache; a gs:// workdir's stays on this host):
  # past this size the least recently used entries are deleted. 0 = no cache.
  config.compilation_cache_mb = 2048.0   # MB

  # Many hosts (jax.distributed): every process runs the same command. All unset and
  # auto off: one process. Unset fields fall back to JAX_COORDINATOR_ADDRESS,
  # JAX_NUM_PROCESSES, JAX_PROCESS_ID.
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address='',  # host:port of process 0's coordinator, e.g. '10.0.0.1:1234'
      num_processes=0,         # processes in all; 0 = unset
      process_id=-1,           # this process, 0..num_processes-1; -1 = unset
      auto=False,              # let JAX detect the cluster (SLURM, Open MPI, Cloud TPU, k8s)
  ))

  config.genotype = baseline_genotype()
  config.genotype_json = ''    # optional JSON file of gene: value, applied over config.genotype
  return config

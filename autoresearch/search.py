"""The perpetual search: propose an edit of the best recipe, train it, decide, learn.

    search.run(config, workdir)

1. **Noise.** The baseline is trained `noise_repeats` times with different seeds; σ is
   the standard deviation of its val_bpb (at least `min_sigma`), the best is their mean.
2. **Loop** (until `max_trials` ledger rows in total; 0 = forever): the agent proposes
   one edit of the best genotype; the trial trains it; the keep rule decides; the agent
   is told the reward; the ledger gets the row(s).
3. **Keep rule** (noise-aware). With gain = best_bpb - val_bpb:
   gain > keep_sigmas·σ: keep (new best). 0 < gain <= keep_sigmas·σ (inside the noise
   band but below the best): the genotype is trained again with a new seed and the mean
   m of the two runs decides: keep when best_bpb - m > keep_sigmas·σ/√2 (the standard
   error of a two-run mean). Both runs are in the ledger, with the same decision.
   Otherwise discard. A crash or an aborted trial never becomes the best.
4. **Reward** of an edit: r = clip((best_bpb_before - bpb) / σ, -reward_clip,
   +reward_clip), where bpb is the trial's val_bpb (the two-run mean after a re-run)
   or, for an aborted trial, the self-evaluator's predicted val_bpb; a crash, or an
   aborted trial without a prediction, gets the floor -reward_clip.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional

import numpy as np
from absl import logging

from autoresearch import agents, genotype as genotype_lib, ledger as ledger_lib, modes, trial


@dataclasses.dataclass
class SearchState:
  """Everything the search needs to continue (checkpointed as a whole)."""
  trials: int = 0                 # ledger rows written
  proposals: int = 0              # edits proposed by the agent
  best_genotype: dict = dataclasses.field(default_factory=dict)
  best_bpb: float = math.inf
  sigma: float = 0.0
  baseline_bpbs: list = dataclasses.field(default_factory=list)
  history: list = dataclasses.field(default_factory=list)   # policy history rows
  since_improvement: int = 0


def reward(best_before: float, bpb: Optional[float], sigma: float, clip: float) -> float:
  """The PPO reward of one edit (see the module docstring)."""
  if bpb is None or not math.isfinite(bpb):
    return -clip
  return float(np.clip((best_before - bpb) / sigma, -clip, clip))


def decide(gain: float, sigma: float, keep_sigmas: float) -> str:
  """'keep', 'rerun' or 'discard' for a scored trial that gained `gain` bits over the best."""
  if gain > keep_sigmas * sigma:
    return 'keep'
  if gain > 0:
    return 'rerun'
  return 'discard'


class Search:
  """One search in one workdir."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    trial.enable_compilation_cache(os.path.join(workdir, 'jax_cache'))
    self.corpus = modes.load_corpus(config)
    self.trial_config = modes.trial_config(config)
    self.ledger = ledger_lib.Ledger(workdir)
    self.agent = agents.make(config.agent, config.agent.history, config.search.seed)
    self.state = SearchState(best_genotype=genotype_lib.from_config(config))
    self.max_params = self.trial_config.max_params
    logging.info('data: %s, bytes %s', self.corpus.description, self.corpus.byte_counts())

  # --- one trial, recorded -----------------------------------------------------------

  def _train(self, genotype: dict, seed: int) -> trial.TrialResult:
    cfg = dataclasses.replace(self.trial_config, seed=seed)
    return trial.run(genotype, self.corpus, cfg)

  def _record(self, result: trial.TrialResult, status: str, description: str, **extra) -> None:
    self.state.trials += 1
    record = dict(result.to_dict(), commit=result.genotype_id, status=status,
                  description=description, trial=self.state.trials,
                  agent=extra.pop('agent', self.agent.kind), memory_gb=result.peak_memory_gb,
                  **extra)
    record['best_bpb'] = self.state.best_bpb
    self.ledger.append(record)
    best = f'{self.state.best_bpb:.6f}' if math.isfinite(self.state.best_bpb) else '-'
    bpb = f'{result.val_bpb:.6f}' if result.val_bpb is not None else '-'
    logging.info('trial %d | %s | %s | val_bpb %s | %s | best %s', self.state.trials,
                 record['agent'], description, bpb, status, best)

  def _room(self, rows: int) -> bool:
    max_trials = self.config.search.max_trials
    return max_trials <= 0 or self.state.trials + rows <= max_trials

  # --- phases ------------------------------------------------------------------------

  def measure_noise(self) -> None:
    """Trains the baseline `noise_repeats` times; sets best_bpb and sigma."""
    search = self.config.search
    baseline = self.state.best_genotype
    while len(self.state.baseline_bpbs) < search.noise_repeats and self._room(1):
      k = len(self.state.baseline_bpbs)
      result = self._train(baseline, self.trial_config.seed + k)
      if result.status != 'ok':
        raise RuntimeError(f'the baseline genotype failed ({result.status}): {result.reason}')
      self.state.baseline_bpbs.append(result.val_bpb)
      self.state.best_bpb = float(np.mean(self.state.baseline_bpbs))
      self._record(result, 'keep', f'baseline (noise run {k + 1}/{search.noise_repeats})',
                   agent='baseline')
    bpbs = self.state.baseline_bpbs
    spread = float(np.std(bpbs, ddof=1)) if len(bpbs) > 1 else 0.0
    self.state.sigma = max(spread, search.min_sigma)
    logging.info('baseline val_bpb %.6f, sigma %.6f (from %d runs, floor %.6f)',
                 self.state.best_bpb, self.state.sigma, len(bpbs), search.min_sigma)

  def observation(self):
    s = self.state
    return agents.build_observation(s.best_genotype, s.history, self.config.agent.history,
                                    s.trials, s.since_improvement, s.best_bpb, self.max_params)

  def step(self) -> None:
    """One proposal: train, decide (re-running inside the noise band), learn, record."""
    s, search = self.state, self.config.search
    obs = self.observation()
    proposal = self.agent.propose(obs)
    best_before, parent = s.best_bpb, s.best_genotype
    genotype = genotype_lib.apply_edit(parent, proposal.gene, proposal.value)
    description = genotype_lib.describe_edit(parent, proposal.gene, proposal.value)
    s.proposals += 1
    result = self._train(genotype, self.trial_config.seed)
    results = [result]
    if result.status == 'ok':
      verdict = decide(best_before - result.val_bpb, s.sigma, search.keep_sigmas)
      bpb = result.val_bpb
      if verdict == 'rerun' and self._room(2):
        rerun = self._train(genotype, self.trial_config.seed + 10_000 + s.proposals)
        results.append(rerun)
        if rerun.status == 'ok':
          bpb = (result.val_bpb + rerun.val_bpb) / 2
          verdict = 'keep' if best_before - bpb > search.keep_sigmas * s.sigma / math.sqrt(2) \
              else 'discard'
        else:
          verdict = 'discard'
      elif verdict == 'rerun':
        verdict = 'discard'  # no ledger room left for the second run
      status = verdict
    else:
      status, bpb = result.status, (result.predicted_bpb if result.status == 'aborted' else None)
    r = reward(best_before, bpb, s.sigma, search.reward_clip)
    became_best = status == 'keep'
    if became_best:
      s.best_genotype, s.best_bpb, s.since_improvement = genotype, float(bpb), 0
    else:
      s.since_improvement += 1
    budget_fraction = result.train_seconds / max(self.trial_config.budget_seconds, 1e-9)
    s.history.append(agents.history_row(
        proposal.gene, genotype_lib.value_index(parent, genotype_lib.GENES[proposal.gene].name),
        proposal.value, (best_before - bpb) / s.sigma if bpb is not None else -math.inf,
        status, budget_fraction, became_best))
    s.history = s.history[-self.config.agent.history:]
    for i, res in enumerate(results):
      note = description if i == 0 else f'{description} (re-run, mean {bpb:.6f})'
      self._record(res, status, note, reward=r, log_prob=proposal.log_prob,
                   critic=proposal.critic, edit=[proposal.gene, proposal.value])
    metrics = self.agent.observe(obs, proposal, r, self.observation())
    if metrics:
      logging.info('agent update: %s', ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))

  def run(self) -> SearchState:
    self.measure_noise()
    while self._room(1):
      self.step()
    return self.state


def run(config, workdir: str) -> SearchState:
  """Runs the search in `workdir` until `config.search.max_trials` trials (0: forever)."""
  start = time.time()
  state = Search(config, workdir).run()
  logging.info('search finished: %d trials in %.0f s, best val_bpb %.6f', state.trials,
               time.time() - start, state.best_bpb)
  return state

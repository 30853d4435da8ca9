"""The PPO agent's features: the search's view (`agents.api.SearchView`) as the policy
reads it. The search hands agents raw outcomes and its checkpoint stores those, so
changing the encoding here breaks no saved search (only this agent's own saved policy,
whose shapes follow the encoding)."""

from __future__ import annotations

import math

import numpy as np

from autoresearch.agents.api import HistoryEntry, SearchView
from autoresearch.space import genotype as genotype_lib
from autoresearch.workdir import records
from models import policy


HISTORY_DIM = genotype_lib.N_GENES + 5 + len(records.STATUSES)
GLOBALS_DIM = 3


def history_row(entry: HistoryEntry) -> np.ndarray:
  """One past trial as the policy reads it: the edit (gene one-hot, the new value's
  ordinal position, the signed step along the ordered value set; all zero for a whole
  genotype, gene -1), its outcome (val_bpb gain over the best in units of sigma,
  squashed), its status, the fraction of the budget used, and whether it became the
  best."""
  row = np.zeros(HISTORY_DIM, np.float32)
  base = genotype_lib.N_GENES
  if entry.gene >= 0:  # -1: a whole genotype, not one edit
    n_values = max(1, len(genotype_lib.GENES[entry.gene].values) - 1)
    row[entry.gene] = 1.0
    row[base] = entry.new_value / n_values
    row[base + 1] = (entry.new_value - entry.old_value) / n_values
  gain = entry.gain_sigmas
  row[base + 2] = math.tanh(gain / 3.0) if math.isfinite(gain) else -1.0
  row[base + 3] = min(max(entry.budget_fraction, 0.0), 1.0)
  row[base + 4] = float(entry.became_best)
  row[base + 5 + records.STATUSES.index(entry.status)] = 1.0
  return row


def observation(view: SearchView, history_len: int) -> policy.Observation:
  """The policy's input from the search's view: the best's encoding, the last
  `history_len` trials (oldest first, zero-padded), three counters (trials, trials
  since the best changed, the best's gain over the baseline in σ: no absolute val_bpb,
  so that a policy transfers between corpora and budgets), the edit mask."""
  rows = np.zeros((history_len, HISTORY_DIM), np.float32)
  mask = np.zeros(history_len, bool)
  recent = view.history[-history_len:] if history_len else ()
  if recent:
    rows[:len(recent)] = np.stack([history_row(entry) for entry in recent])
    mask[:len(recent)] = True
  gain = (view.baseline_bpb - view.best_bpb) / view.sigma if view.sigma > 0 else 0.0
  gain = max(gain, 0.0) if math.isfinite(gain) else 0.0
  globals_ = np.array([math.log1p(view.trials) / 5.0, math.log1p(view.since_improvement) / 5.0,
                       math.log1p(gain) / 5.0], np.float32)
  return policy.Observation(genome=genotype_lib.encode(view.best_genotype), history=rows,
                            history_mask=mask, globals=globals_, edit_mask=view.edit_mask)

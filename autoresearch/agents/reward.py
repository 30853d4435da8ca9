"""The reward of an edit: one formula for the trials the search scores
(`search/keep_rule.reward`, on Python floats) and for the edits the PPO agent imagines
(`ppo/dyna.py`, on arrays inside jit), so that an imagined edit earns what a real trial
with its val_bpb would.

An edit is worth what it adds to the best, log1p(clip((best_before − bpb)/σ̂, 0,
clip)); a worse edit, a crash, or an aborted trial without a prediction (a bpb that is
not finite) gets 0. A search is worth its best, so an edit is worth its improvement (as
in expected improvement); a reward that also counted how much worse an edit is (the
clipped signed gain this replaced) taught a policy, pretrained on landscapes, to avoid
bad edits by proposing timid ones: its mean reward rose while the gains its searches
found fell. log1p keeps one large gain from swamping a batch of rewards.
"""

from __future__ import annotations

import numpy as np


def improvement(best_before, bpb, sigma, clip: float, xp=np):
  """The reward (module docstring), elementwise over arrays or on scalars; 0 where `bpb`
  is not finite. `xp`: the array namespace, numpy or jax.numpy (inside jit)."""
  gain = xp.where(xp.isfinite(bpb), (best_before - bpb) / sigma, 0.0)
  return xp.log1p(xp.clip(gain, 0.0, clip))

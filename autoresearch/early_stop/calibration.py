"""The self-evaluator's calibration: from a trial's power-law features to its final
val_bpb and a std, learnt from the search's completed trials (see evaluator.py).

    calibration = Calibration.create(cfg)                    # cfg: EvaluatorConfig
    reference = calibration.reference(best_rows, best_bpb, budget_seconds)
    mean, std = calibration.predict(features, progress, reference)
    calibration.update(row, reference, budget_seconds)      # a completed trial's TrialRecord
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import NamedTuple, Optional, Sequence

import numpy as np

from autoresearch.early_stop import curve_predictor, power_law
from autoresearch.early_stop.config import EvaluatorConfig
from autoresearch.workdir.records import TrialRecord


LN2 = math.log(2.0)


class Reference(NamedTuple):
  """The incumbent a trial is compared with: its features (K, 2) nats, its val_bpb and
  its binned curve (curve_predictor.curve_bins; None: the learned predictor falls back
  to the power law)."""
  features: np.ndarray
  bpb: float
  bins: Optional[np.ndarray] = None


def _ridge_fit(x_Nx2: np.ndarray, z_N: np.ndarray, ridge: float):
  """Ridge regression of z on x with a free (unpenalised) intercept."""
  x_mean, z_mean = x_Nx2.mean(axis=0), z_N.mean()
  xc_Nx2 = x_Nx2 - x_mean
  inv_2x2 = np.linalg.inv(xc_Nx2.T @ xc_Nx2 + ridge * np.eye(2))
  return x_mean, z_mean, inv_2x2 @ xc_Nx2.T @ (z_N - z_mean), inv_2x2


def _ridge(x_Nx2: np.ndarray, z_N: np.ndarray, ridge: float,
           groups_N: Optional[np.ndarray] = None):
  """(n, x_mean, z_mean, slope, inverse Gram matrix, RMS out-of-sample residual) of the
  ridge fit of z on x, or None without rows.

  Without groups the residuals are leave-one-out (closed form through the leverages).
  With groups (trials compared with the same reference) they are leave-one-group-out: a
  reference's own noise is shared by its whole group, which leave-one-out cannot see.
  With fewer than 3 groups that noise is assumed as large as a trial's: variance x 2.
  """
  rows = np.all(np.isfinite(x_Nx2), axis=1) & np.isfinite(z_N)
  x_Nx2, z_N = x_Nx2[rows], z_N[rows]
  n = len(z_N)
  if n == 0:
    return None
  x_mean, z_mean, slope_2, inv_2x2 = _ridge_fit(x_Nx2, z_N, ridge)
  xc_Nx2 = x_Nx2 - x_mean
  leverage_N = 1.0 / n + np.einsum('ni,ij,nj->n', xc_Nx2, inv_2x2, xc_Nx2)
  loo_N = (z_N - z_mean - xc_Nx2 @ slope_2) / np.maximum(1.0 - leverage_N, 0.05)
  mse = float(np.mean(loo_N ** 2))
  if groups_N is not None:
    groups_N = groups_N[rows]
    labels = np.unique(groups_N)
    if len(labels) < 3:
      mse *= 2.0
    else:
      out_N = np.empty(n)
      for label in labels:
        held = groups_N == label
        m, zm, s, _ = _ridge_fit(x_Nx2[~held], z_N[~held], ridge)
        out_N[held] = z_N[held] - zm - (x_Nx2[held] - m) @ s
      mse = max(mse, float(np.mean(out_N ** 2)))
  return n, x_mean, z_mean, slope_2, inv_2x2, math.sqrt(mse)


def _nan_to_none(a: np.ndarray) -> list:
  return np.where(np.isfinite(a), a, None).tolist()


@dataclasses.dataclass
class Calibration:
  """Completed trials' features and finals, and the map from features to final val_bpb.

  Two models per checkpoint, both a ridge regression of the error of the plain
  extrapolation (bits) on the features, with out-of-sample residuals as the std:
  * paired (used when the evaluator has a Reference, i.e. the best's curve): the trial's
    final minus the reference's, from the differences of their features. Quirks a child
    shares with its parent (schedule, train/val gap) cancel, and the map stays valid
    as the best improves.
  * absolute: the final from the trial's own features.

  State (to_dict / from_dict, JSON-ready): the checkpoint grid and the fit window the
  features were taken with (they travel with the features, so a config change never
  mixes incompatible features); per trial its features (N, K, 2) nats and
  val_bpb (N,), and its reference's (NaN without one). Decision settings come from `cfg`.
  """
  checkpoints: np.ndarray
  fit_start: float
  features: np.ndarray
  targets: np.ndarray
  ref_features: np.ndarray
  ref_targets: np.ndarray
  cfg: EvaluatorConfig
  _models: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @classmethod
  def create(cls, cfg: EvaluatorConfig) -> 'Calibration':
    """An empty calibration with checkpoints at multiples of cfg.check_every below 1."""
    count = max(int(math.ceil(1.0 / cfg.check_every - 1e-6)) - 1, 1)
    checkpoints = np.round(np.arange(1, count + 1) * cfg.check_every, 6)
    empty = np.zeros((0, count, 2))
    return cls(checkpoints, cfg.fit_start, empty, np.zeros(0), empty.copy(),
               np.zeros(0), cfg)

  @property
  def num_trials(self) -> int:
    return len(self.targets)

  def features_of(self, record: TrialRecord, budget_seconds: Optional[float] = None):
    """Features (K, 2) of a completed ledger row, or None if it has no score or curve.
    Progress is seconds / budget_seconds (default: the row's own budget)."""
    budget = budget_seconds or record.budget_seconds
    if not (record.scored and record.loss_curve and budget):
      return None
    return power_law.trial_features(record.loss_curve, float(budget),
                                    self.checkpoints, self.fit_start)

  def reference(self, records: Sequence[TrialRecord], bpb: float,
                budget_seconds: Optional[float] = None) -> Optional[Reference]:
    """The Reference of a best genotype from its completed run(s) (features averaged,
    e.g. over the baseline's noise runs) and its val_bpb (e.g. their mean)."""
    pairs = [(r, self.features_of(r, budget_seconds)) for r in records]
    used = [r for r, f in pairs if f is not None]
    if not used or not math.isfinite(bpb):
      return None
    feats = [f for _, f in pairs if f is not None]
    bins = [curve_predictor.record_bins(r.loss_curve, float(budget_seconds or r.budget_seconds))
            for r in used]
    with warnings.catch_warnings():   # a bin no run reached stays NaN
      warnings.simplefilter('ignore', RuntimeWarning)
      mean_bins = np.nanmean(np.stack(bins), axis=0) if len(bins) > 1 else bins[0]
    return Reference(np.mean(feats, axis=0), float(bpb), mean_bins)

  def update(self, record: TrialRecord, reference: Optional[Reference] = None,
             budget_seconds: Optional[float] = None) -> bool:
    """Adds a ledger record if it completed with a finite val_bpb; returns whether it did.
    `reference`: the one its evaluator compared it with (the best when it ran)."""
    feats = self.features_of(record, budget_seconds)
    if feats is None:
      return False
    self.add(feats, float(record.val_bpb), reference)
    return True

  def add(self, features: np.ndarray, final_bpb: float,
          reference: Optional[Reference] = None) -> None:
    """Adds one trial's (K, 2) features and final val_bpb; keeps the newest max_history."""
    ref_features = np.full_like(features, np.nan) if reference is None else reference.features
    ref_bpb = math.nan if reference is None else reference.bpb
    keep = self.cfg.max_history - 1

    def append(old, new):
      return np.concatenate([old[len(old) - keep:] if keep else old[:0], np.asarray(new)[None]])

    self.features, self.targets = append(self.features, features), append(self.targets, final_bpb)
    self.ref_features = append(self.ref_features, ref_features)
    self.ref_targets = append(self.ref_targets, ref_bpb)
    self._models.clear()

  def _model(self, k: int, paired: bool):
    """The (cached) regression at checkpoint k; see `_ridge`."""
    if (k, paired) not in self._models:
      x_Nx2 = self.features[:, k] / LN2
      y_N = self.targets
      if paired:
        x_Nx2, y_N = x_Nx2 - self.ref_features[:, k] / LN2, y_N - self.ref_targets
      self._models[k, paired] = _ridge(x_Nx2, y_N - x_Nx2[:, 0], self.cfg.ridge,
                                       self.ref_targets if paired else None)
    return self._models[k, paired]

  def _checkpoint(self, progress: float, reference: Optional[Reference]):
    """(k, paired): the checkpoint a prediction at `progress` uses, and whether it can be
    paired with `reference` there."""
    k = int(np.searchsorted(self.checkpoints, progress + 1e-6, side='right')) - 1
    k = min(max(k, 0), len(self.checkpoints) - 1)
    paired = reference is not None and bool(np.all(np.isfinite(reference.features[k])))
    return k, paired

  def calibrated(self, progress: float, reference: Optional[Reference] = None) -> bool:
    """Whether a prediction at `progress` has a learnt std (else it is prior_std)."""
    k, paired = self._checkpoint(progress, reference)
    model = self._model(k, paired) if progress >= self.checkpoints[0] - 1e-6 else None
    return model is not None and model[0] >= self.cfg.min_history

  def predict(self, features: np.ndarray, progress: float,
              reference: Optional[Reference] = None) -> tuple[float, float]:
    """(mean, std) of the final val_bpb for features (2,) nats taken at `progress`, paired
    with `reference` when given."""
    x_2 = np.asarray(features, np.float64) / LN2
    k, paired = self._checkpoint(progress, reference)
    if paired:
      x_2 = x_2 - reference.features[k] / LN2
    base = x_2[0] + (reference.bpb if paired else 0.0)   # the plain extrapolation
    model = self._model(k, paired) if progress >= self.checkpoints[0] - 1e-6 else None
    if model is None:
      return float(base), self.cfg.prior_std
    n, x_mean, z_mean, slope_2, inv_2x2, out_rms = model
    xc_2 = x_2 - x_mean
    mean = float(base + z_mean + xc_2 @ slope_2)
    if n < self.cfg.min_history:
      return mean, self.cfg.prior_std
    # The leverage of the new point widens predictions away from the history's features.
    std = out_rms * math.sqrt(1.0 + 1.0 / n + float(xc_2 @ inv_2x2 @ xc_2))
    return mean, max(std, self.cfg.min_std)

  def prepare(self, paired: bool) -> None:
    """Fits every checkpoint's model now (before a trial's clock starts)."""
    for k in range(len(self.checkpoints)):
      self._model(k, paired)

  def to_dict(self) -> dict:
    """JSON-ready state (missing values as None; features rounded to micro-nats)."""
    return dict(checkpoints=self.checkpoints.tolist(), fit_start=self.fit_start,
                features=_nan_to_none(np.round(self.features, 6)),
                targets=self.targets.tolist(),
                ref_features=_nan_to_none(np.round(self.ref_features, 6)),
                ref_targets=_nan_to_none(self.ref_targets))

  @classmethod
  def from_dict(cls, state: dict, cfg: EvaluatorConfig) -> 'Calibration':
    """Inverse of to_dict (also accepts arrays, e.g. restored by Orbax)."""
    checkpoints = np.asarray(state['checkpoints'], np.float64).reshape(-1)

    def array(key, shape):
      return np.asarray(state[key], dtype=np.float64).reshape(shape)

    return cls(checkpoints, float(state['fit_start']),
               array('features', (-1, len(checkpoints), 2)), array('targets', (-1,)),
               array('ref_features', (-1, len(checkpoints), 2)), array('ref_targets', (-1,)),
               cfg)

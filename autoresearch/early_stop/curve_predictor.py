"""The learned curve predictor: the final val_bpb of a running trial, relative to the
best's, as a Gaussian, from the two partial loss curves (the idea of LC-PFN: Adriaensen
et al., "Efficient Bayesian learning curve extrapolation using prior-data fitted
networks", NeurIPS 2023 — a network trained offline on curves, predicting the
distribution of a curve's end from its start in one forward pass).

    bins = curve_predictor.curve_bins(progress, loss)              # (NUM_BINS,) nats
    model = curve_predictor.load('predictors/curve_mlp')           # cached per folder
    mean_bits, std_bits = model.predict(bins, reference_bins, progress)
    # final val_bpb ~ N(reference_bpb + mean_bits, std_bits^2)

* **Input.** A curve is the mean training loss in NUM_BINS bins of progress (training
  seconds / budget) of width BIN_WIDTH; at progress p only the bins that end by p count.
  The network sees the trial's bins minus the best's, each curve relative to its own
  last complete bin, the masks, p, and the two curves' levels. Comparing with the best's
  curve at the same progress is what makes it carry over between corpora, budgets and
  machines: an absolute map from train loss to val_bpb does not (the train/val gap and
  the warmdown's late drop differ), a difference between two runs of one search does.
* **Output.** mean and log-std of (trial's final val_bpb - best's) in bits/byte; the mean
  is a correction to the difference of the two curves' last bins. Trained with the
  Gaussian negative log-likelihood (benchmarks/train_curve_predictor.py) on synthetic
  curve families and recorded searches, every finished trial included, so its spread is
  learnt also on the trials an online calibration never sees the end of (the stopped).
* **Shipped** as a folder: `predictor.json` (sizes, how it was made) and `params/`
  (Orbax, checkpointing.save_tree), a few hundred kB.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autoresearch import PROJECT_FOLDER
from autoresearch.workdir import checkpointing


BIN_WIDTH = 0.025                  # fraction of the budget per bin of the encoded curve
NUM_BINS = 40                      # bins up to progress 1
INPUT_DIM = 4 * NUM_BINS + 4       # see `encode`
LN2 = math.log(2.0)


class PredictorError(ValueError):
  """A predictor folder that is missing, unreadable or made for another encoding."""


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
  """Sizes of the network (shipped in predictor.json)."""
  hidden: int = 128     # units per hidden layer
  layers: int = 2       # hidden layers
  input_dim: int = INPUT_DIM
  bin_width: float = BIN_WIDTH


class CurveMLP(nnx.Module):
  """x (B, INPUT_DIM) -> (B, 2): [correction to the difference now (bits), log std]."""

  def __init__(self, cfg: PredictorConfig, rngs: nnx.Rngs):
    sizes = [cfg.input_dim] + [cfg.hidden] * cfg.layers
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
    self.head = nnx.Linear(sizes[-1], 2, rngs=rngs)

  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    h_BxH = x_BxI
    for layer in self.hidden:
      h_BxH = jax.nn.gelu(layer(h_BxH))
    return self.head(h_BxH)


# --- the encoding (numpy: the same for training, the replay and the live evaluator) ----

def curve_bins(progress: Sequence[float], loss: Sequence[float]) -> np.ndarray:
  """(NUM_BINS,) mean loss (nats) of the readings in each bin of progress; NaN where a bin
  has no finite reading. Bin g holds progress in (g·BIN_WIDTH, (g+1)·BIN_WIDTH]."""
  p, y = np.asarray(progress, np.float64), np.asarray(loss, np.float64)
  keep = np.isfinite(p) & np.isfinite(y) & (p > 0) & (p <= 1.0 + 1e-9)
  index = np.minimum(np.ceil(p[keep] / BIN_WIDTH - 1e-9).astype(np.int64) - 1, NUM_BINS - 1)
  index = np.maximum(index, 0)
  sums = np.bincount(index, y[keep], NUM_BINS)
  counts = np.bincount(index, minlength=NUM_BINS)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def record_bins(loss_curve, budget_seconds: float) -> np.ndarray:
  """curve_bins of a ledger loss_curve [[seconds, step, loss], ...]."""
  curve = np.asarray(loss_curve, np.float64).reshape(-1, 3)
  return curve_bins(curve[:, 0] / budget_seconds, curve[:, 2])


def complete_bins(progress: float) -> int:
  """How many bins have ended by `progress`."""
  return int(min(max(math.floor(progress / BIN_WIDTH + 1e-6), 0), NUM_BINS))


def encode(trial_bins_NxG: np.ndarray, ref_bins_NxG: np.ndarray,
           progress_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(x (N, INPUT_DIM) float32, base (N,) bits): the network's input for N (trial,
  reference, progress) triples, and the difference of the two curves' last complete
  bins in bits, which the network corrects. NaN base where the curves share no bin."""
  trial = np.atleast_2d(trial_bins_NxG).astype(np.float64)
  ref = np.atleast_2d(ref_bins_NxG).astype(np.float64)
  progress_N = np.broadcast_to(np.asarray(progress_N, np.float64), trial.shape[:1])
  done_N = np.array([complete_bins(p) for p in progress_N])
  upto_NxG = np.arange(NUM_BINS)[None, :] < done_N[:, None]
  mask_t, mask_r = upto_NxG & np.isfinite(trial), upto_NxG & np.isfinite(ref)
  last_t, last_r = _last(trial, mask_t), _last(ref, mask_r)
  both = mask_t & mask_r
  diff = np.where(both, trial - ref, 0.0)
  shape_t = np.where(mask_t, trial - last_t[:, None], 0.0)
  shape_r = np.where(mask_r, ref - last_r[:, None], 0.0)
  base = (last_t - last_r) / LN2
  scalars = np.stack([progress_N, np.nan_to_num(last_t - last_r), np.nan_to_num(last_t) / 4.0,
                      np.nan_to_num(last_r) / 4.0], axis=1)
  x = np.concatenate([diff, shape_t, shape_r, both.astype(np.float64), scalars], axis=1)
  base = np.where(both.any(axis=1), base, np.nan)
  return x.astype(np.float32), base


def _last(bins_NxG: np.ndarray, mask_NxG: np.ndarray) -> np.ndarray:
  """The value of each row's last bin in `mask` (NaN where none)."""
  index = NUM_BINS - 1 - np.argmax(mask_NxG[:, ::-1], axis=1)
  values = np.take_along_axis(bins_NxG, index[:, None], axis=1)[:, 0]
  return np.where(mask_NxG.any(axis=1), values, np.nan)


# --- the model in use -------------------------------------------------------------------

class Prediction(NamedTuple):
  mean_bits: np.ndarray   # (N,) predicted trial final - reference final, bits/byte
  std_bits: np.ndarray    # (N,)


def outputs_to_prediction(out_Nx2, base_N) -> tuple:
  """Mean and std (bits) from the network's outputs and the base difference."""
  return base_N + out_Nx2[..., 0], jnp.exp(jnp.clip(out_Nx2[..., 1], -9.0, 3.0))


class Predictor:
  """A trained CurveMLP with its forward pass jitted on the host CPU."""

  def __init__(self, model: CurveMLP, cfg: PredictorConfig, about: Optional[dict] = None):
    self.cfg, self.about = cfg, about or {}
    graphdef, state = nnx.split(model)
    cpu = jax.devices('cpu')[0]   # as the power-law fit: never queued behind a trial's steps
    self._state = jax.device_put(state, cpu)

    @jax.jit
    def forward(state, x_NxI, base_N):
      return outputs_to_prediction(nnx.merge(graphdef, state)(x_NxI), base_N)

    self._forward, self._cpu = forward, cpu

  def predict_many(self, trial_bins, ref_bins, progress) -> Prediction:
    """Predictions for N triples (rows of bins, progress (N,)); NaN where no shared bin."""
    x, base = encode(trial_bins, ref_bins, progress)
    mean, std = self._forward(self._state, jax.device_put(x, self._cpu),
                              jax.device_put(np.nan_to_num(base).astype(np.float32), self._cpu))
    ok = np.isfinite(base)
    return Prediction(np.where(ok, np.asarray(mean, np.float64), np.nan),
                      np.where(ok, np.asarray(std, np.float64), np.nan))

  def predict(self, trial_bins: np.ndarray, ref_bins: np.ndarray,
              progress: float) -> tuple[float, float]:
    """(mean, std) bits/byte of the trial's final val_bpb minus the reference's; NaNs
    when the curves share no complete bin yet. One row: the same compiled shape always."""
    out = self.predict_many(trial_bins[None], ref_bins[None], np.array([progress]))
    return float(out.mean_bits[0]), float(out.std_bits[0])


def save(folder: str, model: CurveMLP, cfg: PredictorConfig, about: dict) -> None:
  """Writes a predictor folder (replacing one that is there)."""
  folder = os.path.abspath(folder)
  os.makedirs(folder, exist_ok=True)
  checkpointing.save_tree(os.path.join(folder, 'params'), nnx.to_pure_dict(nnx.state(model)))
  # Orbax's marker names the absolute folder it was written to; a shipped folder moves,
  # and a local restore does not read it.
  marker = os.path.join(folder, 'params', 'commit_success.txt')
  if os.path.exists(marker):
    os.remove(marker)
  with open(os.path.join(folder, 'predictor.json'), 'w') as f:
    json.dump({'predictor_config': dataclasses.asdict(cfg), **about}, f, indent=1)


def resolve(folder: str) -> str:
  """`folder` as given when it exists, else relative to the project folder."""
  if os.path.isabs(folder) or os.path.exists(folder):
    return os.path.abspath(folder)
  return os.path.join(PROJECT_FOLDER, folder)


@functools.lru_cache(maxsize=4)
def load(folder: str) -> Predictor:
  """The predictor in `folder` (cached: every trial's evaluator shares it); compiled
  once here, outside any trial's clock. PredictorError when it cannot be used."""
  path = resolve(folder)
  try:
    with open(os.path.join(path, 'predictor.json')) as f:
      saved = json.load(f)
    cfg = PredictorConfig(**saved.pop('predictor_config'))
  except (OSError, ValueError, TypeError, KeyError) as e:
    raise PredictorError(f'{path}: not a readable curve predictor folder ({e})') from e
  if (cfg.input_dim, cfg.bin_width) != (INPUT_DIM, BIN_WIDTH):
    raise PredictorError(f'{path}: made for input_dim {cfg.input_dim}, bin_width '
                         f'{cfg.bin_width}; this code encodes {INPUT_DIM}, {BIN_WIDTH}')
  model = CurveMLP(cfg, nnx.Rngs(0))
  like = nnx.to_pure_dict(nnx.state(model))
  try:
    params = checkpointing.restore_tree(os.path.join(path, 'params'), like)
  except checkpointing.CheckpointError as e:
    raise PredictorError(str(e)) from e
  nnx.replace_by_pure_dict(state := nnx.state(model), params)
  nnx.update(model, state)
  predictor = Predictor(model, cfg, saved)
  predictor.predict(np.full(NUM_BINS, 2.0), np.full(NUM_BINS, 2.0), 0.5)   # compile now
  return predictor

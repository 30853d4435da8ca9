"""Trains the learned curve predictor (autoresearch/early_stop/curve_predictor.py) offline, on CPU.

    python benchmarks/train_curve_predictor.py [--out=predictors/curve_mlp]
        [--steps=4000] [--synthetic_searches=200] [RECORDED.jsonl ...]

Examples are (trial, reference, progress) triples from one search: a recorded one (by
default the committed design recordings, benchmarks/data/*_trials.jsonl: every trial
with a final, those an online evaluator would have stopped too) or a synthetic one
(benchmarks/curve_families.py); half of each minibatch from either. Every ordered pair of
finished trials of a search whose reference is among its best 30% (online the reference
is the best so far), and every progress on the 2.5% grid from 5% to 95% is an
example. The target is the difference of the two finals (bits/byte); the loss is the
Gaussian negative log-likelihood. A fifth of each recording's trials (every fifth) is
held out of training, and the last lines print the held-out pairs' MAE and coverage of
the 90% interval at 10, 25 and 50% of the budget, then `heldout_nll: X`.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from autoresearch.early_stop import curve_predictor as cp  # noqa: E402
from autoresearch.workdir import ledger  # noqa: E402
from benchmarks import curve_families  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
PROGRESS_GRID = np.round(np.arange(0.05, 0.951, cp.BIN_WIDTH), 6)   # training progress
REPORT_POINTS = (0.1, 0.25, 0.5)
Z90 = 1.6448536269514722


def load_recorded(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(bins (N, NUM_BINS), finals (N,)) of a recording's finished trials, in order."""
  bins, finals = [], []
  for record in ledger.read_records(path):
    if record.scored and record.loss_curve and record.budget_seconds:
      bins.append(cp.record_bins(record.loss_curve, record.budget_seconds))
      finals.append(record.val_bpb)
  return np.stack(bins), np.asarray(finals)


REFERENCE_SHARE = 0.3   # references are drawn from this best share of a search's trials


def pairs(finals: np.ndarray, rows: np.ndarray, reference_share: float = REFERENCE_SHARE):
  """Ordered pairs (trial i, reference j), i != j, of `rows` (indices into `finals`),
  with j among the best `reference_share` of the rows: online the reference is the best
  so far, so what matters is a trial's end against a good trial's, not two poor ones'."""
  cut = np.quantile(finals[rows], reference_share) if len(rows) else 0.0
  refs = rows[finals[rows] <= cut]
  i, j = np.meshgrid(rows, refs, indexing='ij')
  keep = i != j
  return np.stack([i[keep], j[keep]], axis=1)


class Sampler:
  """Random minibatches of encoded triples from a list of (bins, finals, pairs) searches."""

  def __init__(self, searches, rng: np.random.Generator):
    self.searches, self.rng = [s for s in searches if len(s[2])], rng
    self.weights = np.array([len(s[2]) ** 0.5 for s in self.searches])
    self.weights /= self.weights.sum()

  def batch(self, size: int):
    which = self.rng.choice(len(self.searches), size, p=self.weights)
    trial, ref, target = [], [], []
    for s in np.unique(which):
      bins, finals, pair = self.searches[s]
      picked = pair[self.rng.integers(0, len(pair), np.sum(which == s))]
      trial.append(bins[picked[:, 0]])
      ref.append(bins[picked[:, 1]])
      target.append(finals[picked[:, 0]] - finals[picked[:, 1]])
    progress = self.rng.choice(PROGRESS_GRID, size)
    x, base = cp.encode(np.concatenate(trial), np.concatenate(ref), progress)
    target = np.concatenate(target)
    ok = np.isfinite(base) & np.isfinite(target)
    return x[ok], base[ok].astype(np.float32), target[ok].astype(np.float32)


def nll(model, x, base, target):
  mean, std = cp.outputs_to_prediction(model(x), base)
  return jnp.mean(jnp.log(std) + 0.5 * ((target - mean) / std) ** 2)


def train(samplers, steps: int, batch: int, seed: int) -> cp.CurveMLP:
  """Adam with cosine decay on the NLL; each minibatch half from each sampler."""
  cfg = cp.PredictorConfig()
  model = cp.CurveMLP(cfg, nnx.Rngs(seed))
  schedule = optax.cosine_decay_schedule(2e-3, steps, alpha=0.05)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, base, target):
    loss, grads = nnx.value_and_grad(nll)(model, x, base, target)
    optimizer.update(model, grads)
    return loss

  start = time.perf_counter()
  for k in range(steps):
    parts = [s.batch(batch // len(samplers)) for s in samplers]
    x, base, target = (np.concatenate(a) for a in zip(*parts))
    # One padded shape (the encoding can drop a few rows): repeat rows up to `batch`.
    take = np.resize(np.arange(len(x)), batch)
    loss = step(model, optimizer, x[take], base[take], target[take])
    if k % 500 == 0 or k == steps - 1:
      print(f'step {k}: nll {float(loss):.4f} ({time.perf_counter() - start:.0f} s)', flush=True)
  return model


def heldout_report(model, searches) -> list[str]:
  """MAE and 90% coverage on held-out pairs at REPORT_POINTS, and the mean NLL."""
  predictor = cp.Predictor(model, cp.PredictorConfig())
  lines, nlls = [], []
  for point in REPORT_POINTS:
    errors, inside = [], []
    for bins, finals, pair in searches:
      if not len(pair):
        continue
      out = predictor.predict_many(bins[pair[:, 0]], bins[pair[:, 1]],
                                   np.full(len(pair), point))
      target = finals[pair[:, 0]] - finals[pair[:, 1]]
      ok = np.isfinite(out.mean_bits)
      z = (target[ok] - out.mean_bits[ok]) / out.std_bits[ok]
      errors.append(np.abs(target[ok] - out.mean_bits[ok]))
      inside.append(np.abs(z) <= Z90)
      nlls.append(np.log(out.std_bits[ok]) + 0.5 * z ** 2 + 0.5 * np.log(2 * np.pi))
    lines.append(f'held-out pairs at {point:.0%}: MAE {np.mean(np.concatenate(errors)):.4f} '
                 f'bits/byte, coverage90 {np.mean(np.concatenate(inside)):.3f}')
  lines.append(f'heldout_nll: {np.mean(np.concatenate(nlls)):.4f}')
  return lines


def main(argv=None) -> list[str]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('paths', nargs='*', help='recorded trials.jsonl (default: the design data)')
  parser.add_argument('--out', default='predictors/curve_mlp', help='predictor folder to write')
  parser.add_argument('--steps', type=int, default=4000, help='optimizer steps')
  parser.add_argument('--batch', type=int, default=512, help='triples per step')
  parser.add_argument('--synthetic_searches', type=int, default=200)
  parser.add_argument('--synthetic_trials', type=int, default=30, help='trials per search')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  jax.config.update('jax_platforms', 'cpu')
  paths = args.paths or sorted(glob.glob(os.path.join(DATA, '*_trials.jsonl')))
  rng = np.random.default_rng(args.seed)
  train_real, held_real = [], []
  for path in paths:
    bins, finals = load_recorded(path)
    rows = np.arange(len(finals))
    held = rows % 5 == 4
    train_real.append((bins, finals, pairs(finals, rows[~held])))
    held_real.append((bins, finals, pairs(finals, rows[held])))
    print(f'{path}: {len(rows)} finished trials ({held.sum()} held out)', flush=True)
  synthetic = []
  for _ in range(args.synthetic_searches):
    bins, finals = curve_families.synthetic_search(rng, args.synthetic_trials)
    synthetic.append((bins, finals, pairs(finals, np.arange(len(finals)))))
  model = train([Sampler(train_real, rng), Sampler(synthetic, rng)], args.steps, args.batch,
                args.seed)
  about = {'made_by': 'benchmarks/train_curve_predictor.py', 'steps': args.steps,
           'batch': args.batch, 'seed': args.seed,
           'synthetic_searches': args.synthetic_searches,
           'recorded': [os.path.relpath(p, os.path.dirname(os.path.dirname(DATA))) for p in paths]}
  cp.save(cp.resolve(args.out), model, cp.PredictorConfig(), about)
  lines = heldout_report(model, held_real)
  for line in lines:
    print(line, flush=True)
  return lines


if __name__ == '__main__':
  main()

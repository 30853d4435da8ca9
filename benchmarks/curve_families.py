"""Synthetic searches of learning curves, for training the learned curve predictor
(autoresearch/early_stop/curve_predictor.py; LC-PFN's idea of training on curves drawn from
a prior).

A synthetic search is a set of trials that share what a real search's trials share (the
corpus's train/val gap, the reading noise of a batch size, a typical schedule) and
differ in what an edit changes. Each trial's clean loss (nats) over progress p in (0, 1]:

* power law: c + a·(p + p0)^(-b) (Domhan et al., 2015; Kaplan et al., 2020);
* plateau: from p_flat on the curve only falls at `flat_rate` of its power-law pace;
* late drop: the warmdown's fall over the last w of the budget (Hägele et al., 2024),
  d·s^1.5 with s the progress through the warmdown;
* divergence: from p_div on, e·(exp((p - p_div)/tau) - 1) added;

and its readings add Gaussian noise. Its final val_bpb is the clean loss at p = 1 in
bits, plus the search's gap, a trial's own gap and evaluation noise.
"""

from __future__ import annotations

import math

import numpy as np

from autoresearch.early_stop import curve_predictor


LN2 = math.log(2.0)


def clean_curve(p: np.ndarray, t: dict) -> np.ndarray:
  """The noise-free loss (nats) of one trial's parameters `t` at progress p."""
  base = t['c'] + t['a'] * (p + t['p0']) ** -t['b']
  flat_at = t['c'] + t['a'] * (t['p_flat'] + t['p0']) ** -t['b']
  flat = flat_at + t['flat_rate'] * (base - flat_at)
  loss = np.where(p > t['p_flat'], flat, base)
  if t['w'] > 0:
    s = np.clip((p - (1.0 - t['w'])) / t['w'], 0.0, 1.0)
    loss = loss - t['drop'] * s ** 1.5
  if t['p_div'] < 1.0:
    grow = np.expm1(np.clip((p - t["p_div"]) / t["tau"], 0.0, 3.0))
    loss = loss + t['e'] * grow
  return loss


def _trial(rng: np.random.Generator, search: dict) -> dict:
  """One trial's parameters around its search's."""
  edited = rng.random() < 0.4   # an edit of the schedule: warmdown of its own
  t = dict(c=search['c'] + rng.normal(0.0, search['spread']),
           a=search['a'] * math.exp(rng.normal(0.0, 0.3)),
           b=search['b'] * math.exp(rng.normal(0.0, 0.25)),
           p0=search['p0'] * math.exp(rng.normal(0.0, 0.3)),
           p_flat=1.0, flat_rate=1.0, p_div=1.0, tau=0.1, e=0.0,
           w=rng.choice([0.0, 0.1, 0.2, 0.3, 0.5]) if edited else search['w'],
           drop=search['drop'] * math.exp(rng.normal(0.0, 0.3)),
           steps=int(search['steps'] * math.exp(rng.normal(0.0, 0.4))) + 8)
  t['c'] = max(t['c'], 0.3)
  if rng.random() < 0.15:   # a plateau
    t['p_flat'], t['flat_rate'] = rng.uniform(0.05, 0.7), rng.uniform(0.0, 0.5)
  if rng.random() < 0.06:   # a divergence
    t['p_div'], t['tau'], t['e'] = rng.uniform(0.1, 0.95), rng.uniform(0.02, 0.3), \
        rng.uniform(0.05, 0.5)
  return t


def _search(rng: np.random.Generator) -> dict:
  """The parameters a synthetic search's trials share."""
  return dict(c=rng.uniform(0.8, 3.0), spread=math.exp(rng.uniform(math.log(0.01), math.log(0.3))),
              a=rng.uniform(0.1, 1.5), b=rng.uniform(0.15, 1.0), p0=rng.uniform(0.002, 0.05),
              w=rng.choice([0.0, 0.2, 0.3, 0.4]), drop=rng.uniform(0.0, 0.3),
              steps=int(math.exp(rng.uniform(math.log(60), math.log(1200)))),
              noise=math.exp(rng.uniform(math.log(0.01), math.log(0.3))),
              gap=rng.normal(0.2, 0.3), gap_spread=rng.uniform(0.0, 0.03),
              eval_noise=math.exp(rng.uniform(math.log(0.002), math.log(0.05))))


def synthetic_search(rng: np.random.Generator, trials: int) -> tuple[np.ndarray, np.ndarray]:
  """(bins (trials, NUM_BINS) nats, finals (trials,) bits/byte) of one synthetic search."""
  search = _search(rng)
  bins, finals = [], []
  for _ in range(trials):
    t = _trial(rng, search)
    p = np.arange(1, t['steps'] + 1) / t['steps']
    noise = search['noise'] * math.exp(rng.normal(0.0, 0.2))
    loss = clean_curve(p, t) + rng.normal(0.0, noise, p.shape)
    bins.append(curve_predictor.curve_bins(p, loss))
    final = clean_curve(np.array([1.0]), t)[0] / LN2 + search['gap']
    finals.append(final + rng.normal(0.0, search['gap_spread']) +
                  rng.normal(0.0, search['eval_noise']))
  return np.stack(bins), np.asarray(finals)

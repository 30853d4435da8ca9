"""Optuna's TPE and CMA-ES samplers as agents of the search (ask-and-tell).

Each gene is one integer parameter: the index into its ordered value set (the sets are
ordered so that neighbouring values are neighbouring recipes, which is what TPE's and
CMA-ES's models assume). The baseline is told to the study first, as a finished trial
with the baseline's val_bpb, so both samplers start from what every agent here knows;
CMA-ES is also centred on it (`x0`) and uses the margin for integer variables (Hamano
et al. 2022, `with_margin=True`); its step size and TPE's settings are Optuna's
defaults.

The study lives in `workdir/optuna_<kind>.journal` (Optuna's journal file storage), so
the samplers resume with the search. The search's checkpoint is the authority: it
records how many trials the study had been told, and on restore the journal is cut
back to those (a trial asked but not told when the process died, or told after the
last checkpoint, is dropped and proposed afresh). The sampler is re-seeded before each
ask from (seed, trials told), so a resumed search asks what an uninterrupted one would.

A genotype the sampler proposes that cannot be trained (heads not dividing the width,
too many parameters, ...) is trained as a crash by the trial runner, and told to the
study as failed; so is any other crash. An aborted trial is told its predicted val_bpb.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import optuna
from optuna.distributions import IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autoresearch.agents.api import Proposal, SearchView
from autoresearch.space import genotype as genotype_lib
from autoresearch.trial.config import ConfigError
from autoresearch.workdir import io as workdir_io


DISTRIBUTIONS = {gene.name: IntDistribution(0, len(gene.values) - 1) for gene in genotype_lib.GENES}


def to_params(genotype: genotype_lib.Genotype) -> dict[str, int]:
  return {gene.name: genotype_lib.value_index(genotype, gene.name) for gene in genotype_lib.GENES}


def from_params(params: dict[str, int]) -> dict[str, Any]:
  return {gene.name: gene.values[params[gene.name]] for gene in genotype_lib.GENES}


class OptunaAgent:
  """`kind` 'tpe' (TPESampler) or 'cmaes' (CmaEsSampler) over the whole genotype."""

  def __init__(self, kind: str, seed: int, workdir: str):
    if kind not in ('tpe', 'cmaes'):
      raise ValueError(f'unknown Optuna agent {kind!r}')
    if not workdir:
      raise ValueError(f'agent.kind={kind!r} keeps its study in the workdir; none was given')
    if not workdir_io.is_local(workdir):   # Optuna's journal file needs local file locks
      raise ConfigError(f'agent.kind={kind!r} keeps its study in a journal file in the '
                        f'workdir, which must be a local folder, not {workdir}')
    self.kind, self.seed = kind, seed
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, f'optuna_{kind}.journal')
    self.study_name = f'autoresearch-{kind}'
    self.told = 0          # finished trials of the study that the checkpoint knows of
    self.pending = None    # number of the trial asked and not yet told
    self.study = None      # opened (and cut back to `told`) at first use
    optuna.logging.set_verbosity(optuna.logging.WARNING)

  # --- the study -----------------------------------------------------------------------

  def _open(self, path: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(path))
    return optuna.create_study(study_name=self.study_name, storage=storage, direction='minimize',
                               load_if_exists=True)

  def _sampler(self, baseline: dict) -> optuna.samplers.BaseSampler:
    seed = (self.seed * 1_000_003 + self.told) % 2**32   # numpy's seeds are 32-bit
    if self.kind == 'tpe':
      return optuna.samplers.TPESampler(seed=seed)
    with warnings.catch_warnings():  # x0 is deprecated since Optuna 4.9, kept in 5.0
      warnings.simplefilter('ignore')
      return optuna.samplers.CmaEsSampler(x0=to_params(baseline), seed=seed, with_margin=True,
                                          warn_independent_sampling=False)

  def _study(self) -> optuna.Study:
    """The study holding exactly the `told` finished trials (rebuilt when it differs)."""
    if self.study is not None:
      return self.study
    study = self._open(self.path)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    if len(finished) < self.told:
      raise ValueError(f'{self.path} holds {len(finished)} finished trials, the checkpoint '
                       f'{self.told}: the journal was lost or truncated')
    if len(trials) != self.told:
      rebuilt = self.path + '.rebuild'
      if os.path.exists(rebuilt):
        os.remove(rebuilt)
      self._open(rebuilt).add_trials(finished[:self.told])
      os.replace(rebuilt, self.path)
      study = self._open(self.path)
    self.study = study
    return study

  # --- the agent interface -------------------------------------------------------------

  def propose(self, view: SearchView) -> Proposal:
    study = self._study()
    baseline, baseline_bpb = view.best_genotype, view.best_bpb
    if self.told == 0:  # The baseline, as a finished trial: what every agent starts from.
      study.add_trial(optuna.trial.create_trial(params=to_params(baseline),
                                                distributions=DISTRIBUTIONS, value=baseline_bpb))
      self.told = 1
    study.sampler = self._sampler(baseline)
    trial = study.ask(DISTRIBUTIONS)
    self.pending = trial.number
    return Proposal(-1, -1, genotype=from_params(trial.params))

  def observe(self, view, proposal, reward, next_view, outcome) -> dict:
    if outcome.bpb is None:
      self.study.tell(self.pending, state=TrialState.FAIL)
    else:
      self.study.tell(self.pending, outcome.bpb)
    self.pending = None
    self.told += 1
    return {}

  def state_dict(self) -> tuple[Any, dict]:
    return {}, {'told': self.told}

  def load_state_dict(self, arrays, meta: dict) -> None:
    self.told, self.pending, self.study = meta['told'], None, None

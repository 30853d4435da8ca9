"""The agent a config names (`agent.kind`):

  ppo            a Flax actor-critic over edits of the best, trained by PPO (the default)
  random         a uniformly random valid edit of the best
  random_global  a uniformly random valid genotype of the whole space (random search)
  evolution      regularized evolution (Real et al. 2019): a population of the last
                 `evolution.population` trials; the best of `evolution.tournament`
                 random members is mutated by one random valid edit; the oldest dies
  tpe, cmaes     Optuna's TPE and CMA-ES samplers through ask-and-tell
                 (third_party/optuna_agents.py)
Optuna's samplers may propose invalid genotypes, which the trial records as crashes and
the sampler is told as failed.
"""

from __future__ import annotations

from autoresearch.agents import simple
from autoresearch.agents.api import Agent


KINDS = ('ppo', 'random', 'random_global', 'evolution', 'tpe', 'cmaes')


def make(agent_config, seed: int, workdir: str = '') -> Agent:
  """The agent named by `agent_config.kind`; Optuna's keep their study in `workdir`."""
  kind = agent_config.kind
  if kind == 'ppo':
    from autoresearch.agents.ppo import agent as ppo_agent  # JAX and Flax: PPO only
    return ppo_agent.PPOAgent(agent_config, seed)
  if kind == 'random':
    return simple.RandomAgent(seed)
  if kind == 'random_global':
    return simple.RandomGlobalAgent(seed)
  if kind == 'evolution':
    return simple.EvolutionAgent(seed, agent_config.evolution.population,
                                 agent_config.evolution.tournament)
  if kind in ('tpe', 'cmaes'):
    from third_party import optuna_agents  # Optuna is a development requirement only.
    return optuna_agents.OptunaAgent(kind, seed, workdir)
  raise ValueError(f'agent.kind={kind!r} not in {KINDS}')

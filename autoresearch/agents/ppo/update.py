"""PPO math for the search agent: GAE, the clipped objective and one jitted update.

**Credit.** An edit's reward (what it adds to the best; agents/reward.py) is known
the moment its trial ends, and what the next edit earns depends on the search's state
far more than on this edit. So the default is γ = 0: the advantage of an edit is its
reward minus the critic's estimate of the reward an edit earns in that state (a learned
baseline), a contextual bandit. A discount near 0.9 would instead credit an edit with
its successors' luck: on a recorded search the normalised advantage then drifted from
−0.45 (first in a rollout) to +0.61 (last) by position alone. Advantages are normalised
over the whole rollout (a handful of transitions per minibatch would make each ±1), the
critic's change per update is clipped in reward units sized to the reward's range, and
many epochs over each small rollout let the policy move, with the ratio clip as the
trust region. γ > 0 still works (GAE below) for a reward with delayed consequences.

The agent acts in one never-ending stream of trials: there are no episodes, so GAE
bootstraps from the critic's value of the observation after the last transition and
never cuts the return. One update runs `epochs` passes of shuffled minibatches over a
rollout as a `lax.scan` over epochs around a `lax.scan` over minibatches, in the NNX
functional form: params are an `nnx.State` of the `ActorCritic`'s `nnx.Param`s and the
module is rebuilt with `nnx.merge(graphdef, params)` inside the traced function.

Shape suffixes: T rollout steps, M minibatches, P steps per minibatch.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from models import policy


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Hyper-parameters of the PPO update. No defaults here: their one home is
  `config.agent.ppo` in configs/default.py; build with `from_config`."""

  gamma: float           # discount per trial (the stream never ends)
  gae_lambda: float      # GAE bias/variance trade-off; 1 = Monte Carlo returns
  clip_eps: float        # policy ratio clip range [1 - eps, 1 + eps]
  value_clip_eps: float  # critic change clip around its acting-time estimate, reward units
  vf_coef: float         # weight of the value loss in the total loss
  ent_coef: float        # weight of the entropy bonus (nats) in the total loss
  learning_rate: float   # Adam step size
  max_grad_norm: float   # global gradient norm clip
  epochs: int            # passes over each rollout
  minibatches: int       # shuffled minibatches per pass; must divide the rollout length

  @classmethod
  def from_config(cls, config) -> PPOConfig:
    """The PPO hyper-parameters of `config.agent.ppo`; a missing or unknown field there
    raises TypeError."""
    return cls(**config.agent.ppo.to_dict())


class Rollout(NamedTuple):
  """T consecutive transitions of the stream, as the agent acted on them."""

  obs: policy.Observation  # every field with a leading T axis
  gene: jax.Array          # int32 (T,): edited gene
  value_index: jax.Array   # int32 (T,): index into the gene's value set
  log_prob: jax.Array      # float32 (T,): log pi(gene, value) when acting
  critic: jax.Array        # float32 (T,): critic estimate when acting
  reward: jax.Array        # float32 (T,)


def gae(rewards_T, critic_T, last_critic, gamma: float, lam: float):
  """Generalised advantage estimation over a continuing stream.

  delta_t = r_t + gamma V_{t+1} - V_t with V_T = `last_critic`, the critic's value of
  the observation after the last transition; A_t = delta_t + gamma lam A_{t+1}.
  Returns (advantages (T,), returns (T,) = advantages + critic).
  """
  next_critic_T = jnp.concatenate([critic_T[1:], jnp.reshape(last_critic, (1,))])
  deltas_T = rewards_T + gamma * next_critic_T - critic_T

  def step(next_advantage, delta):
    advantage = delta + gamma * lam * next_advantage
    return advantage, advantage

  _, advantages_T = jax.lax.scan(step, jnp.zeros((), deltas_T.dtype), deltas_T, reverse=True)
  return advantages_T, advantages_T + critic_T


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
  """Global-norm gradient clipping, then Adam."""
  return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                     optax.adam(cfg.learning_rate))


def clipped_surrogate(log_prob, old_log_prob, advantages, clip_eps: float):
  """Per-sample PPO objective (to maximise): min(r A, clip(r, 1 +- eps) A), r = pi/pi_old.

  The min makes the objective flat in r once r has moved past the clip in the
  direction the advantage rewards, which is what bounds the policy step.
  """
  ratio = jnp.exp(log_prob - old_log_prob)
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  return jnp.minimum(ratio * advantages, clipped * advantages)


def _normalize(x):
  return (x - jnp.mean(x)) / (jnp.std(x) + 1e-8)


def loss_fn(params: nnx.State, graphdef: nnx.GraphDef, minibatch: Rollout, advantages,
            returns, cfg: PPOConfig):
  """Total PPO loss on one minibatch and its metrics.

  loss = -surrogate + vf_coef * value_loss - ent_coef * entropy, with the advantages as
  given (normalised over the whole rollout by `make_update`) and the value loss clipped
  as in PPO2 (the larger of the unclipped and clipped squared errors, halved).
  Returns (loss, {policy_loss, value_loss, entropy, approx_kl, clip_fraction}).
  """
  model = nnx.merge(graphdef, params)
  outputs = model(minibatch.obs)
  edit_mask = minibatch.obs.edit_mask
  new_log_prob = policy.log_prob(outputs, edit_mask, minibatch.gene, minibatch.value_index)

  surrogate = clipped_surrogate(new_log_prob, minibatch.log_prob, advantages, cfg.clip_eps)
  policy_loss = -jnp.mean(surrogate)

  critic = outputs.value
  critic_clipped = minibatch.critic + jnp.clip(
      critic - minibatch.critic, -cfg.value_clip_eps, cfg.value_clip_eps)
  value_loss = 0.5 * jnp.mean(jnp.maximum(jnp.square(critic - returns),
                                          jnp.square(critic_clipped - returns)))

  entropy = jnp.mean(policy.entropy(outputs, edit_mask))
  loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy

  log_ratio = new_log_prob - minibatch.log_prob
  ratio = jnp.exp(log_ratio)
  metrics = {
      'policy_loss': policy_loss,
      'value_loss': value_loss,
      'entropy': entropy,
      # The low-variance, always non-negative KL estimator (Schulman's k3).
      'approx_kl': jnp.mean((ratio - 1.0) - log_ratio),
      'clip_fraction': jnp.mean((jnp.abs(ratio - 1.0) > cfg.clip_eps).astype(jnp.float32)),
  }
  return loss, metrics


def explained_variance(returns_T, critic_T):
  """1 - Var(returns - critic) / Var(returns): 1 is a perfect critic, 0 a constant one;
  NaN when the returns do not vary (every reward of a rollout 0): nothing to explain."""
  var = jnp.var(returns_T)
  return jnp.where(var > 1e-12, 1.0 - jnp.var(returns_T - critic_T) / jnp.maximum(var, 1e-12),
                   jnp.nan)


def make_update(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: PPOConfig):
  """A jitted `update(params, opt_state, rollout, last_critic, key) -> (params,
  opt_state, metrics)`: GAE once, advantages normalised over the whole rollout (a
  minibatch of a few transitions would make every advantage ±1), then `cfg.epochs`
  passes of `cfg.minibatches` shuffled minibatches. Metrics are the means over the last
  epoch's minibatches, plus explained_variance of the acting-time critic. Raises
  ValueError at trace time when the rollout length is not divisible by `cfg.minibatches`.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def minibatch_step(carry, batch):
    params, opt_state = carry
    minibatch, advantages, returns = batch
    grads, metrics = grad_fn(params, graphdef, minibatch, advantages, returns, cfg)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  @jax.jit
  def update(params, opt_state, rollout: Rollout, last_critic, key):
    t = rollout.reward.shape[0]
    if t % cfg.minibatches:
      raise ValueError(f'rollout length {t} is not divisible by minibatches={cfg.minibatches}')
    per_minibatch = t // cfg.minibatches
    advantages_T, returns_T = gae(rollout.reward, rollout.critic, last_critic,
                                  cfg.gamma, cfg.gae_lambda)
    advantages_T = _normalize(advantages_T)

    def epoch_step(carry, epoch_key):
      order_T = jax.random.permutation(epoch_key, t)

      def to_minibatches(x_T):
        x_T = jnp.take(x_T, order_T, axis=0)
        return x_T.reshape((cfg.minibatches, per_minibatch) + x_T.shape[1:])

      batches_M = jax.tree_util.tree_map(to_minibatches, (rollout, advantages_T, returns_T))
      carry, metrics_M = jax.lax.scan(minibatch_step, carry, batches_M)
      return carry, jax.tree_util.tree_map(jnp.mean, metrics_M)

    (params, opt_state), metrics_E = jax.lax.scan(
        epoch_step, (params, opt_state), jax.random.split(key, cfg.epochs))
    metrics = jax.tree_util.tree_map(lambda m: m[-1], metrics_E)
    metrics['explained_variance'] = explained_variance(returns_T, rollout.critic)
    return params, opt_state, metrics

  return update

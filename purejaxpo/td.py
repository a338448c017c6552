"""Temporal-difference math of the off-policy algorithms (SAC, TD3): small pure functions.

Each is tested against an independent float64 NumPy reference (``tests/test_td.py``):

* :func:`bellman_target`: the one-step target, bootstrapping through truncations and not
  through terminations;
* :func:`polyak`: the target networks' moving average;
* :func:`squashed_gaussian_log_prob`: the log-density of ``tanh(u)``, ``u ~ N(mean, std)``,
  with the change-of-variables correction in its numerically stable form;
* :func:`temperature_loss`: SAC's automatic entropy temperature;
* :func:`smoothed_target_action`: TD3's target policy smoothing.

Shapes: ``[N]`` transitions (a sampled minibatch) and ``[N, A]`` actions unless stated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOG_2 = 0.6931471805599453


def bellman_target(reward, next_value, terminated, gamma):
    """``reward + gamma * (1 - terminated) * next_value``, ``[N]``.

    ``next_value`` is the value of the true next observation (for a truncated episode, the
    observation the time limit cut, not the reset one): a truncation bootstraps, a
    termination does not.
    """
    return reward + gamma * (1.0 - terminated.astype(reward.dtype)) * next_value


def polyak(target, online, tau):
    """``(1 - tau) * target + tau * online`` leaf by leaf (``tau`` may be traced)."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def tanh_log_det(pre_tanh):
    """``sum log(1 - tanh(u)^2)`` over the last axis, as ``2 (log 2 - u - softplus(-2u))``
    (exact, and finite where ``1 - tanh(u)^2`` rounds to 0)."""
    return jnp.sum(2.0 * (LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh)), axis=-1)


def squashed_gaussian_log_prob(mean, log_std, pre_tanh):
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std))`` diagonal, ``[N, A] -> [N]``.

    The density of the Gaussian at ``u`` minus the log-determinant of tanh's Jacobian
    (:func:`tanh_log_det`).
    """
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)
    return gaussian - tanh_log_det(pre_tanh)


def temperature_loss(log_alpha, log_prob, target_entropy):
    """SAC's temperature loss, ``-log_alpha * mean(log_prob + target_entropy)``.

    ``log_prob`` ``[N]`` is held constant. Its gradient in ``log_alpha`` is
    ``-mean(log_prob) - target_entropy = entropy - target_entropy``: gradient descent lowers
    the temperature while the policy's entropy is above the target and raises it below.
    """
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)


def smoothed_target_action(key, action, noise_std, noise_clip):
    """TD3's target action: ``clip(action + clip(eps, -c, c), -1, 1)``, ``eps ~ N(0, std)``,
    for actions in ``[-1, 1]`` (``[N, A]``)."""
    noise = jnp.clip(noise_std * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + noise, -1.0, 1.0)

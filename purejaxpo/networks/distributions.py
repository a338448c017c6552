"""The action distributions of the off-policy actors, beside distrax's: a squashed Gaussian
(SAC) and a deterministic action (TD3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purejaxpo.td import squashed_gaussian_log_prob


class SquashedGaussian:
    """``tanh(u)``, ``u ~ N(mean, exp(log_std))`` diagonal: SAC's actor, actions in ``[-1, 1]``.

    The part of distrax's distribution interface the rollout and the updates use;
    ``sample_and_log_prob`` is reparameterised (differentiable in ``mean`` and ``log_std``)
    and its log-density is :func:`purejaxpo.td.squashed_gaussian_log_prob`.
    """

    def __init__(self, mean, log_std):
        self.mean, self.log_std = mean, log_std

    def sample_and_log_prob(self, seed):
        u = self.mean + jnp.exp(self.log_std) * jax.random.normal(seed, self.mean.shape)
        return jnp.tanh(u), squashed_gaussian_log_prob(self.mean, self.log_std, u)

    def sample(self, seed):
        return self.sample_and_log_prob(seed)[0]

    def log_prob(self, action):
        """At ``action`` in ``(-1, 1)`` (clipped 1e-6 inside, where atanh stays finite)."""
        u = jnp.arctanh(jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6))
        return squashed_gaussian_log_prob(self.mean, self.log_std, u)

    def mode(self):
        """``tanh(mean)``: the deterministic action an evaluation plays."""
        return jnp.tanh(self.mean)


class DeterministicAction:
    """A deterministic actor's action as a distribution (log-probability 0): TD3's."""

    def __init__(self, action):
        self.action = action

    def sample_and_log_prob(self, seed):
        del seed
        return self.action, jnp.zeros(self.action.shape[:-1])

    def sample(self, seed):
        return self.action

    def log_prob(self, action):
        return jnp.zeros(action.shape[:-1])

    def mode(self):
        return self.action

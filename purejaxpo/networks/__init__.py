"""Policies built from parts (flax) and their action distributions (distrax).

* :mod:`~purejaxpo.networks.spec`: what a policy is made of (:class:`PolicySpec`, the torso,
  heads and memory fields every RL config carries) and its validation;
* :mod:`~purejaxpo.networks.layers`: the flax modules (orthogonal initialisation, dense and
  convolution layers, the torso, the heads);
* :mod:`~purejaxpo.networks.policy`: :class:`Policy`, the actor and critic for an
  environment's spaces, and the policy protocol the rollout and updates use;
* :mod:`~purejaxpo.networks.distributions`: the squashed-Gaussian and deterministic actors'
  distributions.
"""

from purejaxpo.networks.distributions import DeterministicAction, SquashedGaussian
from purejaxpo.networks.layers import (ACTIVATIONS, HEADS, LOG_STD_RANGE, PADDINGS, Branch,
                                       Conv, Trunk, conv_layer, conv_size, dense_layers,
                                       orthogonal)
from purejaxpo.networks.policy import (ROLLOUT_CHUNK, Policy, episode_starts, over_time,
                                       reset_memory)
from purejaxpo.networks.spec import (ACTORS, LOG_STDS, SPEC_FIELDS, TORSOS, PolicyFields,
                                     PolicyParts, PolicySpec)

__all__ = [
    "ACTIVATIONS", "ACTORS", "HEADS", "LOG_STDS", "LOG_STD_RANGE", "PADDINGS", "ROLLOUT_CHUNK",
    "SPEC_FIELDS", "TORSOS", "Branch", "Conv", "DeterministicAction", "Policy", "PolicyFields",
    "PolicyParts", "PolicySpec", "SquashedGaussian", "Trunk", "conv_layer", "conv_size",
    "dense_layers", "episode_starts", "orthogonal", "over_time", "reset_memory",
]

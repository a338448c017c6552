"""Configs are frozen and validated on construction, with errors that name the field."""

import dataclasses

import jax.numpy as jnp
import pytest

from purejaxpo.algos.ppo import PPOConfig


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"learning_rate": -1e-3}, r"learning_rate=-0.001 is invalid: must be in \(0.0, inf\)"),
        ({"learning_rate": float("nan")}, r"learning_rate=nan is invalid: must be a finite number"),
        ({"gamma": 1.5}, r"gamma=1.5 is invalid: must be in \[0.0, 1.0\]"),
        ({"gae_lambda": -0.1}, r"gae_lambda=-0.1 is invalid"),
        ({"clip_eps": 0.0}, r"clip_eps=0.0 is invalid: must be in \(0.0, 1.0\]"),
        ({"num_minibatches": 5}, r"num_minibatches=5 is invalid: must divide num_envs \* num_steps = 512"),
        ({"num_envs": 0}, r"num_envs=0 is invalid: must be an integer >= 1"),
        ({"num_steps": 2.5}, r"num_steps=2.5 is invalid"),
        ({"total_timesteps": 100}, r"total_timesteps=100 is invalid: must be >= num_envs \* num_steps = 512"),
        ({"env": "CartPol-v1"}, r"env='CartPol-v1' is not a known environment. Did you mean 'CartPole-v1'"),
        ({"activation": "sigmoid"}, r"activation='sigmoid' is invalid: must be one of"),
        ({"hidden_sizes": (64, 0)}, r"hidden_sizes=\(64, 0\) is invalid"),
        ({"anneal_lr": "yes"}, r"anneal_lr='yes' is invalid: must be true or false"),
        ({"ent_coef": -0.01}, r"ent_coef=-0.01 is invalid"),
        ({"max_grad_norm": 0.0}, r"max_grad_norm=0.0 is invalid"),
    ],
)
def test_bad_values_raise_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**changes)


def test_frozen_and_replace_revalidates():
    config = PPOConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learning_rate = 1.0
    assert config.replace(num_envs=8).batch_size == 8 * 128
    with pytest.raises(ValueError, match="num_minibatches"):
        config.replace(num_steps=5, num_envs=1)
    assert hash(config) == hash(PPOConfig())  # hashable: usable as a static argument


def test_hyperparams_are_the_sweepable_fields_as_float32():
    config = PPOConfig(clip_eps=0.1)
    hp = config.hyperparams()
    assert set(hp) == set(PPOConfig.SWEEPABLE)
    assert all(v.dtype == jnp.float32 for v in hp.values())
    assert float(hp["clip_eps_high"]) == pytest.approx(0.1)  # None -> symmetric clipping
    with pytest.raises(ValueError, match=r"unknown names \['lr'\]"):
        config.complete_hyperparams({"lr": 1.0})
    assert float(config.complete_hyperparams({"gamma": 0.5})["gamma"]) == 0.5


def test_lists_become_tuples_and_config_round_trips_through_dict():
    config = PPOConfig(hidden_sizes=[32, 32])
    assert config.hidden_sizes == (32, 32)
    assert PPOConfig(**config.to_dict()) == config

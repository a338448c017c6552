"""The language-model configs: loss presets fill only what the user did not set (on
construction, through ``replace``, through a sweep's grid and through ``--set``), one parent per
config, no name shared with the environment algorithms' configs, and bad values rejected with a
``ValueError`` naming the field. Nothing here compiles."""

import dataclasses
import itertools

import pytest

import purejaxpo.lm.config as lm_config
from purejaxpo.algos.grpo import GRPOConfig as EnvGRPOConfig
from purejaxpo.lm.config import (
    LOSS_PRESETS,
    LMDPOConfig,
    LMFromScratchConfig,
    LMGRPOConfig,
    LMRewardModelConfig,
    LMSFTConfig,
    LMTrainConfig,
)
from purejaxpo.lm.preference import PREFERENCE_LOSSES

GRPO_LOSSES = sorted(LOSS_PRESETS)
DPO_LOSSES = list(PREFERENCE_LOSSES)


def _explicit(name, preset_value):
    """A valid value for preset field ``name`` that differs from ``preset_value``."""
    return {"ratio_level": {"token": "sequence", "sequence": "token"},
            "aggregation": {"sequence_mean": "constant", "token_mean": "sequence_mean",
                            "constant": "token_mean"},
            "advantage_scale": {"std": "none", "none": "std"},
            "filter_zero_spread": {True: False, False: True},
            }.get(name, {}).get(preset_value, 0.123 if isinstance(preset_value, float) else None)


# -- GRPO family: every field of every preset --------------------------------------------------


@pytest.mark.parametrize("loss", GRPO_LOSSES)
def test_grpo_preset_applies_when_unset(loss):
    config = LMGRPOConfig(loss=loss)
    assert {k: getattr(config, k) for k in LOSS_PRESETS[loss]} == LOSS_PRESETS[loss]
    assert config.preset_fields == frozenset(LOSS_PRESETS[loss])


@pytest.mark.parametrize("loss", GRPO_LOSSES)
@pytest.mark.parametrize("field", sorted(LOSS_PRESETS["grpo"]))
def test_grpo_explicit_value_wins(loss, field):
    value = _explicit(field, LOSS_PRESETS[loss][field])
    config = LMGRPOConfig(loss=loss, **{field: value})
    assert getattr(config, field) == value
    assert field not in config.preset_fields
    for other, preset in LOSS_PRESETS[loss].items():  # the rest still from the preset
        if other != field:
            assert getattr(config, other) == preset


@pytest.mark.parametrize("old, new", list(itertools.permutations(GRPO_LOSSES, 2)))
def test_grpo_replace_loss_reapplies_the_new_preset(old, new):
    config = LMGRPOConfig(loss=old).replace(loss=new)
    assert config == LMGRPOConfig(loss=new)
    assert config.preset_fields == frozenset(LOSS_PRESETS[new])
    # A field the user set survives the change of loss; the others follow the new preset.
    pinned = LMGRPOConfig(loss=old, clip_eps_high=0.5).replace(loss=new)
    assert pinned == LMGRPOConfig(loss=new, clip_eps_high=0.5)
    assert pinned.clip_eps_high == 0.5


def test_grpo_replace_of_the_issue():
    """The case of issue 13: a config that says dapo trains dapo."""
    config = LMGRPOConfig(loss="grpo").replace(loss="dapo")
    assert (config.aggregation, config.filter_zero_spread, config.clip_eps_high) == (
        "token_mean", True, 0.28)


def test_replace_other_fields_keeps_presets_and_none_hands_back():
    config = LMGRPOConfig(loss="dapo", clip_eps=0.1)
    assert config.replace(learning_rate=1e-4) == LMGRPOConfig(loss="dapo", clip_eps=0.1,
                                                               learning_rate=1e-4)
    again = config.replace(learning_rate=1e-4).replace(loss="gspo")
    assert again.clip_eps == 0.1 and again.clip_eps_high == LOSS_PRESETS["gspo"]["clip_eps_high"]
    back = config.replace(clip_eps=None)  # None: back to the preset
    assert back.clip_eps == LOSS_PRESETS["dapo"]["clip_eps"] and "clip_eps" in back.preset_fields


def test_a_sweep_grid_over_losses_builds_what_it_names():
    """Sweeps build every configuration as ``base.replace(**point)``
    (:func:`purejaxpo.sweep.plan.plan_sweep`): each point trains the loss it names, with the
    values the base or the point set."""
    base = LMGRPOConfig(loss="grpo", clip_eps=0.15)
    for loss, lr in itertools.product(GRPO_LOSSES, (1e-4, 3e-4)):
        config = base.replace(loss=loss, learning_rate=lr)
        assert config == LMGRPOConfig(loss=loss, clip_eps=0.15, learning_rate=lr)
    for loss, beta in itertools.product(DPO_LOSSES, (None, 0.3)):
        point = {"loss": loss} if beta is None else {"loss": loss, "beta": beta}
        assert LMDPOConfig().replace(**point) == LMDPOConfig(**point)


# -- DPO family: beta per loss -----------------------------------------------------------------


@pytest.mark.parametrize("loss", DPO_LOSSES)
def test_dpo_preset_beta(loss):
    assert LMDPOConfig(loss=loss).beta == PREFERENCE_LOSSES[loss].beta  # unset: the preset
    assert LMDPOConfig(loss=loss).preset_fields == {"beta"}
    explicit = LMDPOConfig(loss=loss, beta=0.25)
    assert explicit.beta == 0.25 and explicit.preset_fields == frozenset()  # set: it wins


@pytest.mark.parametrize("old, new", list(itertools.permutations(DPO_LOSSES, 2)))
def test_dpo_replace_loss_reapplies_beta(old, new):
    assert LMDPOConfig(loss=old).replace(loss=new).beta == PREFERENCE_LOSSES[new].beta
    assert LMDPOConfig(loss=old, beta=0.25).replace(loss=new).beta == 0.25


def test_dpo_replace_of_the_issue():
    assert LMDPOConfig(loss="sigmoid").replace(loss="simpo").beta == 2.0


# -- through the command line ------------------------------------------------------------------


def test_set_fills_like_the_constructor():
    """``--set`` values are passed to the constructor as set fields
    (``purejaxpo.cli.lm_common.make_config``)."""
    import argparse

    from purejaxpo.cli.lm_common import make_config

    args = argparse.Namespace(set=["clip_eps_high=0.5", "learning_rate=1e-4"], task=None,
                              task_arg=None, seed=0)
    config = make_config(LMGRPOConfig, args, "lm grpo", loss="dapo")
    assert config == LMGRPOConfig(loss="dapo", clip_eps_high=0.5, learning_rate=1e-4)
    assert "clip_eps_high" not in config.preset_fields
    assert config.replace(loss="gspo").clip_eps_high == 0.5
    assert config.replace(loss="gspo").clip_eps == LOSS_PRESETS["gspo"]["clip_eps"]
    args.set = ["rpo_alpha=0.5"]
    dpo = make_config(LMDPOConfig, args, "lm dpo", loss="simpo")
    assert dpo.beta == 2.0 and dpo.rpo_alpha == 0.5


# -- structure and validation ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LMSFTConfig, LMGRPOConfig, LMDPOConfig, LMRewardModelConfig,
                                 LMFromScratchConfig])
def test_one_parent_each_and_no_name_clash(cls):
    assert len(cls.__bases__) == 1 and issubclass(cls, LMTrainConfig)
    assert dataclasses.is_dataclass(cls)
    assert "_from_preset" not in {f.name for f in dataclasses.fields(cls)}  # not a setting
    assert not hasattr(lm_config, "GRPOConfig") and not hasattr(lm_config, "DPOConfig")
    assert EnvGRPOConfig.__module__ == "purejaxpo.algos.grpo"


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: LMGRPOConfig(loss="ppo"), r"loss='ppo' is invalid: must be one of"),
        (lambda: LMGRPOConfig().replace(loss="ppo"), r"loss='ppo' is invalid"),
        (lambda: LMGRPOConfig().replace(clip_eps=0.0), r"clip_eps=0.0 is invalid: must be"),
        (lambda: LMGRPOConfig(aggregation="sum"), r"aggregation='sum' is invalid"),
        (lambda: LMDPOConfig(loss="dpo"), r"loss='dpo' is invalid: must be one of"),
        (lambda: LMDPOConfig().replace(beta=-1.0), r"beta=-1.0 is invalid: must be"),
        (lambda: LMDPOConfig(rpo_alpha=-0.5), r"rpo_alpha=-0.5 is invalid: must be"),
        (lambda: LMDPOConfig(rejected="random"), r"rejected='random' is invalid"),
        (lambda: LMRewardModelConfig(num_pairs=0), r"num_pairs=0 is invalid: must be"),
        (lambda: LMRewardModelConfig(positions="alibi"), r"positions='alibi' is invalid"),
        (lambda: LMSFTConfig(batch_size=0), r"batch_size=0 is invalid: must be"),
    ],
)
def test_bad_values_name_the_field(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()

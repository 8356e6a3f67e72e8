"""Encoder / decoder split of a UNet and layer-wise learning-rate groups."""

from __future__ import annotations

import pytest
import torch

from sitetune.errors import InvalidInput
from sitetune.models.builtin import load_builtin
from sitetune.training.finetune import Strategy, apply_strategy
from sitetune.training.layers import parameter_groups, unet_parts
from sitetune.training.loop import TrainConfig, optimiser_and_schedule


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_off_by_default_one_group_of_every_trainable_parameter():
    network = load_builtin("flair-lesion")[1]
    (group,) = parameter_groups(network, 1e-4)
    assert group["lr"] == 1e-4 and _ids(group["params"]) == _ids(network.parameters())


def test_layerwise_decay_scales_the_encoder_from_the_bottleneck_up():
    network = load_builtin("flair-lesion")[1]
    encoder, _ = unet_parts(network)
    groups = parameter_groups(network, 1e-3, 0.5)
    levels = len(encoder)  # 3 down blocks and the bottleneck
    assert [g["name"] for g in groups] == [*(f"encoder.{i}" for i in range(levels)), "decoder"]
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates["decoder"] == 1e-3
    assert rates[f"encoder.{levels - 1}"] == pytest.approx(1e-3 * 0.5)  # the bottleneck
    assert rates["encoder.0"] == pytest.approx(1e-3 * 0.5**levels)  # the first block
    assert _ids(groups[0]["params"]) == _ids(encoder[0].parameters())
    every = [id(p) for g in groups for p in g["params"]]
    assert len(every) == len(set(every)) and set(every) == _ids(network.parameters())


def test_frozen_layers_are_left_out_and_other_networks_are_refused():
    network = load_builtin("flair-lesion")[1]
    apply_strategy(network, Strategy.DECODER, 0)  # encoder frozen
    groups = parameter_groups(network, 1e-3, 0.5)
    assert [g["name"] for g in groups] == ["decoder"]
    assert all(p.requires_grad for p in groups[0]["params"])
    with pytest.raises(InvalidInput) as raised:
        parameter_groups(torch.nn.Conv3d(1, 2, 3), 1e-3, 0.5)
    assert raised.value.code == "strategy_unsupported" and "layerwise" in raised.value.message
    assert len(parameter_groups(torch.nn.Conv3d(1, 2, 3), 1e-3)) == 1  # off: any network


def test_the_optimiser_keeps_the_ratios_through_the_schedule():
    network = load_builtin("flair-lesion")[1]
    config = TrainConfig(epochs=2, iterations_per_epoch=2, learning_rate=1e-3,
                         lr_decay=0.5, layerwise_lr_decay=0.5)  # fmt: skip
    optimiser, schedule = optimiser_and_schedule(network, config)
    for _ in range(2):  # one epoch: the decay applies
        optimiser.step()
        schedule.step()
    rates = {g["name"]: g["lr"] for g in optimiser.param_groups}
    assert rates["decoder"] == pytest.approx(1e-3 * 0.5)
    assert rates["encoder.0"] == pytest.approx(1e-3 * 0.5 * 0.5 ** (len(rates) - 1))

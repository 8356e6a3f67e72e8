"""Fine-tune configuration (with the site-shift recipe), the held-out split and the strategies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sitetune.errors import InvalidInput
from sitetune.models.builtin import load_builtin
from sitetune.training.augment import Augment, AugmentSpec
from sitetune.training.datasets import SiteCase, SiteDataset
from sitetune.training.finetune import (
    FineTuneConfig,
    Strategy,
    apply_strategy,
    split_cases,
    unet_parts,
)
from sitetune.training.loop import Trainer
from tests.unit.training.tiny import tiny_cases


def _dataset(n: int) -> SiteDataset:
    cases = [SiteCase(f"c{i}", Path("i"), Path("l"), (0,)) for i in range(n)]
    return SiteDataset(Path("."), cases, "sha256:x")


def test_learning_rate_defaults_by_strategy():
    assert FineTuneConfig().learning_rate == 1e-4
    assert FineTuneConfig(strategy="scratch").learning_rate == 1e-3
    assert FineTuneConfig(strategy="scratch", learning_rate=5e-4).learning_rate == 5e-4


def test_split_is_seeded_and_keeps_both_sides():
    train, held = split_cases(_dataset(10), FineTuneConfig(val_fraction=0.3, seed=1))
    assert len(held) == 3 and len(train) == 7
    again = split_cases(_dataset(10), FineTuneConfig(val_fraction=0.3, seed=1))
    assert [c.name for c in again[1]] == [c.name for c in held]
    train, held = split_cases(_dataset(2), FineTuneConfig(val_fraction=0.9))
    assert (len(train), len(held)) == (1, 1)


def test_named_held_out_cases():
    train, held = split_cases(_dataset(4), FineTuneConfig(val_cases=["c3", "c0"]))
    assert [c.name for c in held] == ["c0", "c3"] and len(train) == 2
    with pytest.raises(InvalidInput) as raised:
        split_cases(_dataset(4), FineTuneConfig(val_cases=["c9"]))
    assert raised.value.code == "unknown_val_cases"
    with pytest.raises(InvalidInput) as raised:
        split_cases(_dataset(2), FineTuneConfig(val_cases=["c0", "c1"]))
    assert raised.value.code == "bad_split"


def _trainable(network) -> set[str]:
    return {n for n, p in network.named_parameters() if p.requires_grad}


def test_strategies_freeze_and_reinitialise_the_right_layers():
    _card, base = load_builtin("flair-lesion")
    names = {n for n, _ in base.named_parameters()}
    encoder, decoder = unet_parts(base)
    assert len(encoder) == len(decoder) + 1  # the bottleneck counts as encoder

    _, network = load_builtin("flair-lesion")
    summary = apply_strategy(network, Strategy.ALL, 0)
    assert _trainable(network) == names and summary["trainable_parameters"] == summary["parameters"]

    _, network = load_builtin("flair-lesion")
    apply_strategy(network, Strategy.DECODER, 0)
    trainable = _trainable(network)
    assert "model.0.conv.unit0.conv.weight" not in trainable  # first down block
    assert "model.2.0.conv.weight" in trainable  # top up block
    assert not any(".1.submodule.conv" in n for n in trainable)  # the bottleneck

    _, network = load_builtin("flair-lesion")
    apply_strategy(network, Strategy.HEAD, 0)
    assert _trainable(network) == {n for n in names if n.startswith("model.2.")}
    head = dict(network.named_parameters())["model.2.0.conv.weight"]
    assert not torch.equal(head, dict(base.named_parameters())["model.2.0.conv.weight"])

    _, network = load_builtin("flair-lesion")
    apply_strategy(network, Strategy.SCRATCH, 0)
    first = "model.0.conv.unit0.conv.weight"
    assert not torch.equal(
        dict(network.named_parameters())[first], dict(base.named_parameters())[first]
    )
    assert _trainable(network) == names


def test_a_budget_presets_the_training_length_and_explicit_values_win():
    from sitetune.training.finetune import BUDGETS, Budget

    quick = FineTuneConfig(budget="quick")
    assert (quick.epochs, quick.iterations_per_epoch) == BUDGETS[Budget.QUICK]
    assert FineTuneConfig(budget="thorough", epochs=3).epochs == 3
    stored = FineTuneConfig.model_validate(quick.model_dump(mode="json"))
    assert stored == quick, "a stored job config reads back the same"
    with pytest.raises(ValueError):
        FineTuneConfig(budget="forever")


def test_the_site_shift_recipe_is_typed_with_defaults_and_carried_into_training():
    defaults = FineTuneConfig()
    assert defaults.augment is Augment.SITE_SHIFT and defaults.foreground_fraction == 0.67
    assert defaults.warmup_fraction == 0.05 and defaults.layerwise_lr_decay == 1.0  # off
    card, _ = load_builtin("lv-ct")
    config = FineTuneConfig(
        augment="light", foreground_fraction=0.5, warmup_fraction=0.1, layerwise_lr_decay=0.8
    )
    train = config.train_config(card)
    assert train.augment == AugmentSpec(Augment.LIGHT, (), "window", (-200, 600))  # no flip: heart
    assert (train.foreground_fraction, train.warmup_fraction) == (0.5, 0.1)
    assert train.layerwise_lr_decay == 0.8
    stored = config.model_dump(mode="json")  # as the job row and the new card keep it
    assert stored["augment"] == "light" and FineTuneConfig.model_validate(stored) == config
    brain, _ = load_builtin("flair-lesion")
    assert FineTuneConfig().train_config(brain).augment.flip_axes == (0,)
    for bad in ({"augment": "heavy"}, {"foreground_fraction": 1.5}, {"warmup_fraction": 0.9},
                {"layerwise_lr_decay": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            FineTuneConfig(**bad)


@pytest.mark.parametrize(
    ("family", "augment", "layerwise"),
    [
        ("flair-lesion", "none", 1.0),
        ("flair-lesion", "light", 1.0),
        ("flair-lesion", "site_shift", 0.7),
        ("lv-ct", "site_shift", 1.0),
    ],
)
def test_a_tiny_fine_tune_runs_with_each_augment_setting(family, augment, layerwise):
    card, network = load_builtin(family)
    card = card.model_copy(update={"patch_size": (16, 16, 16)})
    config = FineTuneConfig(
        augment=augment,
        epochs=1,
        iterations_per_epoch=2,
        batch_size=1,
        layerwise_lr_decay=layerwise,
    )
    apply_strategy(network, config.strategy, config.seed)
    values = tuple(card.label_names)
    trainer = Trainer(network, tiny_cases(values), config.train_config(card))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    loss = trainer.run_epoch()
    assert loss is not None and np.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items())

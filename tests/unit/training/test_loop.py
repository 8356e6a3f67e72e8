"""The training loop: deterministic given the seed (augmented or not), a resumed run equals an
unbroken one, and the learning-rate schedule warms up, then decays."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sitetune.models.builtin import load_builtin
from sitetune.training.augment import Augment, AugmentSpec
from sitetune.training.loop import (
    TrainConfig,
    Trainer,
    TrainingCase,
    learning_rate_factor,
    optimiser_and_schedule,
    validation_patches,
)

CONFIG = TrainConfig(epochs=2, iterations_per_epoch=2, batch_size=1, patch_size=(16, 16, 16))


@pytest.fixture(scope="module")
def cases() -> list[TrainingCase]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        labels = np.zeros((20, 20, 18), np.uint8)
        labels[6:12, 5:11, 4:10] = 1
        image = labels + rng.normal(0, 0.3, labels.shape)
        out.append(TrainingCase(torch.from_numpy(image.astype(np.float32))[None], labels))
    return out


def _network():
    return load_builtin("flair-lesion")[1]


def test_same_seed_same_run_and_resume_equals_unbroken(cases):
    unbroken = Trainer(_network(), cases, CONFIG)
    for _ in range(CONFIG.epochs):
        unbroken.run_epoch()
    again = Trainer(_network(), cases, CONFIG)
    again.run_epoch()
    again.run_epoch()
    assert again.history == unbroken.history

    first = Trainer(_network(), cases, CONFIG)
    first.run_epoch()
    checkpoint = first.state_dict()
    resumed = Trainer(_network(), cases, CONFIG)  # a new process would start like this
    resumed.load_state_dict(checkpoint)
    assert resumed.epoch == 1
    resumed.run_epoch()
    assert resumed.history == unbroken.history
    for a, b in zip(
        resumed.network.state_dict().values(), unbroken.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_stop_request_ends_the_epoch_without_a_result(cases):
    trainer = Trainer(_network(), cases, CONFIG)
    assert trainer.run_epoch(should_stop=lambda: True) is None and trainer.epoch == 0


def test_validation_patches_and_metrics(cases):
    patches = validation_patches(cases, (16, 16, 16), seed=1, limit=3)
    assert len(patches) == 3 and patches[0][0].shape == (1, 16, 16, 16)
    result = Trainer(_network(), cases, CONFIG).validate(patches)
    assert result["loss"] > 0 and len(result["dice"]) == 1 and 0 <= result["dice"][0] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_mixed_precision_training_on_the_gpu(cases):
    network = _network().to("cuda")
    trainer = Trainer(network, cases, CONFIG)
    assert trainer.autocast
    losses = [trainer.run_epoch() for _ in range(2)]
    assert all(np.isfinite(losses)) and losses[1] < losses[0] * 1.5
    assert next(network.parameters()).dtype == torch.float32  # weights stay fp32
    validation = trainer.validate(validation_patches(cases, (16, 16, 16), seed=1))
    assert np.isfinite(validation["loss"])


def test_the_cost_probe_leaves_the_training_it_measures_unchanged(cases):
    """The job states its estimated duration from a measured per-iteration cost before it
    trains; measuring must not change a single step of the training that follows."""
    from sitetune.training.worker import _seconds_per_iteration

    plain = Trainer(_network(), cases, CONFIG)
    plain.run_epoch()
    probed = Trainer(_network(), cases, CONFIG)
    seconds = _seconds_per_iteration(probed)
    assert 0 < seconds < 60 and probed.history == []
    probed.run_epoch()
    assert probed.history == plain.history
    for a, b in zip(plain.network.parameters(), probed.network.parameters(), strict=True):
        assert torch.equal(a, b)


def test_warm_up_is_linear_then_the_per_epoch_decay():
    config = TrainConfig(epochs=3, iterations_per_epoch=4, lr_decay=0.5, warmup_fraction=0.25)
    assert config.warmup_iterations == 3  # a quarter of 12 iterations
    factors = [learning_rate_factor(i, config) for i in range(12)]
    expected = [1 / 3, 2 / 3, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert factors == pytest.approx(expected)
    plain = TrainConfig(epochs=3, iterations_per_epoch=4, lr_decay=0.5)  # no warm-up
    assert [learning_rate_factor(i, plain) for i in range(12)] == [1.0] * 4 + [0.5] * 4 + [0.25] * 4
    tiny = TrainConfig(epochs=1, iterations_per_epoch=2, warmup_fraction=0.01)
    assert tiny.warmup_iterations == 1  # at least one iteration when asked for

    network = torch.nn.Conv3d(1, 2, 1)
    optimiser, schedule = optimiser_and_schedule(network, replace(config, learning_rate=0.1))
    rates = []
    for _ in range(12):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert rates == pytest.approx([0.1 * f for f in expected])
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.0)


AUGMENTED = replace(
    CONFIG,
    epochs=2,
    iterations_per_epoch=1,
    warmup_fraction=0.5,
    augment=AugmentSpec(Augment.SITE_SHIFT, flip_axes=(0,)),
)


def test_augmented_training_is_deterministic_and_resumes_exactly(cases):
    first, again = Trainer(_network(), cases, AUGMENTED), Trainer(_network(), cases, AUGMENTED)
    batches = [first.sample() for _ in range(4)]
    for image, labels in batches:
        other = again.sample()
        assert torch.equal(image, other[0]) and torch.equal(labels, other[1])
        assert image.shape == labels.shape == (1, 16, 16, 16)
    assert not all(torch.equal(batches[0][0], b[0]) for b in batches[1:])

    unbroken = Trainer(_network(), cases, AUGMENTED)
    unbroken.run_epoch()
    checkpoint = copy.deepcopy(unbroken.state_dict())  # as saved to disk
    unbroken.run_epoch()
    resumed = Trainer(_network(), cases, AUGMENTED)
    resumed.load_state_dict(checkpoint)
    resumed.run_epoch()
    assert resumed.history == unbroken.history
    for a, b in zip(
        resumed.network.state_dict().values(), unbroken.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other_seed = Trainer(_network(), cases, replace(AUGMENTED, seed=1))
    other_seed.run_epoch()
    other_seed.run_epoch()
    assert other_seed.history != unbroken.history


def test_the_config_reads_as_json():
    stored = json.loads(json.dumps(AUGMENTED.as_dict()))
    assert stored["augment"] == {
        "strength": "site_shift",
        "flip_axes": [0],
        "intensity": "zscore",
        "window": None,
    }
    assert stored["warmup_fraction"] == 0.5 and stored["layerwise_lr_decay"] == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_patches_are_augmented_on_the_gpu(cases):
    trainer = Trainer(_network().to("cuda"), cases, AUGMENTED)
    image, labels = trainer.sample()
    assert image.device.type == labels.device.type == "cuda" and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {0, 1}
    assert np.isfinite(trainer.run_epoch())


def test_validation_patches_also_look_away_from_the_structure():
    """Half the held-out patches are not centred on foreground, so the job's checkpoint
    choice sees false positives away from the structure too."""
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[2:6, 2:6, 2:6] = 1  # a small lesion in a corner
    image = torch.from_numpy(labels.astype(np.float32))[None]
    case = TrainingCase(image, labels)
    patches = validation_patches([case], (16, 16, 16), seed=3, limit=8)
    assert len(patches) == 2
    assert patches[0][1].any()  # centred on the lesion
    assert not patches[1][1].any()  # elsewhere: only false positives can happen here

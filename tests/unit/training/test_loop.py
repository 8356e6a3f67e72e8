"""The training loop: deterministic given the seed, and a resumed run equals an unbroken one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitetune.models.builtin import load_builtin
from sitetune.training.loop import TrainConfig, Trainer, TrainingCase, validation_patches

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

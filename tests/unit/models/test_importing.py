"""Registering weights in every accepted form, and refusing what does not fit the card."""

from __future__ import annotations

import zipfile

import pytest
import torch

from sitetune.db import connect
from sitetune.errors import InvalidInput
from sitetune.models.engines import OrtEngine, TorchEngine
from sitetune.models.export import export_onnx
from sitetune.models.importing import WeightsKind, detect, load_torch_network, register_weights
from sitetune.models.networks import build_network
from sitetune.models.registry import Registry
from tests.unit.models.test_engines import SMALL


@pytest.fixture
def registry(tmp_path):
    return Registry(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


@pytest.fixture
def network():
    torch.manual_seed(1)
    return build_network(SMALL)


def _weights(kind: str, network, folder):
    path = folder / f"weights-{kind}"
    if kind == "state_dict":
        torch.save(network.state_dict(), path)
    elif kind == "torchscript":
        torch.jit.save(torch.jit.trace(network, torch.zeros(1, 1, 32, 32, 32)), str(path))
    elif kind == "onnx":
        export_onnx(network, SMALL, path, check_batches=1)
    else:
        state = folder / "model.pt"
        torch.save(network.state_dict(), state)
        with zipfile.ZipFile(path, "w") as bundle:
            bundle.writestr("my_bundle/configs/inference.json", "{}")
            bundle.write(state, "my_bundle/models/model.pt")
    return path


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "onnx", "monai_bundle"])
def test_every_form_registers_and_predicts_like_the_original(kind, registry, network, tmp_path):
    path = _weights(kind, network, tmp_path)
    assert detect(path) is WeightsKind(kind)
    version = register_weights(
        registry, SMALL, path, actor="ops", reason="test", allow_torchscript=True
    )
    assert version.onnx_path.is_file()
    batch = torch.rand(1, 1, 32, 32, 32)
    expected = TorchEngine(network)(batch)
    restored = load_torch_network(version, allow_torchscript=True)
    if kind == "onnx":
        assert restored is None and version.card.export["onnx_only"]
        actual = OrtEngine(version.onnx_path, providers=["CPUExecutionProvider"])(batch)
    else:
        assert version.card.export["parity_max_abs_logit_diff"] < 1e-3
        actual = TorchEngine(restored)(batch)
    torch.testing.assert_close(actual, expected, atol=1e-3, rtol=1e-3)


def test_garbage_and_mismatched_weights_are_refused(registry, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights at all" * 10)
    with pytest.raises(InvalidInput) as err:
        register_weights(registry, SMALL, junk, actor="ops", reason="test")
    assert err.value.code == "invalid_weights"
    other = build_network(SMALL.model_copy(update={"labels": SMALL.labels[:1]}))
    wrong = tmp_path / "wrong.pt"
    torch.save(other.state_dict(), wrong)  # one output channel fewer than the card
    with pytest.raises(InvalidInput) as err:
        register_weights(registry, SMALL, wrong, actor="ops", reason="test")
    assert err.value.code == "weights_mismatch"
    assert registry.names() == []  # nothing half-registered


def test_torchscript_is_refused_unless_enabled_and_not_run_from_the_registry(
    registry, network, tmp_path
):
    path = _weights("torchscript", network, tmp_path)
    with pytest.raises(InvalidInput, match="SITETUNE_ALLOW_TORCHSCRIPT") as err:
        register_weights(registry, SMALL, path, actor="ops", reason="test")
    assert err.value.code == "torchscript_disabled" and registry.names() == []
    version = register_weights(
        registry, SMALL, path, actor="ops", reason="t", allow_torchscript=True
    )
    assert load_torch_network(version) is None  # served from its ONNX export instead


def test_onnx_with_external_data_is_refused(registry, network, tmp_path):
    import onnx

    inline = _weights("onnx", network, tmp_path)
    model = onnx.load(str(inline))
    external = tmp_path / "external.onnx"
    onnx.save(model, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)  # fmt: skip
    with pytest.raises(InvalidInput) as err:
        register_weights(registry, SMALL, external, actor="ops", reason="test")
    assert err.value.code == "onnx_external_data"


def test_a_bundle_whose_weights_declare_a_bomb_is_refused(registry, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("b/models/model.pt", b"\0" * (64 << 20))  # 64 MiB of zeros: ratio ~1000
    with pytest.raises(InvalidInput) as err:
        register_weights(registry, SMALL, path, actor="ops", reason="test")
    assert err.value.code == "payload_too_large"


def test_card_numbers_are_bounded():
    from pydantic import ValidationError

    for update in ({"patch_size": (4096, 4096, 4096)}, {"spacing_mm": (0.0, 1.0, 1.0)}):
        with pytest.raises(ValidationError):
            SMALL.model_validate(SMALL.model_dump() | update)
    huge = SMALL.model_dump()
    huge["network"]["params"]["channels"] = [1 << 20]
    with pytest.raises(ValidationError, match="channels"):
        SMALL.model_validate(huge)

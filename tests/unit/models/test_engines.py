"""Export and engines: ONNX parity with torch; the pipeline keeps the input grid."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sitetune.imaging.phantoms.acquisition import random_rotation
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.models.builtin import builtin_folders, load_builtin
from sitetune.models.card import ModelCard
from sitetune.models.engines import (
    EngineKind,
    OrtEngine,
    TorchEngine,
    choose_engine,
    ort_providers,
)
from sitetune.models.export import export_onnx
from sitetune.models.inference import InferenceSettings, segment
from sitetune.models.networks import build_network
from sitetune.training.base import BASE_CARDS
from tests.conftest import SMALL_SPACING

SMALL = ModelCard.model_validate(
    BASE_CARDS["lv-ct"].model_dump()
    | {
        "patch_size": (32, 32, 32),
        "network": {"architecture": "UNet", "params": {"channels": [4, 8, 16], "strides": [2, 2]}},
    }
)


def test_onnx_export_matches_torch_and_engines_agree(tmp_path):
    torch.manual_seed(0)
    network = build_network(SMALL)
    parity = export_onnx(network, SMALL, tmp_path / "m.onnx")
    assert parity["parity_max_abs_logit_diff"] < 1e-3
    batch = torch.rand(3, 1, 32, 32, 32)
    ort_engine = OrtEngine(tmp_path / "m.onnx", providers=["CPUExecutionProvider"])
    assert ort_engine.backend == "onnxruntime:CPUExecutionProvider"
    np.testing.assert_allclose(
        ort_engine(batch).numpy(), TorchEngine(network)(batch).numpy(), atol=1e-3
    )


def test_unknown_provider_list_is_a_clear_error():
    with pytest.raises(ValueError, match="none of the providers"):
        ort_providers(["NoSuchExecutionProvider"])


def test_importing_the_engines_loads_no_model_runtime():
    """Engines are plugins: onnxruntime and torch are imported when one is built."""
    code = (
        "import sys, sitetune.models.engines, sitetune.models.serving; "
        "print([m for m in ('torch', 'onnxruntime') if m in sys.modules])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_both_engines_are_installed_here_and_say_so():
    assert OrtEngine.is_available() and TorchEngine.is_available()
    assert TorchEngine.gpu_available() is torch.cuda.is_available()


@pytest.mark.skipif(
    OrtEngine.gpu_available() or TorchEngine.gpu_available(), reason="a GPU: auto takes it"
)
def test_auto_runs_the_cpu_engine_the_settings_name_without_a_gpu():
    assert choose_engine("auto", "onnxruntime") is EngineKind.ONNXRUNTIME
    assert choose_engine("auto", "torch") is EngineKind.TORCH
    assert choose_engine() is EngineKind.ONNXRUNTIME  # the default CPU engine (bench/)


def test_a_named_engine_is_run_and_a_missing_or_unknown_one_is_a_clear_error(monkeypatch):
    assert choose_engine("torch", "onnxruntime") is EngineKind.TORCH
    assert choose_engine(EngineKind.ONNXRUNTIME, "torch") is EngineKind.ONNXRUNTIME
    with pytest.raises(
        ValueError, match="engine must be one of 'auto', 'onnxruntime', 'torch', got 'trt'"
    ):
        choose_engine("trt")
    with pytest.raises(ValueError, match=r"cpu_engine must be one of .* got 'cuda'"):
        choose_engine("auto", "cuda")
    # a machine without onnxruntime: asking for it fails, auto falls back to torch
    monkeypatch.setattr(OrtEngine, "is_available", staticmethod(lambda: False))
    with pytest.raises(ValueError, match="'onnxruntime' is asked for, but it is not installed"):
        choose_engine("onnxruntime")
    if not TorchEngine.gpu_available():
        assert choose_engine("auto", "onnxruntime") is EngineKind.TORCH


def test_segmentation_lies_on_an_oblique_4d_input_grid():
    case = cardiac_phantom(
        4,
        "A",
        phases=2,
        spacing=SMALL_SPACING,
        grid_rotation=random_rotation(np.random.default_rng(2), 20),
    )
    torch.manual_seed(0)
    result = segment(
        case.image, SMALL, TorchEngine(build_network(SMALL)), InferenceSettings(overlap=0.25)
    )
    assert result.labels.shape == case.image.array.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    assert {"preprocess", "infer", "postprocess"} <= set(result.timings_ms)


@pytest.mark.parametrize("folder", builtin_folders(), ids=lambda p: p.name)
def test_shipped_models_onnx_and_torch_agree(folder, tmp_path):
    card, network = load_builtin(folder)
    parity = export_onnx(network, card, tmp_path / "m.onnx", check_batches=1)
    assert parity["parity_max_abs_logit_diff"] < 1e-3
    image = torch.rand(1, 1, *card.patch_size)
    torch_labels = TorchEngine(network)(image).argmax(1)
    ort_labels = OrtEngine(tmp_path / "m.onnx", providers=["CPUExecutionProvider"])(image).argmax(1)
    assert (torch_labels == ort_labels).float().mean() > 0.999


def test_cropped_resampling_equals_full_resampling():
    from sitetune.models.preprocess import (
        labels_on_input_grid,
        labels_to_network_grid,
        to_input_grid,
        to_network_grid,
    )

    case = cardiac_phantom(8, "B", grid_rotation=random_rotation(np.random.default_rng(3), 25))
    _, grid = to_network_grid(case.image.array, case.image.affine, SMALL)
    # Probabilities from the true labels: a sharp, realistic foreground on the network grid.
    truth = torch.as_tensor(labels_to_network_grid(case.labels.array, case.image.affine, SMALL))
    probs = torch.nn.functional.one_hot(truth.long(), 3).permute(3, 0, 1, 2).float()
    probs = 0.9 * probs + 0.1 / 3
    full = to_input_grid(probs, grid, case.image.affine, case.image.shape).argmax(0).numpy()
    cropped = labels_on_input_grid(probs, grid, case.image.affine, case.image.shape)
    np.testing.assert_array_equal(cropped, full)
    assert 0.5 < (cropped > 0).sum() / (case.labels.array > 0).sum() < 2


@pytest.mark.parametrize("fortran", [False, True])
def test_separable_resampling_equals_monai_on_flipped_permuted_grids(fortran):
    """The fast path for non-oblique grids gives MONAI's trilinear values, border included."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from sitetune.models.preprocess import resample_linear

    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 23, 17, 11)).astype(np.float32)
    if fortran:
        data = np.asfortranarray(data)
    # LPS-like source: flipped, permuted axes, anisotropic spacing, odd origin.
    src = np.array([[0, -0.7, 0, 10.3], [0, 0, 1.3, 5.1], [-0.9, 0, 0, 3.7], [0, 0, 0, 1.0]])
    dst = np.diag([0.55, 0.8, 1.1, 1.0])
    dst[:3, 3] = [-12.0, 4.0, -15.0]  # reaches past the source: border padding
    shape = (30, 25, 22)
    ours = resample_linear(data, src, dst, shape)
    monai = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)(
        MetaTensor(torch.as_tensor(np.ascontiguousarray(data)), affine=torch.as_tensor(src)),
        dst_affine=torch.as_tensor(dst),
        spatial_size=shape,
    )
    assert ours.shape == (2, *shape)
    np.testing.assert_allclose(ours.numpy(), monai.as_tensor().numpy(), atol=1e-4)
    oblique = dst @ np.block([[random_rotation(rng, 10), np.zeros((3, 1))], [0, 0, 0, 1]])
    assert resample_linear(data, src, oblique, shape) is None


def test_component_cleanup_keeps_the_largest_and_drops_specks():
    from sitetune.models.inference import clean_components

    card = ModelCard.model_validate(
        SMALL.model_dump()
        | {
            "labels": [
                {"value": 1, "name": "LV blood pool", "keep_largest_component": True},
                {"value": 2, "name": "LV myocardium", "min_component_ml": 0.005},
            ]
        }
    )
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1  # largest blood-pool component: kept
    labels[12:14, 12:14, 12:14] = 1  # a second one: dropped
    labels[15:19, 2:6, 2:6] = 2  # 64 voxels at 1 mm: 0.064 mL, kept
    labels[2, 15, 15] = 2  # a 1-voxel speck (0.001 mL): dropped
    cleaned = clean_components(labels.copy(), card, voxel_ml=0.001)
    assert (cleaned == 1).sum() == 216 and (cleaned == 2).sum() == 64

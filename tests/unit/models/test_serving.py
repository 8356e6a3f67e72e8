"""Serving: the model a request gets (modality default, version, the ``production`` alias
read per request), the engine cache per version, segmentation on the input grid, and the
configuration a deployment's settings give; with the committed lv-ct model in real ONNX
Runtime and torch engines over a real SQLite registry."""

from __future__ import annotations

import numpy as np
import pytest

from sitetune.db import connect
from sitetune.errors import InvalidInput, NotFound
from sitetune.imaging.volume import Volume
from sitetune.measure.metrics import dice
from sitetune.models.builtin import BUILTIN_DIR
from sitetune.models.card import ModelCard
from sitetune.models.engines import EngineKind
from sitetune.models.importing import ONNX, STATE_DICT, register_weights
from sitetune.models.registry import PRODUCTION, Registry
from sitetune.models.serving import ModelServer, ServingConfig
from sitetune.settings import Settings


def builtin_registry(folder, names=("lv-ct",)) -> Registry:
    """A registry in ``folder`` holding the committed built-in ``names`` as version 1,
    ``production`` (exported to ONNX as the service registers them)."""
    registry = Registry(connect(f"sqlite:///{folder / 'db.sqlite'}"), folder / "artifacts")
    for name in names:
        card = ModelCard.model_validate_json((BUILTIN_DIR / name / "card.json").read_text())
        register_weights(
            registry, card, BUILTIN_DIR / name / "weights.pt",
            actor="tests", reason="built-in", aliases=(PRODUCTION,),
        )  # fmt: skip
    return registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    """lv-ct 1 (production), 2 (the same files, not promoted) and 3 (ONNX only)."""
    registry = builtin_registry(tmp_path_factory.mktemp("serving"))
    v1 = registry.get("lv-ct", 1)
    registry.register(
        v1.card, {STATE_DICT: v1.weights_path, ONNX: v1.onnx_path}, actor="tests", reason="v2"
    )
    registry.register(v1.card, {ONNX: v1.onnx_path}, actor="tests", reason="onnx only")
    return registry


def _server(registry: Registry, tmp_path, **config) -> ModelServer:
    config = {"engine": EngineKind.ONNXRUNTIME, "threads": 2} | config
    return ModelServer(registry, ServingConfig(**config), tmp_path / "engine-cache")


def test_the_modality_picks_the_model_and_production_the_version(
    registry, small_cardiac_3d, tmp_path
):
    server = _server(registry, tmp_path)
    ct = small_cardiac_3d.image
    assert server.choose(ct, None, None).ref == "lv-ct:1"
    assert server.choose(ct, "lv-ct", "2").ref == "lv-ct:2"
    assert server.choose(ct, "lv-ct:production", "3").ref == "lv-ct:3"  # version wins
    with pytest.raises(NotFound):
        server.choose(ct, "lv-ct", "9")
    nifti = Volume(ct.array, ct.affine)  # NIfTI records no modality
    with pytest.raises(InvalidInput, match="pass model= one of") as error:
        server.choose(nifti, None, None)
    assert error.value.code == "model_required"
    assert "'flair-lesion', 'lv-ct'" in error.value.message
    assert server.choose(nifti, "lv-ct", None).ref == "lv-ct:1"


def test_a_promotion_reaches_a_running_server_at_its_next_request(
    registry, small_cardiac_3d, tmp_path
):
    server = _server(registry, tmp_path)
    before = server.choose(small_cardiac_3d.image, "lv-ct", None)
    engine_before = server.engine(before)
    registry.promote("lv-ct", 2, actor="ops", reason="test")
    try:
        after = server.choose(small_cardiac_3d.image, "lv-ct", None)
        assert (before.version, after.version) == (1, 2)
        assert server.engine(after) is not engine_before  # the new version's own engine
    finally:
        registry.promote("lv-ct", 1, actor="ops", reason="back")
    assert server.choose(small_cardiac_3d.image, "lv-ct", None).version == 1


def test_engines_are_built_once_per_version_and_the_least_recent_is_dropped(registry, tmp_path):
    v1, v2 = registry.get("lv-ct", 1), registry.get("lv-ct", 2)
    server = _server(registry, tmp_path, cache_size=2)
    first = server.engine(v1)
    assert server.engine(v1) is first
    second = server.engine(v2)
    assert second is not first and server.engine(v1) is first  # both kept
    small = _server(registry, tmp_path, cache_size=1)
    first = small.engine(v1)
    small.engine(v2)  # pushes v1 out
    assert small.engine(v1) is not first


def test_segmentation_lies_on_the_input_grid_and_names_its_backend(
    registry, small_cardiac_3d, tmp_path
):
    case, version = small_cardiac_3d, registry.get("lv-ct", 1)
    by_engine = {}
    for kind in (EngineKind.ONNXRUNTIME, EngineKind.TORCH):
        result, backend = _server(registry, tmp_path, engine=kind).segment(case.image, version)
        assert result.labels.shape == case.image.shape and result.labels.dtype == np.uint8
        assert {"preprocess", "infer", "postprocess"} <= set(result.timings_ms)
        by_engine[backend] = result.labels
    assert set(by_engine) == {"onnxruntime:CPUExecutionProvider", "torch:cpu"}
    ort, torch_labels = by_engine.values()
    truth = case.labels.array
    for label in (1, 2):  # the committed model finds the blood pool and the myocardium
        assert dice(ort == label, truth == label) > 0.95
    assert (ort == torch_labels).mean() > 0.999  # the two engines agree


def test_a_version_without_torch_weights_runs_in_onnxruntime_when_torch_is_asked_for(
    registry, tmp_path
):
    server = _server(registry, tmp_path, engine=EngineKind.TORCH)
    assert server.engine(registry.get("lv-ct", 1)).backend == "torch:cpu"
    assert server.engine(registry.get("lv-ct", 3)).backend.startswith("onnxruntime:")


def test_the_settings_configure_the_server(registry, tmp_path):
    settings = Settings(
        data_dir=tmp_path, engine="torch", cpu_engine="torch", ort_providers="A,B",
        threads=3, sw_overlap=0.5, sw_batch_size=2, allow_torchscript=True,
    )  # fmt: skip
    server = ModelServer.from_settings(registry, settings)
    config = server.config
    assert (config.engine, config.cpu_engine) == (EngineKind.TORCH, EngineKind.TORCH)
    assert config.ort_providers == ("A", "B") and config.threads == 3
    assert (config.inference.overlap, config.inference.sw_batch_size) == (0.5, 2)
    assert config.allow_torchscript is True
    assert server.cache_dir == settings.resolved_artifact_dir / "engine-cache"
    defaults = ModelServer.from_settings(registry, Settings(data_dir=tmp_path)).config
    assert (defaults.engine, defaults.ort_providers) == (EngineKind.AUTO, None)
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'onnxruntime', 'torch'"):
        ModelServer.from_settings(registry, Settings(data_dir=tmp_path, engine="gpu"))

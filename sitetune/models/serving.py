"""Serving: resolve a model per request, keep engines per version, segment volumes.

Aliases are resolved from the registry on every request (one indexed query), so moving
``production`` takes effect in every worker at its next request. Engines are built once
per (version, backend) and kept in a small LRU cache guarded by a lock.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sitetune.errors import InvalidInput
from sitetune.imaging.volume import Volume
from sitetune.models.engines import (
    EngineKind,
    OrtEngine,
    TorchEngine,
    choose_engine,
    engine_kind,
)
from sitetune.models.registry import ModelVersion, Registry

if TYPE_CHECKING:
    from sitetune.models.engines import Engine

logger = logging.getLogger(__name__)

DEFAULT_MODEL_FOR_MODALITY = {"CT": "lv-ct", "MR": "flair-lesion"}


@dataclass(frozen=True)
class InferenceSettings:
    """Sliding-window parameters (Gaussian blending)."""

    overlap: float = 0.25
    sw_batch_size: int = 1


@dataclass
class Segmentation:
    """A label map on the input grid and where the time went."""

    labels: np.ndarray  # uint8, the input array's shape (3D or 4D)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingConfig:
    engine: EngineKind = EngineKind.AUTO
    cpu_engine: EngineKind = EngineKind.ONNXRUNTIME  # what AUTO uses on CPU: see bench/
    ort_providers: tuple[str, ...] | None = None
    threads: int | None = None
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    cache_size: int = 4
    allow_torchscript: bool = False  # run TorchScript versions in torch (they are code)


class ModelServer:
    """Model resolution, engine cache and segmentation for the HTTP workers."""

    def __init__(self, registry: Registry, config: ServingConfig, cache_dir: Path) -> None:
        self.registry, self.config, self.cache_dir = registry, config, cache_dir
        self._engines: OrderedDict[tuple[str, int, str], Engine] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, registry: Registry, settings) -> ModelServer:
        """The server a deployment's `sitetune.settings.Settings` describe."""
        config = ServingConfig(
            engine=engine_kind(settings.engine, "engine"),
            cpu_engine=engine_kind(settings.cpu_engine, "cpu_engine"),
            ort_providers=tuple(settings.ort_providers.split(","))
            if settings.ort_providers
            else None,
            threads=settings.threads,
            inference=InferenceSettings(settings.sw_overlap, settings.sw_batch_size),
            allow_torchscript=settings.allow_torchscript,
        )
        return cls(registry, config, settings.resolved_artifact_dir / "engine-cache")

    def choose(self, volume: Volume, model: str | None, version: str | None) -> ModelVersion:
        """The version to run: ``model`` (or the modality's default) at ``version`` or
        the ``production`` alias. Whether the input suits it is `sitetune.analysis`'s
        admission check."""
        if model is None:
            model = DEFAULT_MODEL_FOR_MODALITY.get(volume.modality or "")
            if model is None:
                raise InvalidInput(
                    f"cannot choose a model for modality {volume.modality or 'unknown'} "
                    f"(NIfTI does not record it); pass model= one of "
                    f"{sorted(set(DEFAULT_MODEL_FOR_MODALITY.values()))}",
                    code="model_required",
                )
        ref = model if version is None else f"{model.partition(':')[0]}:{version}"
        return self.registry.resolve(ref)

    def engine(self, version: ModelVersion) -> Engine:
        """The cached engine of a version (built on first use, so that a process that
        never segments -- the arbiter, the supervisors, an idle worker -- never imports
        torch or onnxruntime)."""
        kind = choose_engine(self.config.engine, self.config.cpu_engine)
        key = (version.name, version.version, str(kind))
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            engine = self._build(version, kind)
            self._engines[key] = engine
            while len(self._engines) > self.config.cache_size:
                self._engines.popitem(last=False)
            return engine

    def _build(self, version: ModelVersion, kind: EngineKind) -> Engine:
        import torch

        from sitetune.models.importing import load_torch_network

        network = (
            load_torch_network(version, self.config.allow_torchscript)
            if kind is EngineKind.TORCH
            else None
        )
        if network is None:  # ONNX Runtime asked for, or an ONNX-only version
            return OrtEngine(
                version.onnx_path,
                providers=self.config.ort_providers,
                threads=self.config.threads,
                cache_dir=self.cache_dir / f"{version.name}-{version.version}",
            )
        device = "cuda" if TorchEngine.gpu_available() else "cpu"
        autocast = torch.bfloat16 if device == "cuda" else None
        return TorchEngine(network, device=device, autocast_dtype=autocast)

    def segment(self, volume: Volume, version: ModelVersion) -> tuple[Segmentation, str]:
        """Segment ``volume`` with ``version``; returns the result and the backend name."""
        from sitetune.models.inference import segment

        engine = self.engine(version)
        return segment(volume, version.card, engine, self.config.inference), engine.backend

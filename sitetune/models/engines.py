"""Inference engines: ONNX Runtime (TensorRT EP > CUDA EP > CPU EP) and torch.

Each engine maps a batch ``(N, 1, X, Y, Z)`` float32 tensor to logits ``(N, C, X, Y, Z)``
and names itself in ``backend`` (``"onnxruntime:CPUExecutionProvider"``,
``"torch:cuda:bf16"`` ...), the string every response carries; both are safe to call
from several threads.

Engines are plugins: each says whether its library is installed (``is_available()``)
and whether it can use a GPU here (``gpu_available()``), and imports its library
(onnxruntime, torch) only when asked, so importing this module costs nothing. Which one
a deployment runs is `choose_engine`'s decision from the settings (``SITETUNE_ENGINE``,
``SITETUNE_CPU_ENGINE``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch is imported when an engine is built or run, not with this module
    import torch

logger = logging.getLogger(__name__)

ORT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


class EngineKind(StrEnum):
    AUTO = "auto"  # ONNX Runtime where a GPU provider exists, else the faster CPU engine
    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


class Engine(Protocol):
    backend: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """A torch module in eval mode; on CUDA optionally under fp16/bf16 autocast."""

    kind = EngineKind.TORCH

    def __init__(
        self,
        network: torch.nn.Module,
        device: str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.autocast_dtype = autocast_dtype if self.device.type == "cuda" else None
        suffix = f":{str(autocast_dtype).removeprefix('torch.')}" if self.autocast_dtype else ""
        self.backend = f"torch:{self.device.type}{suffix}"

    @staticmethod
    def is_available() -> bool:
        """Whether torch is installed."""
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    @staticmethod
    def gpu_available() -> bool:
        """Whether torch is installed and sees a CUDA GPU."""
        if not TorchEngine.is_available():
            return False
        import torch

        return torch.cuda.is_available()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            batch = batch.to(self.device, non_blocking=True)
            if self.autocast_dtype is not None:
                with torch.autocast("cuda", dtype=self.autocast_dtype):
                    return self.network(batch).float()
            return self.network(batch)


def ort_providers(preferred: Sequence[str] | None = None, cache_dir: Path | None = None) -> list:
    """The providers to ask ONNX Runtime for, best first, among those installed."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = [p for p in (preferred or ORT_PREFERENCE) if p in available]
    if not wanted:
        raise ValueError(
            f"none of the providers {list(preferred or ORT_PREFERENCE)} is "
            f"available; installed: {sorted(available)}"
        )
    providers: list = []
    for name in wanted:
        if name == "TensorrtExecutionProvider":
            options = {"trt_fp16_enable": True}
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                options |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                }
            providers.append((name, options))
        else:
            providers.append(name)
    return providers


class OrtEngine:
    """An ONNX Runtime session over an exported model, with full graph optimisation."""

    kind = EngineKind.ONNXRUNTIME

    def __init__(
        self,
        onnx_path: Path | str,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        # Idle threads sleep instead of spinning: between windows the torch side of the
        # sliding window (blending) needs those cores; measured 7 % faster end to end.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=ort_providers(providers, cache_dir)
        )
        self.input_name = self.session.get_inputs()[0].name
        self.backend = f"onnxruntime:{self.session.get_providers()[0]}"

    @staticmethod
    def is_available() -> bool:
        """Whether onnxruntime is installed."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    @staticmethod
    def gpu_available() -> bool:
        """Whether onnxruntime is installed with a GPU provider (TensorRT or CUDA)."""
        if not OrtEngine.is_available():
            return False
        import onnxruntime as ort

        return bool(_ORT_GPU_PROVIDERS & set(ort.get_available_providers()))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        import torch  # the sliding window hands torch tensors in and blends torch tensors

        array = batch.detach().cpu().numpy().astype("float32", copy=False)
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)


ENGINES: dict[EngineKind, type[OrtEngine] | type[TorchEngine]] = {
    EngineKind.ONNXRUNTIME: OrtEngine,
    EngineKind.TORCH: TorchEngine,
}


def engine_kind(value: EngineKind | str, name: str = "engine") -> EngineKind:
    """``value`` as an `EngineKind`; ValueError naming the setting ``name`` and the
    allowed values otherwise."""
    try:
        return EngineKind(value)
    except ValueError:
        allowed = ", ".join(repr(k.value) for k in EngineKind)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def choose_engine(
    engine: EngineKind | str = EngineKind.AUTO,
    cpu_engine: EngineKind | str = EngineKind.ONNXRUNTIME,
) -> EngineKind:
    """The engine to run on this machine, from the settings ``engine`` and ``cpu_engine``.

    ``auto`` takes ONNX Runtime where it has a GPU provider, else torch where torch sees
    a CUDA GPU, else ``cpu_engine`` (chosen by measurement, ``bench/segment.py``), else
    whichever engine is installed. A named engine is taken as it is.

    Raises:
        ValueError: an unknown engine name, or a named engine whose library is not
            installed (none at all for ``auto``).
    """
    engine, cpu_engine = engine_kind(engine, "engine"), engine_kind(cpu_engine, "cpu_engine")
    if engine is not EngineKind.AUTO:
        if not ENGINES[engine].is_available():
            raise ValueError(f"engine {engine.value!r} is asked for, but it is not installed")
        return engine
    if OrtEngine.gpu_available():
        return EngineKind.ONNXRUNTIME
    if TorchEngine.gpu_available():
        return EngineKind.TORCH
    candidates = [cpu_engine] if cpu_engine is not EngineKind.AUTO else []
    for kind in [*candidates, EngineKind.ONNXRUNTIME, EngineKind.TORCH]:
        if ENGINES[kind].is_available():
            return kind
    raise ValueError("no inference engine is installed (onnxruntime or torch)")

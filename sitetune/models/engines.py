"""Inference engines: ONNX Runtime (TensorRT EP > CUDA EP > CPU EP) and torch.

Each engine maps a batch ``(N, 1, X, Y, Z)`` float32 tensor to logits ``(N, C, X, Y, Z)``
and names itself in ``backend`` (``"onnxruntime:CPUExecutionProvider"``,
``"torch:cuda:bf16"`` ...), the string every response carries. Engines are plugins with
guarded imports and ``is_available()``; both are safe to call from several threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

ORT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Engine(Protocol):
    backend: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """A torch module in eval mode; on CUDA optionally under fp16/bf16 autocast."""

    def __init__(
        self,
        network: torch.nn.Module,
        device: str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.autocast_dtype = autocast_dtype if self.device.type == "cuda" else None
        suffix = f":{str(autocast_dtype).removeprefix('torch.')}" if self.autocast_dtype else ""
        self.backend = f"torch:{self.device.type}{suffix}"

    @staticmethod
    def is_available() -> bool:
        return True

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
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
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().cpu().numpy().astype("float32", copy=False)
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)

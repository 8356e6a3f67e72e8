"""GPU engines: run where a GPU (and the GPU builds) are present, skip cleanly elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitetune.models.engines import OrtEngine, TorchEngine
from sitetune.models.export import export_onnx
from sitetune.models.networks import build_network
from tests.unit.models.test_engines import SMALL

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"
)


def _ort_has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_torch_cuda_engine_matches_cpu(dtype):
    torch.manual_seed(0)
    network = build_network(SMALL)
    batch = torch.rand(2, 1, 32, 32, 32)
    cpu = TorchEngine(network)(batch)
    gpu_engine = TorchEngine(build_network(SMALL), device="cuda", autocast_dtype=dtype)
    gpu_engine.network.load_state_dict(network.state_dict())
    gpu = gpu_engine(batch).cpu()
    assert gpu_engine.backend.startswith("torch:cuda")
    tolerance = 1e-3 if dtype is None else 5e-2
    np.testing.assert_allclose(gpu.numpy(), cpu.numpy(), atol=tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_ort_gpu_providers_match_cpu(provider, tmp_path):
    if not _ort_has(provider):
        pytest.skip(f"onnxruntime has no {provider} here (install onnxruntime-gpu / tensorrt)")
    torch.manual_seed(0)
    network = build_network(SMALL)
    export_onnx(network, SMALL, tmp_path / "m.onnx")
    engine = OrtEngine(
        tmp_path / "m.onnx",
        providers=[provider, "CPUExecutionProvider"],
        cache_dir=tmp_path / "trt-cache",
    )
    assert engine.backend == f"onnxruntime:{provider}"
    batch = torch.rand(2, 1, 32, 32, 32)
    expected = TorchEngine(network)(batch).numpy()
    np.testing.assert_allclose(engine(batch).numpy(), expected, atol=5e-2)  # TensorRT runs fp16

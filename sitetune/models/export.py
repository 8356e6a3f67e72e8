"""torch -> ONNX export with a parity check against the torch network.

The graph takes ``(N, 1, *patch)`` float32 (the batch dimension is dynamic, the spatial
one fixed to the card's patch, which is all sliding-window inference ever feeds and
what lets TensorRT build one static engine) and returns logits ``(N, C, *patch)``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from sitetune.models.card import ModelCard

logger = logging.getLogger(__name__)

OPSET = 17


def export_onnx(
    network: torch.nn.Module,
    card: ModelCard,
    path: Path | str,
    *,
    check_batches: int = 2,
    seed: int = 0,
) -> dict:
    """Write ``network`` as ONNX to ``path`` and return the parity record for the card.

    Parity: the maximum absolute logit difference between torch and ONNX Runtime (CPU)
    over ``check_batches`` random and one structured input.
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    network = network.eval().cpu()
    example = torch.zeros(1, 1, *card.patch_size)
    with warnings.catch_warnings():  # the TorchScript exporter is chatty about tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.rand(2, 1, *card.patch_size, generator=generator) for _ in range(check_batches)]
    inputs.append(
        torch.linspace(0, 1, int(np.prod(card.patch_size))).reshape(1, 1, *card.patch_size)
    )
    worst = 0.0
    with torch.no_grad():
        for batch in inputs:
            expected = network(batch).numpy()
            (actual,) = session.run(None, {"image": batch.numpy()})
            worst = max(worst, float(np.abs(expected - actual).max()))
    logger.info("exported %s: max |torch - onnx| = %.2e", path.name, worst)
    return {
        "onnx_opset": OPSET,
        "parity_max_abs_logit_diff": worst,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
    }

"""Turning uploaded weights into a registered version.

Accepted forms (detected by content, not by file name):

- a torch **state dict** (``.pt``) for the network the card describes;
- a **TorchScript** module (``torch.jit.save``): refused unless the operator enables it
  (``allow_torchscript``), because TorchScript is code (it can read and write files)
  and is executed to trace the ONNX export;
- an **ONNX** model (served by ONNX Runtime only; it must take ``(N, 1, *patch)``); one
  that references external data files is refused (ONNX Runtime would open any path);
- a **MONAI bundle** zip: its ``models/model.pt`` state dict is loaded into the card's
  network (the bundle's own configs are not executed: a config can name any Python
  callable, and the card already states the network).

Torch forms are exported to ONNX with a parity check recorded in the card's ``export``.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from enum import StrEnum
from pathlib import Path

import torch

from sitetune.errors import InvalidInput
from sitetune.models.card import ModelCard
from sitetune.models.export import export_onnx
from sitetune.models.networks import build_network
from sitetune.models.registry import ModelVersion, Registry

STATE_DICT, TORCHSCRIPT, ONNX = "weights.pt", "model.ts", "model.onnx"


class WeightsKind(StrEnum):
    STATE_DICT = "state_dict"
    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"
    MONAI_BUNDLE = "monai_bundle"


MAX_MEMBER_BYTES = 2 << 30  # a bundle's weights file, inflated
MAX_MEMBER_RATIO = 100.0  # inflated / compressed: weights compress far less than this


def _bundle_state_dict(path: Path) -> bytes:
    with zipfile.ZipFile(path) as bundle:
        names = [n for n in bundle.namelist() if n.endswith("models/model.pt")]
        if not names:
            raise InvalidInput("the MONAI bundle has no models/model.pt", code="invalid_weights")
        info = bundle.getinfo(min(names, key=len))
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_MEMBER_BYTES or ratio > MAX_MEMBER_RATIO:
            raise InvalidInput(
                f"the bundle's {info.filename} declares {info.file_size} bytes (ratio "
                f"{ratio:.0f}); at most {MAX_MEMBER_BYTES} bytes, ratio {MAX_MEMBER_RATIO:.0f}",
                code="payload_too_large",
            )
        with bundle.open(info) as member:
            data = member.read(MAX_MEMBER_BYTES + 1)  # the header may lie: bounded read
        if len(data) > MAX_MEMBER_BYTES:
            raise InvalidInput("the bundle's weights exceed the limit", code="payload_too_large")
        return data


def detect(path: Path) -> WeightsKind:
    """What kind of weights a file holds."""
    head = path.read_bytes()[:4]
    if head[:2] == b"PK":  # torch.save, torch.jit.save and bundles are all zips
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("models/model.pt") for n in names):
            return WeightsKind.MONAI_BUNDLE
        if any(n.endswith("/code/__torch__.py") or "/code/" in n for n in names):
            return WeightsKind.TORCHSCRIPT
        return WeightsKind.STATE_DICT
    try:
        import onnx

        onnx.load(str(path), load_external_data=False)
        return WeightsKind.ONNX
    except Exception:
        raise InvalidInput(
            "weights must be a torch state dict, a TorchScript module, an ONNX "
            "model or a MONAI bundle zip",
            code="invalid_weights",
        ) from None


def _network_from(card: ModelCard, kind: WeightsKind, path: Path) -> torch.nn.Module:
    if kind is WeightsKind.TORCHSCRIPT:
        return torch.jit.load(str(path), map_location="cpu").eval()
    raw = _bundle_state_dict(path) if kind is WeightsKind.MONAI_BUNDLE else path.read_bytes()
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise InvalidInput("the weights file is not a state dict", code="invalid_weights")
    network = build_network(card)
    network.load_state_dict(state)
    return network.eval()


def _refuse_external_data(path: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    tensors = [*model.graph.initializer]
    for node in model.graph.node:
        tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    if any(uses_external_data(t) for t in tensors):
        raise InvalidInput(
            "the ONNX model references external data files; send one self-contained "
            "model (onnx.save(model, path, save_as_external_data=False))",
            code="onnx_external_data",
        )


def _check_onnx(card: ModelCard, path: Path) -> dict:
    import onnxruntime as ort

    _refuse_external_data(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.zeros(1, 1, *card.patch_size).numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    expected = (1, card.out_channels, *card.patch_size)
    if tuple(logits.shape) != expected:
        raise InvalidInput(
            f"the ONNX model maps (1, 1, *patch) to {tuple(logits.shape)}; the "
            f"card needs {expected}",
            code="weights_mismatch",
        )
    return {"onnx_only": True, "onnxruntime_version": ort.__version__}


def register_weights(
    registry: Registry,
    card: ModelCard,
    path: Path,
    *,
    actor: str,
    reason: str,
    aliases: tuple[str, ...] = (),
    allow_torchscript: bool = False,
) -> ModelVersion:
    """Validate ``path`` against ``card``, export ONNX when needed, and register
    (``allow_torchscript``: accept TorchScript, which is executed; off by default)."""
    kind = detect(path)
    if kind is WeightsKind.TORCHSCRIPT and not allow_torchscript:
        raise InvalidInput(
            "TorchScript modules are code and are not executed here unless an operator "
            "enables it (SITETUNE_ALLOW_TORCHSCRIPT=true); send a state dict, ONNX or a "
            "MONAI bundle",
            code="torchscript_disabled",
        )
    if kind is WeightsKind.ONNX:
        export = _check_onnx(card, path)
        card = card.model_copy(update={"export": card.export | export})
        return registry.register(card, {ONNX: path}, actor=actor, reason=reason, aliases=aliases)
    try:
        network = _network_from(card, kind, path)
    except (RuntimeError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInput(
            f"the weights do not fit the card's network: {exc}", code="weights_mismatch"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / ONNX
        try:
            parity = export_onnx(network, card, onnx_path)
        except RuntimeError as exc:
            raise InvalidInput(
                f"the network does not run on the card's patch: {exc}", code="weights_mismatch"
            ) from exc
        card = card.model_copy(update={"export": card.export | parity})
        files = {ONNX: onnx_path}
        if kind is WeightsKind.TORCHSCRIPT:
            files[TORCHSCRIPT] = path
        else:
            state = Path(tmp) / STATE_DICT
            torch.save(network.state_dict(), state)
            files[STATE_DICT] = state
        return registry.register(card, files, actor=actor, reason=reason, aliases=aliases)


def load_torch_network(
    version: ModelVersion, allow_torchscript: bool = False
) -> torch.nn.Module | None:
    """The version's torch network (state dict, or TorchScript when allowed), or None
    (ONNX-only, or TorchScript not allowed: served by ONNX Runtime from its export)."""
    if version.weights_path.is_file():
        network = build_network(version.card)
        network.load_state_dict(
            torch.load(version.weights_path, map_location="cpu", weights_only=True)
        )
        return network.eval()
    if allow_torchscript and (version.folder / TORCHSCRIPT).is_file():
        return torch.jit.load(str(version.folder / TORCHSCRIPT), map_location="cpu").eval()
    return None

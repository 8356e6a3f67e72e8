"""The built-in base models: weights and cards committed under ``models/builtin/<name>/``.

They are registered (with an ONNX export and its parity record) and aliased
``production`` the first time the service starts on an empty registry; afterwards the
registry owns them like any other version.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from sitetune.models.card import ModelCard
from sitetune.models.export import export_onnx
from sitetune.models.networks import build_network
from sitetune.models.registry import PRODUCTION, ModelVersion, Registry

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin"


def builtin_folders() -> list[Path]:
    """Folders holding a committed ``card.json`` and ``weights.pt``."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(
        p
        for p in BUILTIN_DIR.iterdir()
        if (p / "card.json").is_file() and (p / "weights.pt").is_file()
    )


def register_with_onnx(
    registry: Registry,
    card: ModelCard,
    weights: Path,
    *,
    actor: str,
    reason: str,
    aliases: tuple[str, ...] = (),
) -> ModelVersion:
    """Export ``weights`` to ONNX (parity recorded in the card) and register both."""
    network = build_network(card)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        parity = export_onnx(network, card, onnx_path)
        card = card.model_copy(update={"export": card.export | parity})
        return registry.register(
            card,
            {"weights.pt": weights, "model.onnx": onnx_path},
            actor=actor,
            reason=reason,
            aliases=aliases,
        )


def register_builtins(registry: Registry) -> list[ModelVersion]:
    """Register each built-in model whose name the registry does not know yet."""
    known = set(registry.names())
    added = []
    for folder in builtin_folders():
        card = ModelCard.model_validate_json((folder / "card.json").read_text())
        if card.name in known:
            continue
        version = register_with_onnx(
            registry,
            card,
            folder / "weights.pt",
            actor="sitetune",
            reason="built-in base model",
            aliases=(PRODUCTION,),
        )
        logger.info("registered built-in %s", version.ref)
        added.append(version)
    return added

"""The built-in base models: weights and cards committed under ``models/builtin/<name>/``.

They are registered (with an ONNX export and its parity record) and aliased
``production`` the first time the service starts on an empty registry; afterwards the
registry owns them like any other version.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sitetune.models.card import ModelCard
from sitetune.models.importing import register_weights
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


def load_builtin(folder_or_name: Path | str) -> tuple[ModelCard, torch.nn.Module]:
    """The card and torch network (weights loaded, eval mode) of a built-in model, by its
    folder or its name -- for benchmarks and tests that use the committed weights directly."""
    folder = (
        Path(folder_or_name) if isinstance(folder_or_name, Path) else BUILTIN_DIR / folder_or_name
    )
    card = ModelCard.model_validate_json((folder / "card.json").read_text())
    network = build_network(card)
    network.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return card, network.eval()


def register_builtins(registry: Registry) -> list[ModelVersion]:
    """Register each built-in model whose name the registry does not know yet."""
    known = set(registry.names())
    added = []
    for folder in builtin_folders():
        card = ModelCard.model_validate_json((folder / "card.json").read_text())
        if card.name in known:
            continue
        version = register_weights(
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

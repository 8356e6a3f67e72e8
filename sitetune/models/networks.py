"""Networks from MONAI, built from a card's `NetworkSpec`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sitetune.models.card import Architecture, ModelCard

if TYPE_CHECKING:
    import torch


def build_network(card: ModelCard) -> torch.nn.Module:
    """The MONAI network a card describes, randomly initialised, in eval mode.

    Input ``(N, 1, X, Y, Z)`` float32, output ``(N, C, X, Y, Z)`` logits where ``C`` is
    ``card.out_channels`` (background first).
    """
    from monai.networks import nets

    spec = card.network
    common = {"spatial_dims": 3, "in_channels": 1, "out_channels": card.out_channels}
    if spec.architecture is Architecture.UNET:
        net = nets.UNet(**common, **spec.params)
    elif spec.architecture is Architecture.SEGRESNET:
        net = nets.SegResNet(**common, **spec.params)
    else:
        net = nets.DynUNet(**common, **spec.params)
    return net.eval()

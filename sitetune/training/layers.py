"""Which layers of a network are encoder and which decoder, for the fine-tune strategies
(`sitetune.training.finetune.apply_strategy`) and layer-wise learning rates
(`parameter_groups`, used by the training loop's optimiser)."""

from __future__ import annotations

import torch

from sitetune.errors import InvalidInput


def unet_parts(
    network: torch.nn.Module,
    needed_by: str = "strategies 'decoder' and 'head'",
    instead: str = "use 'all' or 'scratch'",
) -> tuple[list, list]:
    """``(encoder blocks, decoder blocks)`` of a MONAI UNet, top level first; the
    bottleneck counts as encoder and ``decoder[0]`` is the block producing the classes.

    `InvalidInput` (``strategy_unsupported``) for any other network, naming what needed
    the split and what to do ``instead``.
    """
    from monai.networks.layers import SkipConnection

    level = getattr(network, "model", None)
    encoder, decoder = [], []
    while isinstance(level, torch.nn.Sequential) and len(level) == 3:
        if not isinstance(level[1], SkipConnection):
            break
        encoder.append(level[0])
        decoder.append(level[2])
        level = level[1].submodule
    if not decoder:
        raise InvalidInput(
            f"{needed_by} need a UNet base model (this one is a {type(network).__name__}); "
            f"{instead}",
            code="strategy_unsupported",
        )
    encoder.append(level)
    return encoder, decoder


def parameter_groups(
    network: torch.nn.Module, learning_rate: float, layerwise_lr_decay: float = 1.0
) -> list[dict]:
    """Optimiser parameter groups of ``network``'s trainable parameters.

    ``layerwise_lr_decay`` 1 (off): one group at ``learning_rate``. Below 1 (a UNet): the
    decoder blocks, which produce the classes, at the full ``learning_rate``; the encoder
    scaled down by one factor per level, from the bottleneck (``decay``) up to the first
    block (``decay ** levels``), whose generic low-level features the few local cases
    should change least. Groups carry a ``name`` (``decoder``, ``encoder.0`` = the first
    block, ...); groups without a trainable parameter (a frozen encoder) are left out.
    """
    if not 0 < layerwise_lr_decay <= 1:
        raise ValueError(f"layerwise_lr_decay must be in (0, 1]; got {layerwise_lr_decay}")
    trainable = [p for p in network.parameters() if p.requires_grad]
    if layerwise_lr_decay == 1:
        return [{"params": trainable, "lr": learning_rate, "name": "all"}]
    encoder, _ = unet_parts(
        network, "layer-wise learning rates (layerwise_lr_decay)", "use layerwise_lr_decay 1 (off)"
    )
    assigned: set[int] = set()
    groups = []
    for level, block in enumerate(encoder):
        params = [p for p in block.parameters() if p.requires_grad and id(p) not in assigned]
        assigned.update(id(p) for p in params)
        factor = layerwise_lr_decay ** (len(encoder) - level)
        groups.append({"params": params, "lr": learning_rate * factor, "name": f"encoder.{level}"})
    rest = [p for p in trainable if id(p) not in assigned]  # the decoder (and any head)
    groups.append({"params": rest, "lr": learning_rate, "name": "decoder"})
    return [g for g in groups if g["params"]]

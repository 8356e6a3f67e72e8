"""Which measurement a model supports, decided by its card's *coded* labels.

A card's label values are the network's channel order and say nothing about anatomy:
one model may emit ``1 = LV blood pool, 2 = LV myocardium``, another the reverse. The
measurements (`sitetune.measure`) work on fixed values (`LV_LABELS`, `LESION_LABELS`),
so the label map is mapped onto those values by the structures' SNOMED CT codes.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from sitetune.errors import InputError
from sitetune.imaging.codes import LESION, LV_BLOOD_POOL, LV_MYOCARDIUM, StructureCode
from sitetune.measure.labels import BLOOD_POOL, LV_LABELS, MYOCARDIUM
from sitetune.measure.lesions import LESION_LABELS
from sitetune.models.card import ModelCard


class Task(StrEnum):
    """What an analysis computes besides the label map."""

    SEGMENT = "segment"  # label volumes only
    WALL_THICKNESS = "wall_thickness"  # LV wall thickness at ED and ES
    LESION_VOLUME = "lesion_volume"  # lesion count and volumes


# task -> {measurement label value: the coded structure it must be}
_NEEDS: dict[Task, dict[int, StructureCode]] = {
    Task.WALL_THICKNESS: {BLOOD_POOL: LV_BLOOD_POOL, MYOCARDIUM: LV_MYOCARDIUM},
    Task.LESION_VOLUME: {next(iter(LESION_LABELS)): LESION},
}
# what a measurement's label map may hold (0 is background)
MEASURED_LABELS: dict[Task, dict[int, str]] = {
    Task.WALL_THICKNESS: LV_LABELS,
    Task.LESION_VOLUME: LESION_LABELS,
}


def _same(a: StructureCode, b: StructureCode) -> bool:
    return (a.type.value, a.type.scheme_designator) == (b.type.value, b.type.scheme_designator)


def value_map(card: ModelCard, task: Task) -> dict[int, int] | None:
    """card label value -> the measurement's value, or None when the card lacks a needed
    structure. Labels the task does not use map to 0."""
    if task is Task.SEGMENT:
        return {label.value: label.value for label in card.labels}
    mapping = {label.value: 0 for label in card.labels}
    for measured, needed in _NEEDS[task].items():
        match = [label.value for label in card.labels if _same(label.code, needed)]
        if len(match) != 1:
            return None
        mapping[match[0]] = measured
    return mapping


def measured_task(card: ModelCard) -> Task:
    """The measurement a model's coded labels support (`Task.SEGMENT` when none)."""
    for task in (Task.WALL_THICKNESS, Task.LESION_VOLUME):
        if value_map(card, task) is not None:
            return task
    return Task.SEGMENT


def check_task(card: ModelCard, task: Task, ref: str) -> None:
    """`InputError` when ``card`` cannot serve ``task`` (cheap: before any pixel work)."""
    if value_map(card, task) is None:
        needed = ", ".join(s.label for s in _NEEDS[task].values())
        raise InputError(
            f"model {ref} does not produce the structures {task.value} needs ({needed}); "
            f"its labels: {', '.join(card.label_names.values())}",
            code="wrong_model",
        )


def to_measured_labels(labels: np.ndarray, card: ModelCard, task: Task) -> np.ndarray:
    """A model's label map with the values the task's measurement expects."""
    mapping = value_map(card, task)
    if mapping is None:
        raise ValueError(f"card {card.name} cannot serve {task}")
    if all(k == v for k, v in mapping.items()):
        return labels
    lut = np.zeros(max(256, max(mapping) + 1), dtype=np.uint8)
    for value, measured in mapping.items():
        lut[value] = measured
    return lut[labels]

"""Routing rules and destinations, from a TOML file (``SITETUNE_PACS_CONFIG``).

A received series is matched against the routes in file order; the first route whose
criteria all match takes it; a series no route takes is recorded as ``unrouted`` and
left alone. Criteria (all optional; an absent one matches everything):

- ``modality``: exact, case-insensitive (``CT``, ``MR``);
- ``series_description``, ``body_part``: regular expressions searched case-insensitively
  in Series Description / Body Part Examined;
- ``image_type``: a value that must be one of Image Type's values (``AXIAL``, ``ORIGINAL``).

A route names a registered ``model`` (its production version is used) and the
``destinations`` its SEG and SR go to; ``group = "study"`` gathers every series of a
study that the route takes into one analysis (a cardiac study sent as one series per
phase), ``"series"`` (the default) analyses each series alone. The measurement follows
the model's labels: LV myocardium + blood pool -> wall thickness at ED / ES; lesion ->
lesion volume.

Example::

    [destinations.pacs]
    type = "dicomweb"                      # STOW-RS to <url>/studies
    url = "http://pacs.example:8042/dicom-web"
    headers = { Authorization = "Basic c2l0ZXR1bmU6c2VjcmV0" }

    [destinations.archive]
    type = "dimse"                         # C-STORE
    host = "10.0.0.5"
    port = 104
    ae_title = "ARCHIVE"
    calling_ae_title = "SITETUNE"          # default

    [[routes]]
    name = "cardiac-ct"
    model = "lv-ct"
    modality = "CT"
    series_description = "heart|cardiac|cine"
    group = "study"
    destinations = ["pacs"]

Without a file, the built-in routes below apply (no destinations: results are kept and
listed by ``GET /v1/pacs/analyses``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sitetune.errors import InputError


class Group(StrEnum):
    SERIES = "series"
    STUDY = "study"


class DestinationKind(StrEnum):
    DICOMWEB = "dicomweb"
    DIMSE = "dimse"


@dataclass(frozen=True)
class Destination:
    name: str
    kind: DestinationKind
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    port: int | None = None
    ae_title: str | None = None
    calling_ae_title: str = "SITETUNE"
    timeout_seconds: float = 60.0

    def describe(self) -> str:
        """Where it sends, without credentials."""
        if self.kind is DestinationKind.DICOMWEB:
            return f"STOW-RS {self.url}"
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SeriesInfo:
    """The routing-relevant attributes of a received series."""

    modality: str = ""
    series_description: str = ""
    body_part: str = ""
    image_type: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    name: str
    model: str
    destinations: tuple[str, ...] = ()
    group: Group = Group.SERIES
    modality: str | None = None
    series_description: str | None = None
    body_part: str | None = None
    image_type: str | None = None

    def matches(self, series: SeriesInfo) -> bool:
        if self.modality and series.modality.upper() != self.modality.upper():
            return False
        if self.series_description and not re.search(
            self.series_description, series.series_description, re.IGNORECASE
        ):
            return False
        if self.body_part and not re.search(self.body_part, series.body_part, re.IGNORECASE):
            return False
        image_types = {v.upper() for v in series.image_type}
        return not self.image_type or self.image_type.upper() in image_types


DEFAULT_ROUTES = (
    Route("cardiac-ct", "lv-ct", group=Group.STUDY, modality="CT",
          series_description=r"heart|cardiac|cine|\blv\b|coronary|ccta"),
    Route("brain-flair", "flair-lesion", modality="MR", series_description=r"flair"),
)  # fmt: skip


@dataclass(frozen=True)
class PacsConfig:
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    destinations: dict[str, Destination] = field(default_factory=dict)

    def route_for(self, series: SeriesInfo) -> Route | None:
        """The first route taking ``series``; None when it is unrouted."""
        return next((r for r in self.routes if r.matches(series)), None)


_ROUTE_KEYS = {
    "name", "model", "destinations", "group", "modality", "series_description", "body_part",
    "image_type",
}  # fmt: skip
_DESTINATION_KEYS = {
    "type", "url", "headers", "host", "port", "ae_title", "calling_ae_title", "timeout_seconds",
}  # fmt: skip


def _destination(name: str, spec: dict) -> Destination:
    unknown = set(spec) - _DESTINATION_KEYS
    if unknown:
        raise ValueError(f"destination {name!r}: unknown keys {sorted(unknown)}")
    try:
        kind = DestinationKind(spec.get("type", ""))
    except ValueError:
        raise ValueError(f"destination {name!r}: type must be 'dicomweb' or 'dimse'") from None
    if kind is DestinationKind.DICOMWEB and not spec.get("url"):
        raise ValueError(f"destination {name!r}: a dicomweb destination needs 'url'")
    if kind is DestinationKind.DIMSE and not all(spec.get(k) for k in ("host", "port", "ae_title")):
        raise ValueError(f"destination {name!r}: a dimse destination needs host, port, ae_title")
    return Destination(
        name=name,
        kind=kind,
        url=spec.get("url", "").rstrip("/") or None,
        headers=dict(spec.get("headers", {})),
        host=spec.get("host"),
        port=int(spec["port"]) if spec.get("port") else None,
        ae_title=spec.get("ae_title"),
        calling_ae_title=spec.get("calling_ae_title", "SITETUNE"),
        timeout_seconds=float(spec.get("timeout_seconds", 60.0)),
    )


def _route(index: int, spec: dict, destinations: dict[str, Destination]) -> Route:
    name = spec.get("name") or f"route-{index + 1}"
    unknown = set(spec) - _ROUTE_KEYS
    if unknown:
        raise ValueError(f"route {name!r}: unknown keys {sorted(unknown)}")
    if not spec.get("model"):
        raise ValueError(f"route {name!r}: 'model' is required")
    missing = [d for d in spec.get("destinations", []) if d not in destinations]
    if missing:
        raise ValueError(f"route {name!r}: unknown destinations {missing}")
    for key in ("series_description", "body_part"):
        if spec.get(key):
            try:
                re.compile(spec[key])
            except re.error as error:
                raise ValueError(f"route {name!r}: {key} is not a regex: {error}") from None
    try:
        group = Group(spec.get("group", "series"))
    except ValueError:
        raise ValueError(f"route {name!r}: group must be 'series' or 'study'") from None
    return Route(
        name=name,
        model=spec["model"],
        destinations=tuple(spec.get("destinations", [])),
        group=group,
        modality=spec.get("modality"),
        series_description=spec.get("series_description"),
        body_part=spec.get("body_part"),
        image_type=spec.get("image_type"),
    )


def load_config(path: Path | None) -> PacsConfig:
    """Read the routing file (the built-in routes when ``path`` is None or absent).

    Raises `InputError` naming the problem for a malformed file.
    """
    if path is None or not Path(path).is_file():
        return PacsConfig()
    try:
        raw = tomllib.loads(Path(path).read_text())
        destinations = {
            name: _destination(name, spec) for name, spec in raw.get("destinations", {}).items()
        }
        routes = tuple(
            _route(i, spec, destinations) for i, spec in enumerate(raw.get("routes", []))
        )
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as error:
        raise InputError(f"PACS config {path}: {error}", code="bad_pacs_config") from None
    return PacsConfig(routes=routes, destinations=destinations)

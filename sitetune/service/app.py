"""The BentoML service: FastAPI routes mounted with ``@bentoml.asgi_app``.

Routes parse, call domain code and serialise; the work lives in `sitetune.analysis`
(the pipeline and stored results), `sitetune.models` and `sitetune.imaging`. BentoML
itself answers ``/healthz``, ``/livez``, ``/readyz`` (ready once the production models
are loaded) and ``/metrics``.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated

import bentoml
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sitetune import __version__
from sitetune.analysis.tasks import Task
from sitetune.errors import NotFound
from sitetune.housekeeping import reclaimed_bytes
from sitetune.service import (
    routes_console,
    routes_dicomweb,
    routes_jobs,
    routes_measure,
    routes_models,
    routes_principals,
)
from sitetune.service.deps import Clinical, state
from sitetune.service.errors import install_error_handlers
from sitetune.service.metrics import exposition, start_state_gauges
from sitetune.service.perimeter import Perimeter
from sitetune.service.state import AppState
from sitetune.service.uploads import analyse_upload
from sitetune.settings import Settings

logger = logging.getLogger(__name__)


class ResultKind(StrEnum):
    SEGMENT = "segment"
    THICKNESS = "thickness"
    LESION_VOLUME = "lesion-volume"


api = FastAPI(title="sitetune", version=__version__, docs_url="/docs", redoc_url=None)
install_error_handlers(api)


# BentoML's request metrics label by raw path (ids, UIDs): off; ours are by route template
# and served by GET /metrics below.
@bentoml.service(name="sitetune", traffic={"timeout": 3600}, metrics={"enabled": False})
@bentoml.asgi_app(api, path="/")
class Sitetune:
    """One HTTP worker. State lives in the database and the artifact directory only."""

    def __init__(self) -> None:
        self.state = AppState.build(Settings())
        api.state.sitetune = self.state
        self.ready = False
        engine = self.state.registry.engine
        start_state_gauges(self.state.pacs, self.state.jobs, lambda: reclaimed_bytes(engine))
        try:  # warm the production engines so the first request does not pay for them
            for name in self.state.registry.names():
                if "production" in self.state.registry.aliases(name):
                    self.state.models.engine(self.state.registry.resolve(name))
            self.ready = True
        except Exception:
            logger.exception("could not load the production models")
        logger.info("sitetune %s worker ready=%s", __version__, self.ready)

    def __is_ready__(self) -> bool:
        return self.ready


@api.get("/v1/info")
def info() -> dict:
    """Service name and version (no authentication: nothing sensitive)."""
    return {"service": "sitetune", "version": __version__}


@api.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text: our metrics by route template, model stages, jobs, PACS rows.
    No token needed unless ``SITETUNE_METRICS_REQUIRE_TOKEN`` (then any role's)."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)


metrics.token_setting = "metrics_require_token"  # read by the perimeter


@api.post("/v1/segment")
def segment(
    request: Request,
    _: Clinical,
    file: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str | None, Form()] = None,
    version: Annotated[str | None, Form()] = None,
    series: Annotated[str | None, Form()] = None,
) -> dict:
    """Segment a NIfTI file or a zip of one DICOM series / one multi-phase study."""
    return analyse_upload(
        state(request), "segment", Task.SEGMENT, file, model=model, version=version, series=series
    )


@api.get("/v1/results")
def results(
    request: Request,
    _: Clinical,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    kind: Annotated[ResultKind | None, Query()] = None,
) -> dict:
    """The newest results (within the retention), newest first, with headline numbers."""
    store = state(request).results.store
    return {"results": store.recent(limit, kind.value if kind else None)}


@api.get("/v1/results/{result_id}")
def result(request: Request, result_id: str, _: Clinical) -> dict:
    return state(request).results.store.summary(result_id)


@api.get("/v1/results/{result_id}/mask")
def result_mask(request: Request, result_id: str, _: Clinical):
    path = state(request).results.store.file(result_id, "mask.nii.gz", "mask")
    return FileResponse(path, media_type="application/gzip", filename=f"{result_id}.nii.gz")


@api.get("/v1/results/{result_id}/image")
def result_image(request: Request, result_id: str, _: Clinical):
    """The image that was segmented (NIfTI on the input grid; the mask's geometry)."""
    path = state(request).results.store.image(result_id)
    media = "application/gzip" if path.suffix == ".gz" else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=f"{result_id}-{path.name}")


@api.get("/v1/results/{result_id}/seg")
def result_seg(request: Request, result_id: str, _: Clinical, phase: str | None = None):
    """The DICOM SEG (``phase``: ``ed``, ``es`` or an index; default the first), built on
    first request; 409 ``output_unavailable`` with the reason when none can exist."""
    path = state(request).results.dicom_file(result_id, "seg", phase)
    return FileResponse(path, media_type="application/dicom", filename=f"{result_id}-{path.name}")


@api.get("/v1/results/{result_id}/sr")
def result_sr(request: Request, result_id: str, _: Clinical):
    """The TID 1500 measurement report (Comprehensive 3D SR), built on first request."""
    path = state(request).results.dicom_file(result_id, "sr")
    return FileResponse(path, media_type="application/dicom", filename=f"{result_id}-sr.dcm")


api.include_router(routes_measure.router)
api.include_router(routes_models.router)
api.include_router(routes_jobs.router)
api.include_router(routes_dicomweb.router)
api.include_router(routes_principals.router)
api.include_router(routes_console.router)


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@api.api_route("/v1/{rest:path}", methods=_METHODS, include_in_schema=False)
@api.api_route("/dicomweb/{rest:path}", methods=_METHODS, include_in_schema=False)
def unknown_route(request: Request, rest: str):
    """A JSON 404 (or 405) under our prefixes, where BentoML would answer plain text.
    Registered last, so every real route matches first."""
    for route in api.routes:
        mine = getattr(route, "endpoint", None) is unknown_route
        if not mine and route.matches(request.scope)[0] is Match.PARTIAL:
            raise StarletteHTTPException(405, "Method Not Allowed")
    raise NotFound(f"no route {request.method} {request.url.path}", code="route_not_found")


def _body_limit(kind: str) -> int:
    settings = api.state.sitetune.settings
    return {
        "upload": settings.max_upload_bytes,
        "stow": settings.pacs_max_request_bytes,
    }.get(kind, settings.max_json_bytes)


# Outermost: the token, the route's role and the body's size are checked before any
# body byte is read (`sitetune.service.perimeter`).
api.add_middleware(
    Perimeter,
    limits=_body_limit,
    setting=lambda name: getattr(api.state.sitetune.settings, name),
    catch_all=unknown_route,
)

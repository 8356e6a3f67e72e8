"""DICOMweb STOW-RS (role pacs): ``POST /dicomweb/studies[/{study}]``, and the PACS status
routes (``/v1/pacs/...``): received series, analyses with their SEG / SR, deliveries.

The body is streamed to disk part by part (`sitetune.pacs.stow`); stored instances are
moved into their series folders and the series are handed to the PACS worker when the
request ends.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from sitetune.errors import NotFound, UnsupportedInput
from sitetune.pacs.stow import (
    DICOM_MEDIA_TYPE,
    boundary_of,
    check_instance,
    receive_parts,
    response_status,
    store_response,
)
from sitetune.service.deps import Ops, Pacs, state
from sitetune.service.uploads import temporary_folder

logger = logging.getLogger(__name__)
router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=10_000, description="at most this many rows")]


async def _stow(request: Request, study_uid: str | None) -> Response:
    app = state(request)
    boundary = boundary_of(request.headers.get("content-type"))
    with temporary_folder(app.settings.data_dir / "tmp", "stow-") as folder:
        parts = await receive_parts(
            request.stream(), boundary, folder, app.settings.pacs_max_request_bytes
        )
        foreign = sorted({p.content_type for p in parts} - {None, DICOM_MEDIA_TYPE})
        if foreign:
            raise UnsupportedInput(
                f"parts must be {DICOM_MEDIA_TYPE}; got {foreign}: nothing was stored",
                code="unsupported_media_type",
            )
        inflated = app.settings.max_inflated_bytes
        checked = await run_in_threadpool(
            lambda: [check_instance(p, study_uid, inflated) for p in parts]
        )
        stored = [item for item in checked if item.failure is None]
        series = await run_in_threadpool(app.pacs.accept, stored)
        await run_in_threadpool(app.pacs.end_request, series)
    status = response_status(checked)
    failed = [item.reason for item in checked if item.failure is not None]
    logger.info(
        "STOW-RS: %d stored in %d series, %d failed %s",
        len(checked) - len(failed), len(series), len(failed), failed[:3],
    )  # fmt: skip
    base = str(request.base_url).rstrip("/") + "/dicomweb"
    return Response(
        json.dumps(store_response(checked, base)),
        status_code=status,
        media_type="application/dicom+json",
    )


@router.post("/dicomweb/studies")
async def stow(request: Request, _: Pacs) -> Response:
    """STOW-RS Store Instances: 200 all stored, 202 some, 409 none (FailedSOPSequence)."""
    return await _stow(request, None)


@router.post("/dicomweb/studies/{study_uid}")
async def stow_study(request: Request, study_uid: str, _: Pacs) -> Response:
    """STOW-RS into one study: instances of other studies fail (reason 0xA900)."""
    return await _stow(request, study_uid)


@router.get("/v1/pacs/series")
def pacs_series(request: Request, _: Pacs, limit: Limit = 200) -> dict:
    """Received series, newest first, with their state, route and analysis."""
    return {"series": state(request).pacs.list_series(limit)}


@router.get("/v1/pacs/analyses")
def pacs_analyses(request: Request, _: Pacs, limit: Limit = 100) -> dict:
    return {"analyses": [a.to_json() for a in state(request).pacs.list_analyses(limit)]}


@router.get("/v1/pacs/analyses/{analysis_id}")
def pacs_analysis(request: Request, analysis_id: str, _: Pacs) -> dict:
    """One analysis: measurements, output objects and the state of each delivery."""
    pacs = state(request).pacs
    body = pacs.analysis(analysis_id).to_json()
    body["deliveries"] = [d.to_json() for d in pacs.list_deliveries(analysis_id=analysis_id)]
    return body


@router.get("/v1/pacs/analyses/{analysis_id}/files/{name}")
def pacs_analysis_file(request: Request, analysis_id: str, name: str, _: Pacs):
    """A SEG or SR an analysis produced (``application/dicom``)."""
    analysis = state(request).pacs.analysis(analysis_id)
    for output in analysis.outputs:
        if output["name"] == name:
            if not Path(output["path"]).is_file():
                raise NotFound(
                    f"{name} of analysis {analysis_id} has expired (results retention)",
                    code="file_expired",
                )
            return FileResponse(output["path"], media_type="application/dicom", filename=name)
    raise NotFound(
        f"analysis {analysis_id} has no file {name!r}; it has "
        f"{[o['name'] for o in analysis.outputs]}",
        code="file_not_found",
    )


@router.get("/v1/pacs/deliveries")
def pacs_deliveries(request: Request, _: Pacs, limit: Limit = 200) -> dict:
    return {"deliveries": [d.to_json() for d in state(request).pacs.list_deliveries(limit)]}


@router.post("/v1/pacs/deliveries/{delivery_id}/retry")
def pacs_retry(request: Request, delivery_id: str, _: Ops) -> dict:
    """Try a delivery again now (e.g. one marked failed after its last attempt)."""
    return state(request).pacs.retry_delivery(delivery_id).to_json()

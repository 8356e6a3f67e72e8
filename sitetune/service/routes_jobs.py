"""Fine-tune job routes (role ops): submit, list, show, cancel, logs.

Submission validates everything before a job exists: the options, the base model, and
the dataset (extracted under the job's folder and checked against the base card; every
problem listed in a 422). The worker process does the training.
"""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from sitetune.errors import InvalidInput
from sitetune.service.deps import Ops, state
from sitetune.service.uploads import saved_upload
from sitetune.training.datasets import open_site_dataset

router = APIRouter()

_MAX_LOG_CHUNK = 1 << 20


@router.post("/v1/jobs", status_code=202)
def submit_job(
    request: Request,
    actor: Ops,
    dataset: Annotated[UploadFile | None, File()] = None,
    base: Annotated[str, Form()] = "",
    strategy: Annotated[str | None, Form()] = None,
    epochs: Annotated[int | None, Form()] = None,
    iterations_per_epoch: Annotated[int | None, Form()] = None,
    learning_rate: Annotated[float | None, Form()] = None,
    batch_size: Annotated[int | None, Form()] = None,
    val_fraction: Annotated[float | None, Form()] = None,
    val_cases: Annotated[str | None, Form()] = None,
    seed: Annotated[int | None, Form()] = None,
    auto_promote: Annotated[bool | None, Form()] = None,
    promote_margin: Annotated[float | None, Form()] = None,
) -> dict:
    """Queue a fine-tune job of ``base`` on a site dataset (MSD zip); 202 with the job."""
    app = state(request)
    given = {
        "strategy": strategy,
        "epochs": epochs,
        "iterations_per_epoch": iterations_per_epoch,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "val_fraction": val_fraction,
        "val_cases": [c.strip() for c in val_cases.split(",") if c.strip()] if val_cases else None,
        "seed": seed,
        "auto_promote": auto_promote,
        "promote_margin": promote_margin,
    }
    from sitetune.training.finetune import FineTuneConfig, split_cases  # torch: on submission

    try:
        config = FineTuneConfig.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid job options: {problems}", code="invalid_job") from exc
    if not base:
        raise InvalidInput(
            "field 'base' (the model to fine-tune: name, name:alias or name:version) is required",
            code="missing_base",
        )
    version = app.registry.resolve(base)
    job_id = app.jobs.new_id()
    folder = app.jobs.folder(job_id)
    tmp_root = app.settings.data_dir / "tmp"
    try:
        with saved_upload(
            dataset, tmp_root, app.settings.max_upload_bytes, field="dataset"
        ) as path:
            site = open_site_dataset(
                path, folder / "dataset", version.card, app.settings.zip_limits
            )
        split_cases(site, config)  # the split must leave cases on both sides
        job = app.jobs.submit(
            job_id, version.ref, config.model_dump(mode="json"), site.fingerprint, str(actor)
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return job.to_json()


@router.get("/v1/jobs")
def list_jobs(request: Request, _: Ops) -> dict:
    return {"jobs": [job.to_json() for job in state(request).jobs.list()]}


@router.get("/v1/jobs/{job_id}")
def show_job(request: Request, job_id: str, _: Ops) -> dict:
    return state(request).jobs.get(job_id).to_json()


@router.post("/v1/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str, _: Ops) -> dict:
    """Cancel: a queued job at once; a running one once its worker has stopped."""
    return state(request).jobs.request_cancel(job_id).to_json()


@router.get("/v1/jobs/{job_id}/logs")
def job_logs(
    request: Request, job_id: str, _: Ops, offset: Annotated[int, Query(ge=0, le=1 << 40)] = 0
) -> PlainTextResponse:
    """The job's log from byte ``offset``; ``X-Log-Offset`` is where to continue."""
    jobs = state(request).jobs
    jobs.get(job_id)
    path = jobs.log_path(job_id)
    text = b""
    if path.is_file():
        with path.open("rb") as f:
            f.seek(max(0, offset))
            text = f.read(_MAX_LOG_CHUNK)
    return PlainTextResponse(
        text.decode("utf-8", errors="replace"),
        headers={"X-Log-Offset": str(max(0, offset) + len(text))},
    )

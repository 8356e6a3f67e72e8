"""Fine-tune job routes (role ops): submit, list, show, cancel, logs.

Submission (`sitetune.training.submission`) validates everything before a job exists: the
options, the base model, and the dataset (extracted under the job's folder and checked
against the base card; every problem listed in a 422). The worker process does the training.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse

from sitetune.service.deps import Ops, state
from sitetune.service.uploads import saved_upload
from sitetune.training import submission

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
    budget: Annotated[str | None, Form()] = None,
    time_limit_s: Annotated[float | None, Form()] = None,
    patience: Annotated[int | None, Form()] = None,
    augment: Annotated[str | None, Form()] = None,
    foreground_fraction: Annotated[float | None, Form()] = None,
    warmup_fraction: Annotated[float | None, Form()] = None,
    layerwise_lr_decay: Annotated[float | None, Form()] = None,
) -> dict:
    """Queue a fine-tune job of ``base`` on a site dataset (MSD zip); 202 with the job."""
    app = state(request)
    options = {
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
        "budget": budget,
        "time_limit_s": time_limit_s,
        "patience": patience,
        "augment": augment,
        "foreground_fraction": foreground_fraction,
        "warmup_fraction": warmup_fraction,
        "layerwise_lr_decay": layerwise_lr_decay,
    }
    job_request = submission.check_job_request(app.registry, base, options)
    settings = app.settings
    with saved_upload(
        dataset, settings.data_dir / "tmp", settings.max_upload_bytes, "dataset"
    ) as path:
        job = submission.submit_job(
            app.jobs, job_request, path, actor=str(actor), limits=settings.zip_limits
        )
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

"""Submitting a fine-tune job: everything is checked before the job exists.

Two steps, cheap before heavy:

1. `check_job_request`: the options (a `FineTuneConfig`) and the base model, before any
   upload byte is unpacked: ``invalid_job`` / ``missing_base`` (422), or the registry's
   `NotFound` (404) for an unknown base.
2. `submit_job`: the dataset archive extracted under the job's folder and validated against
   the base card (`open_site_dataset`: 422 listing every problem, 400 unsafe archive, 413
   too large), the split checked to leave cases on both sides (422), then the queued row.

A submission that fails leaves nothing behind: no row, no job folder. The worker process
does the training.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sitetune.errors import InvalidInput
from sitetune.imaging.archive import ZipLimits
from sitetune.models.registry import ModelVersion, Registry
from sitetune.training.datasets import open_site_dataset
from sitetune.training.jobs import Job, JobStore

if TYPE_CHECKING:  # finetune imports torch; the HTTP process imports it on submission only
    from sitetune.training.finetune import FineTuneConfig


@dataclass(frozen=True)
class JobRequest:
    """A checked submission, short of its dataset: the resolved base version and the
    complete configuration (defaults filled in)."""

    base: ModelVersion
    config: FineTuneConfig


def check_job_request(registry: Registry, base: str, options: Mapping[str, Any]) -> JobRequest:
    """Check the options and resolve ``base`` (``name``, ``name:alias`` or ``name:version``).

    ``options`` holds `FineTuneConfig` fields; ``None`` values count as not given: the
    base card's `FineTuneDefaults` apply, else the config's own defaults (`job_config`).
    """
    from sitetune.training.augment import AugmentSpec  # torch: on submission
    from sitetune.training.finetune import FineTuneConfig, job_config

    given = {key: value for key, value in options.items() if value is not None}
    _config(lambda: FineTuneConfig.model_validate(given))  # bad options before the base
    if not base:
        raise InvalidInput(
            "field 'base' (the model to fine-tune: name, name:alias or name:version) is required",
            code="missing_base",
        )
    version = registry.resolve(base)
    config = _config(lambda: job_config(version.card, given))
    try:
        AugmentSpec.for_card(version.card, config.augment)  # e.g. CT-only on an MR base
    except ValueError as exc:
        raise InvalidInput(f"invalid job options: augment: {exc}", code="invalid_job") from exc
    return JobRequest(version, config)


def _config(build: Callable[[], FineTuneConfig]) -> FineTuneConfig:
    """``build()``, its validation errors as one ``invalid_job`` listing every problem."""
    try:
        return build()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid job options: {problems}", code="invalid_job") from exc


def submit_job(
    store: JobStore,
    request: JobRequest,
    archive: Path,
    *,
    actor: str,
    limits: ZipLimits | None = None,
) -> Job:
    """Queue ``request`` with the site dataset ``archive`` (an MSD zip) on behalf of
    ``actor``; the queued `Job`. The dataset is extracted to ``<job folder>/dataset``;
    on any error the folder is removed and no row is written."""
    from sitetune.training.finetune import split_cases  # torch: on submission

    job_id = store.new_id()
    folder = store.folder(job_id)
    try:
        site = open_site_dataset(archive, folder / "dataset", request.base.card, limits)
        split_cases(site, request.config)  # the split must leave cases on both sides
        return store.submit(
            job_id,
            request.base.ref,
            request.config.model_dump(mode="json"),
            site.fingerprint,
            actor,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

"""Model registry routes (role ops): list, show, register, promote, rollback, audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from sitetune.errors import Conflict
from sitetune.models.card import ModelCard
from sitetune.models.registry import ModelVersion
from sitetune.service.deps import Ops, state
from sitetune.service.metrics import REGISTRY_EVENTS
from sitetune.service.uploads import saved_upload
from sitetune.training.promotion import decide_promotion


class PromoteRequest(BaseModel):
    version: int
    reason: str = Field(min_length=1)
    force: bool = False


class RollbackRequest(BaseModel):
    reason: str = Field(min_length=1)


def version_json(version: ModelVersion) -> dict:
    return {
        "name": version.name,
        "version": version.version,
        "parent": version.parent,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "card": version.card.model_dump(mode="json"),
    }


router = APIRouter()


@router.get("/v1/models")
def list_models(request: Request, _: Ops) -> dict:
    registry = state(request).registry
    return {
        "models": [
            {
                "name": name,
                "aliases": registry.aliases(name),
                "versions": [v.version for v in registry.versions(name)],
            }
            for name in registry.names()
        ]
    }


@router.get("/v1/models/{name}")
def show_model(request: Request, name: str, _: Ops) -> dict:
    registry = state(request).registry
    return {
        "name": name,
        "aliases": registry.aliases(name),
        "versions": [version_json(v) for v in registry.versions(name)],
    }


@router.post("/v1/models", status_code=201)
def register_model(
    request: Request,
    actor: Ops,
    weights: Annotated[UploadFile | None, File()] = None,
    card: Annotated[str | None, Form()] = None,
) -> dict:
    """Register a new version: weights (state dict, TorchScript, ONNX or MONAI bundle zip)
    and a card (JSON)."""
    app = state(request)
    parsed = ModelCard.parse(card)
    with saved_upload(
        weights, app.settings.data_dir / "tmp", app.settings.max_upload_bytes, "weights"
    ) as path:
        from sitetune.models.importing import register_weights  # torch: on registration

        version = register_weights(
            app.registry, parsed, path, actor=str(actor), reason="registered over HTTP",
            allow_torchscript=app.settings.allow_torchscript,
        )  # fmt: skip
    REGISTRY_EVENTS.labels(version.name, "register").inc()
    return version_json(version)


@router.post("/v1/models/{name}/promote")
def promote(
    request: Request, name: str, body: Annotated[PromoteRequest, Body()], actor: Ops
) -> dict:
    """Make a version production, if the promotion gate lets it (``force`` overrides,
    with the reason recorded in the audit log): `sitetune.training.promotion`."""
    registry = state(request).registry
    decision = decide_promotion(registry, name, body.version)
    if not decision.allowed and not body.force:
        raise Conflict(
            f"{decision.explanation}; send force=true with a reason to promote anyway",
            code="promotion_refused",
        )
    reason = body.reason
    if not decision.allowed:
        reason = f"{body.reason} (forced past the gate: {decision.explanation})"
    moved = registry.promote(name, body.version, actor=str(actor), reason=reason)
    return _production_moved(registry, name, "promote", moved)


@router.post("/v1/models/{name}/rollback")
def rollback(
    request: Request, name: str, body: Annotated[RollbackRequest, Body()], actor: Ops
) -> dict:
    registry = state(request).registry
    moved = registry.rollback(name, actor=str(actor), reason=body.reason)
    return _production_moved(registry, name, "rollback", moved)


def _production_moved(registry, name: str, action: str, moved: tuple[int | None, int]) -> dict:
    REGISTRY_EVENTS.labels(name, action).inc()
    return {
        "name": name,
        "alias": "production",
        "from_version": moved[0],
        "to_version": moved[1],
        "aliases": registry.aliases(name),
    }


@router.get("/v1/audit")
def audit(request: Request, _: Ops, model: str | None = None) -> dict:
    return {"entries": [e.as_dict() for e in state(request).registry.audit(model)]}

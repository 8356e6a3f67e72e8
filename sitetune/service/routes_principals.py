"""Principal routes: ``/v1/tokens`` (role ops) and ``/v1/whoami`` (any role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from sitetune.service.auth import Principal, Role
from sitetune.service.deps import Ops, _role, state

router = APIRouter()
Anyone = Annotated[Principal, _role(*Role)]


class NewPrincipal(BaseModel):
    name: str = Field(description="who holds the token: a person or a system")
    roles: list[str] = Field(description="clinical, pacs and/or ops")


@router.post("/v1/tokens", status_code=201)
def create_token(request: Request, body: Annotated[NewPrincipal, Body()], actor: Ops) -> dict:
    """A new named principal; its bearer token is in this answer and nowhere else."""
    principal, token = state(request).principals.create(body.name, body.roles, str(actor))
    return {**principal.to_json(), "token": token}


@router.get("/v1/tokens")
def list_tokens(request: Request, _: Ops) -> dict:
    """Principals with roles, creation and last use (never the tokens)."""
    return {"tokens": [p.to_json() for p in state(request).principals.list()]}


@router.delete("/v1/tokens/{principal_id}")
def revoke_token(request: Request, principal_id: str, _: Ops) -> dict:
    """Revoke a principal's token: refused from the next request on, in every worker."""
    return state(request).principals.revoke(principal_id).to_json()


@router.get("/v1/whoami")
def whoami(principal: Anyone) -> dict:
    """The calling principal."""
    return principal.to_json()

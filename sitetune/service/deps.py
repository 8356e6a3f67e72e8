"""FastAPI dependencies shared by the routes: the worker's state and role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from sitetune.service.auth import Principal, Role, authorise
from sitetune.service.state import AppState


def state(request: Request) -> AppState:
    """The per-process state the service class put on the app at start-up."""
    return request.app.state.sitetune


def _role(*allowed: Role):
    def dependency(request: Request, authorization: Annotated[str | None, Header()] = None):
        known = request.scope.get("state", {}).get("principal")  # the perimeter checked it
        if known is not None and known.may(allowed):
            return known
        app = state(request)
        return authorise(app.principals, authorization, allowed, app.oidc)

    dependency.roles = allowed  # read by the perimeter (`sitetune.service.perimeter`)
    return Depends(dependency)


# Annotate a route parameter with one of these to require the role (ops always passes);
# the value is the calling `Principal` (its name goes into audit rows).
Clinical = Annotated[Principal, _role(Role.CLINICAL)]
Pacs = Annotated[Principal, _role(Role.PACS)]
Ops = Annotated[Principal, _role(Role.OPS)]

"""FastAPI dependencies shared by the routes: the worker's state and role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from sitetune.service.auth import Role, authorise
from sitetune.service.state import AppState


def state(request: Request) -> AppState:
    """The per-process state the service class put on the app at start-up."""
    return request.app.state.sitetune


def _role(*allowed: Role):
    def dependency(request: Request, authorization: Annotated[str | None, Header()] = None):
        return authorise(state(request).tokens, authorization, allowed)

    return Depends(dependency)


# Annotate a route parameter with one of these to require the role (ops always passes).
Clinical = Annotated[Role, _role(Role.CLINICAL)]
Pacs = Annotated[Role, _role(Role.PACS)]
Ops = Annotated[Role, _role(Role.OPS)]

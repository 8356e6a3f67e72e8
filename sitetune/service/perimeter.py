"""The ASGI layer in front of every route: nothing is read before the caller is known.

FastAPI parses a multipart or JSON body before it resolves the route's dependencies, so
a role check written as a dependency runs after the whole upload was received. This
pure ASGI middleware runs first, on the request line and headers only:

1. the route is matched against the app's routes; an unknown route, or a known one with
   the wrong method, is answered (404 / 405) without reading the body;
2. the bearer token is checked (401) and the route's roles (403), taken from the
   route's role dependency (`sitetune.service.deps`);
3. the body is bounded by the route's limit: a declared ``Content-Length`` above it is
   a 413 at once, and the bytes actually received are counted while the route reads
   them (chunked bodies, lying headers), ending the request with 413 past the limit;
4. the request is counted in ``/metrics`` by its route *template*
   (``/v1/results/{result_id}/mask``), never its raw path; unknown routes are one label;
5. every answer names the worker process (``X-Sitetune-Worker``).

The principal is put in the request's state for the routes (``request.state.principal``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import params
from fastapi.routing import APIRoute
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sitetune.errors import SitetuneError
from sitetune.service.auth import Role, authorise

UNMATCHED = "unmatched"
BODY_METHODS = {"POST", "PUT", "PATCH"}

HTTP_REQUESTS = Counter(
    "sitetune_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "sitetune_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["route", "method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class BodyTooLarge(HTTPException):
    """More body bytes arrived than the route allows (raised inside ``receive``, so the
    route's parser stops; FastAPI re-raises HTTP exceptions as they are)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds this route's limit of {limit} bytes")


@dataclass(frozen=True)
class RouteRule:
    template: str  # the route's path template, the metrics label
    roles: tuple | None  # required roles (ops always passes); None: no authentication
    body_limit: int  # bytes; 0 for routes that take no body
    known: bool = True  # False: the catch-all answering 404 / 405


def route_roles(route: APIRoute) -> tuple | None:
    """The roles a route's dependencies require (the ``roles`` attribute that
    `sitetune.service.deps` puts on its role checks), or None."""
    pending, roles = list(route.dependant.dependencies), None
    while pending:
        dependency = pending.pop()
        allowed = getattr(dependency.call, "roles", None)
        if allowed is not None:
            roles = tuple(allowed)
        pending.extend(dependency.dependencies)
    return roles


def flat_routes(routes):
    """The app's routes in matching order, those of included routers in their place
    (FastAPI keeps an included router as one entry holding ``original_router``; none of
    ours has a prefix, so its routes' paths are the full paths)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flat_routes(included.routes)
        else:
            yield route


def takes_files(route: APIRoute) -> bool:
    """Whether the route has file (multipart upload) parameters."""
    return any(isinstance(p.field_info, params.File) for p in route.dependant.body_params)


class Perimeter:
    """Pure ASGI middleware for the FastAPI app; ``limits(kind)`` gives the byte limit of
    ``"upload"``, ``"stow"`` and ``"json"`` bodies from the deployment's settings, and
    ``setting(name)`` a setting (a route may ask for a token only when a setting says so:
    its endpoint's ``token_setting`` attribute names it)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Callable[[str], int],
        setting: Callable[[str], object],
        catch_all,
    ) -> None:
        self.app, self.limits, self.setting, self.catch_all = app, limits, setting, catch_all
        self._rules: dict[int, RouteRule] = {}
        self._routes: list | None = None

    def _rule(self, route) -> RouteRule:
        rule = self._rules.get(id(route))
        if rule is None:
            if getattr(route, "endpoint", None) is self.catch_all:
                rule = RouteRule(UNMATCHED, None, 0, known=False)
            elif isinstance(route, APIRoute):
                if route.path.startswith("/dicomweb/"):
                    kind = "stow"
                elif takes_files(route):
                    kind = "upload"
                else:
                    kind = "json"
                body = self.limits(kind) if set(route.methods) & BODY_METHODS else 0
                roles = route_roles(route)
                if (setting := getattr(route.endpoint, "token_setting", None)) is not None:
                    roles = tuple(Role) if self.setting(setting) else None
                rule = RouteRule(route.path, roles, body)
            else:  # docs, OpenAPI schema
                rule = RouteRule(getattr(route, "path", UNMATCHED), None, 0)
            self._rules[id(route)] = rule
        return rule

    def _match(self, scope: Scope) -> tuple[RouteRule | None, bool]:
        """(rule of the matching route, whether only the method differs)."""
        if self._routes is None:
            self._routes = list(flat_routes(scope["app"].routes))
        partial = False
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                rule = self._rule(route)
                if rule.known or not partial:
                    return rule, partial
            elif match is Match.PARTIAL and self._rule(route).known:
                partial = True
        return None, partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rule, wrong_method = self._match(scope)
        template = rule.template if rule and rule.known else UNMATCHED
        status = {"code": 500}

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                # which worker process answered (for operators and the multi-worker tests)
                worker = (b"x-sitetune-worker", str(os.getpid()).encode())
                headers = [*message.get("headers", []), worker]
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = self._refusal(scope, rule, wrong_method)
            if refusal is not None:
                await _answer(counted_send, *refusal)
                return
            await self.app(scope, _bounded(receive, rule.body_limit), counted_send)
        except BodyTooLarge as error:
            if status["code"] == 500:  # nothing sent yet
                await _answer(counted_send, 413, "payload_too_large", error.detail)
        finally:
            method = scope["method"] if template != UNMATCHED else "any"
            HTTP_REQUESTS.labels(template, method, str(status["code"])).inc()
            HTTP_SECONDS.labels(template, method).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope, rule: RouteRule | None, wrong_method: bool):
        """(status, code, message, headers) to answer without calling the app, or None."""
        if rule is None or not rule.known:
            if wrong_method:
                return 405, "method_not_allowed", f"{scope['method']} is not allowed here", {}
            return 404, "route_not_found", f"no route {scope['method']} {scope['path']}", {}
        if rule.roles is not None:
            app_state = scope["app"].state.sitetune
            try:
                principal = authorise(app_state.principals, _header(scope, b"authorization"),
                                      rule.roles, app_state.oidc)  # fmt: skip
            except SitetuneError as error:
                headers = {"www-authenticate": "Bearer"} if error.status == 401 else {}
                return error.status, error.code, error.message, headers
            scope.setdefault("state", {})["principal"] = principal
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return 400, "bad_request", "Content-Length must be a number of bytes", {}
            if int(declared) > rule.body_limit and scope["method"] in BODY_METHODS:
                return 413, "payload_too_large", (
                    f"the request body ({declared} bytes) exceeds this route's limit of "
                    f"{rule.body_limit} bytes"
                ), {}  # fmt: skip
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bounded(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return bounded


async def _answer(send: Send, status: int, code: str, message: str, headers=None) -> None:
    """A JSON error body (API.md), sent without touching the request body; the client
    is told to close, so a large unread body is not waited for."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]  # fmt: skip
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})

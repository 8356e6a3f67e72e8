"""The one place that turns domain exceptions into the JSON error body of API.md."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sitetune.errors import ServiceBusy, SitetuneError

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, details=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status)


async def _domain_error(_: Request, exc: SitetuneError) -> JSONResponse:
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, ServiceBusy):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return error_response(400, "bad_request", "; ".join(problems))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex
    logger.exception("unhandled error (request id %s)", request_id, exc_info=exc)
    return error_response(
        500, "internal_error", f"internal error; quote request id {request_id} to the operators"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception raised by routes to ``{"error": {"code", "message"}}``."""
    app.add_exception_handler(SitetuneError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

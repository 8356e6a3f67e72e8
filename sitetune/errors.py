"""The domain exceptions of sitetune, each carrying its HTTP status.

They sit at the bottom of the dependency graph: every package may raise them and
`sitetune.service` maps them, in one place, to the JSON error body
``{"error": {"code", "message"}}``. Messages tell the user what to fix and never
carry patient identifiers.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SitetuneError(Exception):
    """Base class: an error with an HTTP status, a machine code and a user message."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The JSON error body of the HTTP contract."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InputError(SitetuneError):
    """The request itself is malformed (missing field, wrong option value)."""

    status = 400
    default_code = "bad_request"


class UnsupportedInput(InputError):
    """The upload is of a kind sitetune does not read (not NIfTI, not DICOM, not a zip)."""

    status = 415
    default_code = "unsupported_input"


class InvalidInput(InputError):
    """The upload was read but cannot be used: corrupt, inconsistent or ambiguous data."""

    status = 422
    default_code = "invalid_input"


class UnsafeArchive(InputError):
    """A zip that could write outside its root, or is not a well-formed archive."""

    status = 400
    default_code = "unsafe_archive"


class PayloadTooLarge(InputError):
    """An upload or archive larger than the configured limits (zip bombs included)."""

    status = 413
    default_code = "payload_too_large"


class Unauthorized(SitetuneError):
    status = 401
    default_code = "unauthorized"


class Forbidden(SitetuneError):
    status = 403
    default_code = "forbidden"


class NotFound(SitetuneError):
    status = 404
    default_code = "not_found"


class Conflict(SitetuneError):
    status = 409
    default_code = "conflict"


class ServiceBusy(SitetuneError):
    """Accepted work that cannot start now (the worker's memory budget is taken): try
    again after ``retry_after`` seconds (sent as ``Retry-After``)."""

    status = 503
    default_code = "busy"

    def __init__(self, message: str, *, retry_after: int = 30, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

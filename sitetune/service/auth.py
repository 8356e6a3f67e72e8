"""Bearer-token authentication: the caller's named principal, and its role check.

Tokens belong to named principals (`sitetune.service.principals`); `authorise` is called
by the perimeter middleware before any body byte is read, and by the role dependencies
when a route is called without it.
"""

from __future__ import annotations

from sitetune.errors import Forbidden, Unauthorized
from sitetune.service.principals import Principal, PrincipalStore, Role

__all__ = ["Principal", "Role", "authorise"]


def authorise(store: PrincipalStore, authorization: str | None, allowed) -> Principal:
    """The caller, or `Unauthorized` (no, unknown or revoked token) / `Forbidden` (none of
    ``allowed``; ``ops`` may do everything)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'", code="missing_token")
    principal = store.authenticate(token.strip())
    if principal is None:
        raise Unauthorized("the bearer token is not known (or was revoked)", code="invalid_token")
    if not principal.may(allowed):
        raise Forbidden(
            f"{principal.name} ({', '.join(sorted(principal.roles))}) may not use this route; "
            f"it needs {' or '.join(sorted({*map(str, allowed), 'ops'}))}",
            code="wrong_role",
        )
    return principal

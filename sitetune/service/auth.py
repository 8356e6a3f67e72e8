"""Bearer-token authentication: the caller's named principal, and its role check.

Tokens belong to named principals (`sitetune.service.principals`), or are OIDC JWTs
(`sitetune.service.oidc`) where an issuer is configured; `authorise` is called
by the perimeter middleware before any body byte is read, and by the role dependencies
when a route is called without it.
"""

from __future__ import annotations

from sitetune.errors import Forbidden, Unauthorized
from sitetune.service.oidc import OidcVerifier, looks_like_jwt
from sitetune.service.principals import Principal, PrincipalStore, Role

__all__ = ["Principal", "Role", "authorise"]


def authorise(
    store: PrincipalStore, authorization: str | None, allowed, oidc: OidcVerifier | None = None
) -> Principal:
    """The caller, or `Unauthorized` (no, unknown, revoked, expired or foreign token) /
    `Forbidden` (none of ``allowed``; ``ops`` may do everything). A JWT is validated by
    ``oidc`` when one is configured."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'", code="missing_token")
    token = token.strip()
    if oidc is not None and looks_like_jwt(token):
        principal = oidc.principal(token)  # raises Unauthorized saying why
    else:
        principal = store.authenticate(token)
    if principal is None:
        raise Unauthorized("the bearer token is not known (or was revoked)", code="invalid_token")
    if not principal.may(allowed):
        raise Forbidden(
            f"{principal.name} ({', '.join(sorted(principal.roles))}) may not use this route; "
            f"it needs {' or '.join(sorted({*map(str, allowed), 'ops'}))}",
            code="wrong_role",
        )
    return principal

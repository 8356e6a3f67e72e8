"""Optional OIDC: bearer JWTs from a configured issuer, validated against its JWKS (PyJWT).

A token with three dot-separated parts is taken for a JWT when OIDC is configured
(``SITETUNE_OIDC_ISSUER`` and ``SITETUNE_OIDC_JWKS_URL``; ``file://`` URLs work for an
air-gapped site that copies its key set). It must be signed by a key of the set (RS256,
ES256 or EdDSA: never ``none`` or a shared secret), unexpired, from the issuer and, when
``SITETUNE_OIDC_AUDIENCE`` is set, for that audience. The principal's name is the
``SITETUNE_OIDC_NAME_CLAIM`` (``preferred_username``, else ``sub``) and its roles the
sitetune role names found in ``SITETUNE_OIDC_ROLES_CLAIM`` (``roles``; a list, or a
space-separated string).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jwt

from sitetune.errors import Unauthorized
from sitetune.service.principals import Principal, Role

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("st_")


@dataclass
class OidcVerifier:
    issuer: str
    jwks_url: str
    audience: str | None = None
    roles_claim: str = "roles"
    name_claim: str = "preferred_username"

    def __post_init__(self) -> None:
        if self.jwks_url.startswith("file://"):  # PyJWKClient fetches http(s) only
            self._file = Path(urlparse(self.jwks_url).path)
            self._keys = None
        else:
            self._file = None
            self._keys = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300)

    def _signing_key(self, token: str):
        if self._keys is not None:
            return self._keys.get_signing_key_from_jwt(token)
        kid = jwt.get_unverified_header(token).get("kid")
        keys = jwt.PyJWKSet.from_json(self._file.read_text()).keys  # read each time: rotation
        for key in keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no key {kid!r} in the issuer's key set")

    @classmethod
    def from_settings(cls, settings) -> OidcVerifier | None:
        if not settings.oidc_issuer or not settings.oidc_jwks_url:
            return None
        return cls(
            settings.oidc_issuer,
            settings.oidc_jwks_url,
            settings.oidc_audience,
            settings.oidc_roles_claim,
            settings.oidc_name_claim,
        )

    def principal(self, token: str) -> Principal:
        """The principal a valid JWT names; `Unauthorized` saying what is wrong otherwise."""
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the bearer JWT has expired", code="token_expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"the bearer JWT is not from the configured issuer {self.issuer}",
                code="invalid_token",
            ) from None
        except (jwt.PyJWTError, jwt.PyJWKClientError) as error:
            raise Unauthorized(
                f"the bearer JWT is not valid ({error})", code="invalid_token"
            ) from None
        raw = claims.get(self.roles_claim) or []
        names = raw.split() if isinstance(raw, str) else [str(r) for r in raw]
        roles = frozenset(Role(r) for r in names if r in {x.value for x in Role})
        name = str(claims.get(self.name_claim) or claims["sub"])
        return Principal(f"oidc:{claims['sub']}", name, roles, created_by=self.issuer)

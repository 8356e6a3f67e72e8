"""Bearer tokens with roles: ``clinical`` (inference, results), ``pacs`` (DICOMweb),
``ops`` (everything).

Tokens come from ``SITETUNE_TOKENS`` (``role=token,role=token``) or from the tokens file
(``<data_dir>/tokens.json``, SHA-256 hashes only). On first start with neither, the serve
command generates one token per role, stores their hashes and prints the tokens once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sitetune.errors import Forbidden, Unauthorized


class Role(StrEnum):
    CLINICAL = "clinical"
    PACS = "pacs"
    OPS = "ops"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenStore:
    """SHA-256 of each token -> its role."""

    roles: dict[str, Role]

    @classmethod
    def from_spec(cls, spec: str) -> TokenStore:
        """Parse ``"ops=abc,clinical=def"``."""
        roles = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            role, sep, token = item.partition("=")
            if not sep or not token:
                raise ValueError(f"token entry {item!r} must be role=token")
            roles[_digest(token)] = Role(role)
        return cls(roles)

    @classmethod
    def from_file(cls, path: Path) -> TokenStore:
        data = json.loads(path.read_text())
        return cls({entry["sha256"]: Role(entry["role"]) for entry in data["tokens"]})

    @staticmethod
    def generate(path: Path) -> dict[Role, str]:
        """Create one token per role, store their hashes in ``path``, return the tokens."""
        tokens = {role: secrets.token_urlsafe(24) for role in Role}
        entries = [{"role": str(role), "sha256": _digest(token)} for role, token in tokens.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"tokens": entries}, indent=2))
        path.chmod(0o600)
        return tokens

    def role_of(self, token: str) -> Role | None:
        digest = _digest(token)
        for known, role in self.roles.items():
            if hmac.compare_digest(known, digest):
                return role
        return None


def authorise(store: TokenStore, authorization: str | None, allowed: tuple[Role, ...]) -> Role:
    """The caller's role, or `Unauthorized` (no/unknown token) / `Forbidden` (wrong role)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'", code="missing_token")
    role = store.role_of(token.strip())
    if role is None:
        raise Unauthorized("the bearer token is not known", code="invalid_token")
    if role is not Role.OPS and role not in allowed:
        raise Forbidden(
            f"role {role!s} may not use this route; it needs "
            f"{' or '.join(sorted({*map(str, allowed), 'ops'}))}",
            code="wrong_role",
        )
    return role

"""Named principals: people or systems with roles, each holding one bearer token.

Rows in the database (``principals``): name, roles, the SHA-256 of the token (the token
itself is never stored, logged or shown again after it is created), who created it,
when it was last used and whether it was revoked. Lookups go to the database on every
request, so a revocation takes effect at the next request in every worker, without a
restart. The audit log, jobs and promotions record the principal's name.

Roles: ``clinical`` (inference and results), ``pacs`` (DICOMweb), ``ops`` (everything).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import String, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, iso_utc, utcnow
from sitetune.errors import InputError, NotFound

TOKEN_PREFIX = "st_"
LAST_USED_RESOLUTION = datetime.timedelta(seconds=60)  # last_used_at is written at most this often
NAME_MAX = 80


class Role(StrEnum):
    CLINICAL = "clinical"
    PACS = "pacs"
    OPS = "ops"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PrincipalRow(Base):
    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    roles: Mapped[str] = mapped_column(String(64))  # comma-separated Role values
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(NAME_MAX))
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name and roles (``ops`` may do everything)."""

    id: str
    name: str
    roles: frozenset[Role]
    created_at: datetime.datetime | None = None
    created_by: str | None = None
    last_used_at: datetime.datetime | None = None
    revoked_at: datetime.datetime | None = None

    def __str__(self) -> str:
        return self.name

    def may(self, allowed) -> bool:
        return Role.OPS in self.roles or bool(self.roles & set(allowed))

    @classmethod
    def from_row(cls, row: PrincipalRow) -> Principal:
        return cls(
            row.id, row.name, frozenset(Role(r) for r in row.roles.split(",") if r),
            _utc(row.created_at), row.created_by, _utc(row.last_used_at), _utc(row.revoked_at),
        )  # fmt: skip

    def to_json(self) -> dict:
        """For ``GET /v1/tokens``: never the token."""
        return {
            "id": self.id,
            "name": self.name,
            "roles": sorted(self.roles),
            "created_at": iso_utc(self.created_at),
            "created_by": self.created_by,
            "last_used_at": iso_utc(self.last_used_at),
            "revoked_at": iso_utc(self.revoked_at),
        }


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """Stored times as UTC-aware values (SQLite returns them naive)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=datetime.UTC)


def parse_roles(roles) -> frozenset[Role]:
    """Role names (a list, or one comma-separated string) -> roles; `InputError` naming
    the allowed values otherwise."""
    items = roles.split(",") if isinstance(roles, str) else list(roles or [])
    items = [str(r).strip() for r in items if str(r).strip()]
    unknown = sorted(set(items) - {r.value for r in Role})
    if not items or unknown:
        raise InputError(
            f"roles must be one or more of {[r.value for r in Role]}; got {items}",
            code="bad_roles",
        )
    return frozenset(Role(r) for r in items)


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or any(not c.isprintable() for c in name):
        raise InputError(
            f"a principal's name is 1-{NAME_MAX} printable characters; got {name!r}",
            code="bad_name",
        )
    return name


class PrincipalStore:
    """Create, authenticate, list and revoke named principals."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, roles, created_by: str) -> tuple[Principal, str]:
        """A new principal and its bearer token (returned once, stored as a hash only)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        return self._insert(check_name(name), parse_roles(roles), digest(token), created_by), token

    def _insert(self, name: str, roles, token_sha256: str, created_by: str) -> Principal:
        row = PrincipalRow(
            id=uuid.uuid4().hex,
            name=name,
            roles=",".join(sorted(roles)),
            token_sha256=token_sha256,
            created_at=utcnow(),
            created_by=created_by,
        )
        with Session(self.engine) as s, s.begin():
            s.add(row)
            s.flush()
            return Principal.from_row(row)

    def ensure(self, name: str, roles, token_sha256: str, created_by: str) -> None:
        """Register a token known by its hash (configured tokens, the legacy tokens file)
        unless it is registered already; a revoked one stays revoked."""
        with Session(self.engine) as s:
            same = PrincipalRow.token_sha256 == token_sha256
            known = s.scalar(select(PrincipalRow.id).where(same))
        if known is None:
            self._insert(check_name(name), parse_roles(roles), token_sha256, created_by)

    def import_spec(self, spec: str) -> None:
        """``SITETUNE_TOKENS`` (``role=token,...``): each token a principal named by its
        role, as before principals had names."""
        for item in filter(None, (p.strip() for p in spec.split(","))):
            role, sep, token = item.partition("=")
            if not sep or not token:
                raise ValueError(f"token entry {item!r} must be role=token")
            self.ensure(role, role, digest(token), "configuration")

    def import_file(self, path: Path) -> None:
        """The tokens file of earlier releases (role and SHA-256 per token)."""
        for entry in json.loads(path.read_text())["tokens"]:
            self.ensure(entry["role"], entry["role"], entry["sha256"], "tokens file")

    def authenticate(self, token: str) -> Principal | None:
        """The live principal holding ``token``, or None (unknown or revoked)."""
        now = utcnow()
        with Session(self.engine) as s:
            row = s.scalar(select(PrincipalRow).where(PrincipalRow.token_sha256 == digest(token)))
            if row is None or row.revoked_at is not None:
                return None
            principal = Principal.from_row(row)
            last = row.last_used_at
            if last is None or _utc(last) < now - LAST_USED_RESOLUTION:
                s.execute(
                    update(PrincipalRow).where(PrincipalRow.id == row.id).values(last_used_at=now)
                )
                s.commit()
            return principal

    def list(self) -> list[Principal]:
        with Session(self.engine) as s:
            rows = s.scalars(select(PrincipalRow).order_by(PrincipalRow.created_at))
            return [Principal.from_row(r) for r in rows]

    def revoke(self, principal_id: str) -> Principal:
        """Revoke a principal's token (its row stays, for the audit trail)."""
        with Session(self.engine) as s, s.begin():
            row = s.get(PrincipalRow, principal_id)
            if row is None:
                raise NotFound(f"no principal {principal_id!r}", code="principal_not_found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return Principal.from_row(row)

    def count(self) -> int:
        with Session(self.engine) as s:
            return len(s.scalars(select(PrincipalRow.id)).all())

"""The model registry: immutable versions, movable aliases, lineage and an audit log.

Metadata lives in the database; each version's files (``card.json``, ``weights.pt``,
``model.onnx``) live under ``<artifact_dir>/models/<name>/<version>/``, written to a
temporary folder and renamed into place only once the database row commits, so a failed
registration leaves nothing behind. Versions are numbered 1, 2, ... per model and never
change. Aliases (``production``, ``candidate``, ...) move atomically, each move recorded
with who, when, from, to and why. Serving resolves ``name[:alias|:version]`` per request,
which is what makes a promotion take effect in every worker without a restart.
"""

from __future__ import annotations

import datetime
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from sitetune.db import Base, UtcDateTime, utcnow
from sitetune.errors import Conflict, InputError, NotFound
from sitetune.models.card import ModelCard

PRODUCTION = "production"
CANDIDATE = "candidate"


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent: Mapped[str | None] = mapped_column(String(80), nullable=True)
    card: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(80))


class AliasRow(Base):
    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str | None] = mapped_column(String(32), nullable=True)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


@dataclass(frozen=True)
class ModelVersion:
    """One immutable version with its card and the folder holding its files."""

    name: str
    version: int
    card: ModelCard
    parent: str | None
    created_at: datetime.datetime
    created_by: str
    folder: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def weights_path(self) -> Path:
        return self.folder / "weights.pt"

    @property
    def onnx_path(self) -> Path:
        return self.folder / "model.onnx"


@dataclass(frozen=True)
class AuditEntry:
    at: datetime.datetime
    actor: str
    action: str
    name: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    reason: str

    def as_dict(self) -> dict:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "name": self.name,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "reason": self.reason,
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"name"``, ``"name:alias"`` or ``"name:3"`` -> (name, selector or None)."""
    name, _, selector = ref.partition(":")
    if not name:
        raise InputError(
            f"model reference {ref!r} has no name; use name, name:alias or name:version",
            code="bad_model_reference",
        )
    return name, selector or None


class Registry:
    """Versions, aliases and audit in the database; files under ``artifact_dir/models``."""

    def __init__(self, engine: Engine, artifact_dir: Path) -> None:
        self.engine = engine
        self.root = Path(artifact_dir) / "models"

    # -- reading ---------------------------------------------------------------------
    def _version(self, row: VersionRow) -> ModelVersion:
        card = ModelCard.model_validate_json(row.card)
        return ModelVersion(
            row.name,
            row.version,
            card,
            row.parent,
            row.created_at.replace(tzinfo=datetime.UTC),
            row.created_by,
            self.root / row.name / str(row.version),
        )

    def names(self) -> list[str]:
        with Session(self.engine) as s:
            return list(s.scalars(select(VersionRow.name).distinct().order_by(VersionRow.name)))

    def versions(self, name: str) -> list[ModelVersion]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(VersionRow).where(VersionRow.name == name).order_by(VersionRow.version)
            ).all()
            if not rows:
                raise NotFound(
                    f"no model named {name!r}; known: {self.names()}", code="model_not_found"
                )
            return [self._version(r) for r in rows]

    def aliases(self, name: str) -> dict[str, int]:
        with Session(self.engine) as s:
            rows = s.execute(
                select(AliasRow.alias, VersionRow.version)
                .join(VersionRow, AliasRow.version_id == VersionRow.id)
                .where(AliasRow.name == name)
            ).all()
            return {alias: version for alias, version in rows}

    def get(self, name: str, version: int) -> ModelVersion:
        with Session(self.engine) as s:
            row = s.scalar(
                select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)
            )
            if row is None:
                raise NotFound(f"model {name!r} has no version {version}", code="version_not_found")
            return self._version(row)

    def resolve(self, ref: str, default_alias: str = PRODUCTION) -> ModelVersion:
        """The version a reference names: ``name`` (the default alias), ``name:alias``,
        ``name:version``."""
        name, selector = parse_ref(ref)
        selector = selector or default_alias
        if selector.isdigit():
            return self.get(name, int(selector))
        version = self.aliases(name).get(selector)
        if version is None:
            self.versions(name)  # raises model_not_found for an unknown name
            raise NotFound(f"model {name!r} has no alias {selector!r}", code="alias_not_found")
        return self.get(name, version)

    def audit(self, name: str | None = None, limit: int = 500) -> list[AuditEntry]:
        with Session(self.engine) as s:
            query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if name is not None:
                query = query.where(AuditRow.name == name)
            return [
                AuditEntry(
                    r.at.replace(tzinfo=datetime.UTC),
                    r.actor,
                    r.action,
                    r.name,
                    r.alias,
                    r.from_version,
                    r.to_version,
                    r.reason,
                )
                for r in s.scalars(query)
            ]

    # -- writing ---------------------------------------------------------------------
    def register(
        self,
        card: ModelCard,
        files: dict[str, Path],
        *,
        actor: str,
        reason: str = "",
        aliases: tuple[str, ...] = (),
    ) -> ModelVersion:
        """Add a new immutable version of ``card.name`` with ``files`` (name -> source path).

        ``files`` usually holds ``weights.pt`` and ``model.onnx``. The new version number is
        the next free one; ``aliases`` are pointed at it in the same transaction.
        """
        staging = self.root / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            for filename, source in files.items():
                shutil.copyfile(source, staging / filename)
            for attempt in range(5):
                try:
                    return self._insert(card, staging, actor, reason, aliases)
                except IntegrityError:  # another process took the number: try the next
                    if attempt == 4:
                        raise
            raise AssertionError("unreachable")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _insert(
        self, card: ModelCard, staging: Path, actor: str, reason: str, aliases: tuple[str, ...]
    ) -> ModelVersion:
        folder: Path | None = None
        try:
            with Session(self.engine) as s, s.begin():
                latest = (
                    s.scalar(
                        select(VersionRow.version)
                        .where(VersionRow.name == card.name)
                        .order_by(VersionRow.version.desc())
                        .limit(1)
                    )
                    or 0
                )
                number = latest + 1
                final = card.model_copy(update={"version": str(number)})
                row = VersionRow(
                    name=card.name,
                    version=number,
                    parent=card.provenance.parent,
                    card=final.model_dump_json(),
                    created_at=utcnow(),
                    created_by=actor,
                )
                s.add(row)
                s.flush()
                s.add(
                    AuditRow(
                        at=utcnow(),
                        actor=actor,
                        action="register",
                        name=card.name,
                        to_version=number,
                        reason=reason,
                    )
                )
                for alias in aliases:
                    self._move_alias(s, card.name, alias, row, actor, "alias", reason)
                (staging / "card.json").write_text(final.model_dump_json(indent=2))
                target = self.root / card.name / str(number)
                shutil.rmtree(target, ignore_errors=True)  # an orphan of an earlier crash
                target.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(target)
                folder = target
            # committed: the files are in place and the row points at them
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.get(card.name, number)

    def _move_alias(
        self,
        s: Session,
        name: str,
        alias: str,
        row: VersionRow,
        actor: str,
        action: str,
        reason: str,
    ) -> int | None:
        current = s.scalar(select(AliasRow).where(AliasRow.name == name, AliasRow.alias == alias))
        previous = None
        if current is None:
            s.add(AliasRow(name=name, alias=alias, version_id=row.id))
        else:
            previous = s.get(VersionRow, current.version_id).version
            current.version_id = row.id
        s.add(
            AuditRow(
                at=utcnow(),
                actor=actor,
                action=action,
                name=name,
                alias=alias,
                from_version=previous,
                to_version=row.version,
                reason=reason,
            )
        )
        return previous

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, action: str = "alias"
    ) -> tuple[int | None, int]:
        """Point ``alias`` at ``version`` atomically; returns (previous version, version)."""
        if not alias or alias.isdigit():
            raise InputError(f"alias must be a word, got {alias!r}", code="bad_alias")
        with Session(self.engine) as s, s.begin():
            row = s.scalar(
                select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)
            )
            if row is None:
                raise NotFound(f"model {name!r} has no version {version}", code="version_not_found")
            previous = self._move_alias(s, name, alias, row, actor, action, reason)
        return previous, version

    def promote(
        self, name: str, version: int, *, actor: str, reason: str
    ) -> tuple[int | None, int]:
        """Make ``version`` the production version (the gate is the caller's business)."""
        return self.set_alias(
            name, PRODUCTION, version, actor=actor, reason=reason, action="promote"
        )

    def rollback(self, name: str, *, actor: str, reason: str) -> tuple[int | None, int]:
        """Move ``production`` back to the version it served before its latest promotion.

        Promotions stack up and rollbacks pop them, so two rollbacks in a row go two
        promotions back rather than toggling between two versions.
        """
        with Session(self.engine) as s, s.begin():
            history: list[int] = []
            for entry in s.scalars(
                select(AuditRow)
                .where(AuditRow.name == name, AuditRow.alias == PRODUCTION)
                .order_by(AuditRow.id)
            ):
                if entry.action == "rollback":
                    history.pop()
                else:
                    history.append(entry.to_version)
            if len(history) < 2:
                raise Conflict(
                    f"model {name!r} has no earlier production version to roll back to",
                    code="nothing_to_roll_back",
                )
            target = s.scalar(
                select(VersionRow).where(VersionRow.name == name, VersionRow.version == history[-2])
            )
            previous = self._move_alias(s, name, PRODUCTION, target, actor, "rollback", reason)
        return previous, history[-2]

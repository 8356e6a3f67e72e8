"""Per-process service state, built from the settings when a worker starts."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from sitetune.analysis.admission import MemoryGate
from sitetune.analysis.pipeline import Pipeline
from sitetune.analysis.results import AnalysisResults
from sitetune.db import make_engine, upgrade
from sitetune.models.registry import Registry
from sitetune.models.serving import ModelServer
from sitetune.pacs.routing import load_config
from sitetune.pacs.store import PacsStore
from sitetune.service.oidc import OidcVerifier
from sitetune.service.principals import PrincipalStore, Role
from sitetune.settings import Settings
from sitetune.stores import Stores
from sitetune.training.jobs import JobStore

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    results: AnalysisResults
    models: ModelServer
    pipeline: Pipeline
    principals: PrincipalStore
    oidc: OidcVerifier | None
    jobs: JobStore
    pacs: PacsStore
    engine: Engine

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        stores = Stores.from_settings(settings)
        models = ModelServer.from_settings(stores.registry, settings)
        return cls(
            settings=settings,
            registry=stores.registry,
            results=AnalysisResults(
                stores.results, stores.registry, settings.zip_limits, settings.image_limits
            ),
            models=models,
            pipeline=Pipeline(
                models, MemoryGate(settings.worker_memory_bytes, settings.admission_wait_seconds)
            ),
            principals=PrincipalStore(stores.engine),
            oidc=OidcVerifier.from_settings(settings),
            jobs=stores.jobs,
            pacs=stores.pacs,
            engine=stores.engine,
        )


def first_tokens(principals: PrincipalStore, path: Path) -> Path:
    """One principal per role, named after it; their tokens into ``path`` (mode 0600)."""
    lines = []
    for role in Role:
        principal, token = principals.create(role.value, [role], created_by="first start")
        lines.append(f"{principal.name} ({role.value}): {token}")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def bootstrap(settings: Settings) -> None:
    """First-start work, done once by the serve command before any worker starts:
    folders, principals (configured tokens imported; on a first start with none, one
    principal per role, their tokens written to a file only this user can read, never to
    the log), built-in models."""
    settings.prepare()
    engine = make_engine(settings.resolved_database_url)
    before, after = upgrade(engine)  # under a lock
    if before != after:
        print(f"sitetune: database schema {before or 'empty'} -> {after}", file=sys.stderr)
    principals = PrincipalStore(engine)
    if settings.tokens:
        principals.import_spec(settings.tokens)
    if settings.resolved_tokens_file.is_file():  # the hashes file of earlier releases
        principals.import_file(settings.resolved_tokens_file)
    if principals.count() == 0:
        path = first_tokens(principals, settings.resolved_initial_tokens_file)
        print(
            f"sitetune: first start: a bearer token for each of the principals "
            f"{', '.join(r.value for r in Role)} is in {path} (readable by this user only; "
            "shown nowhere else). Create named principals with `sitetune tokens create`, "
            "then delete that file.",
            file=sys.stderr,
        )
    config = load_config(settings.resolved_pacs_config)  # a bad file stops the start here
    print(
        f"sitetune: PACS routes {[r.name for r in config.routes]}, destinations "
        f"{ {n: d.describe() for n, d in config.destinations.items()} }",
        file=sys.stderr,
    )
    state = AppState.build(settings)
    from sitetune.models.builtin import register_builtins  # torch: the serve command only

    for version in register_builtins(state.registry):
        print(f"sitetune: registered built-in model {version.ref} as production", file=sys.stderr)
    state.results.store.purge_expired()

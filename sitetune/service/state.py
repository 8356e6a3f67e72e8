"""Per-process service state, built from the settings when a worker starts."""

from __future__ import annotations

import datetime
import logging
import sys
from dataclasses import dataclass

from sitetune.analysis.pipeline import Pipeline
from sitetune.analysis.results import AnalysisResults, ResultStore
from sitetune.db import make_engine
from sitetune.models.builtin import register_builtins
from sitetune.models.registry import Registry
from sitetune.models.serving import ModelServer
from sitetune.pacs.routing import load_config
from sitetune.pacs.store import PacsStore
from sitetune.service.auth import TokenStore
from sitetune.settings import Settings
from sitetune.training.jobs import JobStore

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    results: AnalysisResults
    models: ModelServer
    pipeline: Pipeline
    tokens: TokenStore
    jobs: JobStore
    pacs: PacsStore

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = make_engine(settings.resolved_database_url)
        artifacts = settings.resolved_artifact_dir
        registry = Registry(engine, artifacts)
        store = ResultStore(
            engine, artifacts, datetime.timedelta(hours=settings.results_retention_hours)
        )
        models = ModelServer.from_settings(registry, settings)
        return cls(
            settings=settings,
            registry=registry,
            results=AnalysisResults(store, registry, settings.zip_limits),
            models=models,
            pipeline=Pipeline(models),
            tokens=load_tokens(settings),
            jobs=JobStore(engine, artifacts),
            pacs=PacsStore(engine, artifacts),
        )


def load_tokens(settings: Settings) -> TokenStore:
    """Tokens from the setting, else from the tokens file (empty when neither exists)."""
    if settings.tokens:
        return TokenStore.from_spec(settings.tokens)
    if settings.resolved_tokens_file.is_file():
        return TokenStore.from_file(settings.resolved_tokens_file)
    return TokenStore({})


def bootstrap(settings: Settings) -> None:
    """First-start work, done once by the serve command before any worker starts:
    folders, tokens (generated and printed when none are configured), built-in models."""
    settings.prepare()
    if not settings.tokens and not settings.resolved_tokens_file.is_file():
        tokens = TokenStore.generate(settings.resolved_tokens_file)
        print(
            "sitetune: generated bearer tokens (shown once; hashes kept in "
            f"{settings.resolved_tokens_file}):",
            file=sys.stderr,
        )
        for role, token in tokens.items():
            print(f"  {role}: {token}", file=sys.stderr)
    config = load_config(settings.resolved_pacs_config)  # a bad file stops the start here
    print(
        f"sitetune: PACS routes {[r.name for r in config.routes]}, destinations "
        f"{ {n: d.describe() for n, d in config.destinations.items()} }",
        file=sys.stderr,
    )
    state = AppState.build(settings)
    for version in register_builtins(state.registry):
        print(f"sitetune: registered built-in model {version.ref} as production", file=sys.stderr)
    state.results.store.purge_expired()

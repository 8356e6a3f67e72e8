"""The BentoML service: FastAPI routes mounted with ``@bentoml.asgi_app``.

BentoML itself answers ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics``. The
inference, job and model routes of API.md are added by the issues that build them.
"""

from __future__ import annotations

import logging

import bentoml
from fastapi import FastAPI

from sitetune import __version__
from sitetune.service.errors import install_error_handlers
from sitetune.settings import Settings

logger = logging.getLogger(__name__)

api = FastAPI(title="sitetune", version=__version__, docs_url="/docs", redoc_url=None)
install_error_handlers(api)


@bentoml.service(name="sitetune", traffic={"timeout": 3600})
@bentoml.asgi_app(api, path="/")
class Sitetune:
    """One HTTP worker. State lives in the database and the artifact directory only."""

    def __init__(self) -> None:
        self.settings = Settings()
        logger.info(
            "sitetune %s worker ready (data dir %s)", __version__, self.settings.data_dir.resolve()
        )


@api.get("/v1/info")
def info() -> dict:
    """Service name and version (no authentication: nothing sensitive)."""
    return {"service": "sitetune", "version": __version__}

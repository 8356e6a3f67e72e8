"""The one settings object (pydantic-settings), built at each entry point and passed down.

Every field can be set from the environment with the ``SITETUNE_`` prefix (e.g.
``SITETUNE_DATA_DIR=/srv/sitetune``) or from a ``.env`` file in the working directory.
Nothing here is read at import time: call `Settings()` in the serve command, the worker
or the CLI.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sitetune.imaging.archive import ZipLimits
from sitetune.imaging.volume import ImageLimits


class Settings(BaseSettings):
    """Configuration of a sitetune deployment (embedded defaults: one machine, SQLite)."""

    model_config = SettingsConfigDict(env_prefix="SITETUNE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="root of local state (database, artifacts)")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file <data_dir>/sitetune.db"
    )
    artifact_dir: Path | None = Field(
        None, description="model weights, engines and results; default: <data_dir>/artifacts"
    )
    host: str = "127.0.0.1"
    port: int = 3000
    tls_certfile: Path | None = Field(None, description="serve HTTPS with this certificate (PEM)")
    tls_keyfile: Path | None = Field(None, description="the certificate's private key (PEM)")
    tls_client_ca: Path | None = Field(
        None, description="require client certificates signed by this CA (PEM; mutual TLS)"
    )
    oidc_issuer: str | None = Field(None, description="accept bearer JWTs from this issuer")
    oidc_jwks_url: str | None = Field(None, description="its JWKS (https:// or file://)")
    oidc_audience: str | None = Field(None, description="required audience of the JWTs")
    oidc_roles_claim: str = Field("roles", description="claim listing sitetune roles")
    oidc_name_claim: str = Field("preferred_username", description="claim naming the person")
    oidc_console_client_id: str | None = Field(
        None, description="public OIDC client the console signs people in with (authorization "
        "code + PKCE; with the two URLs below); unset: the console asks for a token"
    )  # fmt: skip
    oidc_authorization_url: str | None = Field(
        None, description="the identity provider's authorization endpoint (its discovery "
        "document's authorization_endpoint)"
    )  # fmt: skip
    oidc_token_url: str | None = Field(
        None, description="its token endpoint (the console exchanges the code there)"
    )
    oidc_scope: str = Field("openid profile", description="scopes the console asks for")
    max_upload_bytes: int = Field(4 << 30, description="largest accepted upload (bytes)")
    tokens: str | None = Field(
        None,
        description="bearer tokens as 'role=token,role=token', registered as principals "
        "named by their role (automation; people get named principals: `sitetune tokens`)",
    )
    tokens_file: Path | None = Field(
        None, description="earlier releases' token hashes, imported; default <data_dir>/tokens.json"
    )
    max_json_bytes: int = Field(1 << 20, description="largest body of a route without files")
    allow_torchscript: bool = Field(
        False,
        description="accept TorchScript in POST /v1/models and run it: TorchScript is code "
        "that can read and write files; enable only for weights you trust",
    )
    metrics_require_token: bool = Field(
        False, description="GET /metrics needs a bearer token (any role) when true"
    )
    results_retention_hours: float = Field(72.0, description="how long results are kept")
    housekeeping_seconds: float = Field(
        600.0, gt=0, description="how often retention and leftover clean-up run (PACS worker)"
    )
    leftover_hours: float = Field(
        24.0, gt=0, description="temporary uploads and staging folders older than this are removed"
    )
    job_files_retention_hours: float = Field(
        72.0, gt=0, description="finished jobs' datasets and checkpoints are removed after this"
    )
    engine: str = Field("auto", description="auto | onnxruntime | torch")
    cpu_engine: str = Field(
        "onnxruntime", description="engine that 'auto' uses without a GPU (bench/segment.py)"
    )
    ort_providers: str | None = Field(
        None, description="comma-separated ONNX Runtime providers, best first (override)"
    )
    threads: int | None = Field(None, description="inference threads per worker")
    sw_overlap: float = Field(0.25, ge=0.0, lt=1.0, description="sliding-window overlap")
    sw_batch_size: int = Field(1, ge=1, description="sliding-window batch size")
    workers: int = Field(1, ge=1, description="HTTP worker processes")
    embedded_worker: bool = Field(
        True, description="the serve command also runs a fine-tune worker (restarted if it dies)"
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        # SITETUNE_JOB_STALE_SECONDS: its name before issue 19, still read
        validation_alias=AliasChoices(
            "lease_seconds", "SITETUNE_LEASE_SECONDS", "SITETUNE_JOB_STALE_SECONDS"
        ),
        description="a running job, PACS analysis or delivery whose worker has not renewed "
        "its heartbeat this long is taken over by another worker (any host)",
    )
    worker_poll_seconds: float = Field(1.0, gt=0, description="how often an idle worker looks")
    pacs_config: Path | None = Field(
        None, description="PACS routes and destinations (TOML); default: <data_dir>/pacs.toml"
    )
    embedded_pacs_worker: bool = Field(
        True, description="the serve command also runs the PACS worker (analyses, deliveries)"
    )
    pacs_settle_seconds: float = Field(
        2.0, ge=0, description="a series is assembled this long after its last request ended"
    )
    pacs_retry_seconds: float = Field(
        10.0, gt=0, description="first delay before a failed delivery is tried again (doubles)"
    )
    pacs_retry_max_seconds: float = Field(600.0, gt=0, description="longest delay between tries")
    pacs_delivery_max_attempts: int = Field(
        200, ge=1, description="a delivery is marked failed after this many tries"
    )
    pacs_max_request_bytes: int = Field(
        16 << 30, description="largest accepted STOW-RS request body (bytes)"
    )
    max_input_voxels: int = Field(
        1 << 28, description="most voxels an input may declare, all phases (413 beyond)"
    )
    max_inflated_bytes: int = Field(
        4 << 30, description="most bytes a deflated DICOM dataset may inflate to (413 beyond)"
    )
    worker_memory_bytes: int = Field(
        6 << 30,
        description="memory one HTTP or PACS worker commits to analyses at once; an analysis "
        "estimated above it is a 413, one that does not fit now waits, then 503",
    )
    admission_wait_seconds: float = Field(
        30.0, ge=0, description="how long an analysis waits for memory before a 503"
    )
    zip_max_total_bytes: int = 8 << 30
    zip_max_members: int = 20_000
    zip_max_ratio: float = 200.0

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'sitetune.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_tokens_file(self) -> Path:
        return (self.tokens_file or self.data_dir / "tokens.json").resolve()

    @property
    def resolved_initial_tokens_file(self) -> Path:
        """Where a first start writes the tokens it created (mode 0600)."""
        return (self.data_dir / "initial-tokens.txt").resolve()

    @property
    def resolved_pacs_config(self) -> Path:
        return (self.pacs_config or self.data_dir / "pacs.toml").resolve()

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_total_bytes=self.zip_max_total_bytes,
            max_member_bytes=min(self.zip_max_total_bytes, 2 << 30),
            max_members=self.zip_max_members,
            max_ratio=self.zip_max_ratio,
        )

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_input_voxels, self.max_inflated_bytes)

    def prepare(self) -> None:
        """Create the local state folders, readable by the service user only (called by
        entry points, never on import). State holds patient images and results."""
        for folder in (self.data_dir, self.resolved_artifact_dir, self.data_dir / "tmp"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)

"""``sitetune-serve``: first-start bootstrap on the embedded defaults, then ``bentoml serve``.

Bootstrap (once, before any worker starts): state folders, bearer tokens (generated and
printed when none are configured), built-in models registered as ``production``. With
``SITETUNE_EMBEDDED_WORKER`` (the default) it also starts ``sitetune-worker --supervise``,
the fine-tune worker, and with ``SITETUNE_EMBEDDED_PACS_WORKER`` ``sitetune-pacs
--supervise``, the PACS worker; both stop when the service stops.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from sitetune.errors import SitetuneError
from sitetune.service.state import bootstrap
from sitetune.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sitetune-serve", description="Run the sitetune HTTP service."
    )
    parser.add_argument("--host", help="listen address (default from settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default from settings: 3000)")
    parser.add_argument("--workers", type=int, help="HTTP worker processes (default 1)")
    args = parser.parse_args(argv)
    # everything the service and its workers write (database, uploads, results) is
    # readable by the service user only; the workers inherit the mask
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    try:
        bootstrap(settings)
    except SitetuneError as error:  # e.g. a malformed PACS routing file
        print(f"sitetune: cannot start: {error.message}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    scheme = "https" if settings.tls_certfile else "http"
    if bool(settings.tls_certfile) != bool(settings.tls_keyfile):
        print("sitetune: cannot start: set both TLS_CERTFILE and TLS_KEYFILE", file=sys.stderr)
        return 2
    print(
        f"sitetune: serving on {scheme}://{host}:{port} with {workers} worker(s) "
        f"(state in {settings.data_dir.resolve()})",
        file=sys.stderr,
        flush=True,
    )
    env = dict(os.environ, SITETUNE_DATA_DIR=str(settings.data_dir.resolve()))
    # BentoML keeps its Prometheus files under BENTOML_HOME and clears them at start: one
    # home per deployment, so two services on one host do not wipe each other's metrics.
    env.setdefault("BENTOML_HOME", str((settings.data_dir / "bentoml").resolve()))
    overrides = [o for o in env.get("BENTOML_CONFIG_OPTIONS", "").split() if o]
    overrides.append(f"services.sitetune.workers={workers}")
    if settings.tls_certfile:  # HTTPS: BentoML's ssl options (uvicorn's)
        overrides += [
            "services.sitetune.ssl.enabled=true",
            f"services.sitetune.ssl.certfile={settings.tls_certfile.resolve()}",
            f"services.sitetune.ssl.keyfile={settings.tls_keyfile.resolve()}",
        ]
        if settings.tls_client_ca:  # clients must present a certificate signed by it
            overrides += [
                f"services.sitetune.ssl.ca_certs={settings.tls_client_ca.resolve()}",
                "services.sitetune.ssl.cert_reqs=2",  # ssl.CERT_REQUIRED
            ]
    env["BENTOML_CONFIG_OPTIONS"] = " ".join(overrides)
    for enabled, command in (
        (settings.embedded_worker, "sitetune-worker"),
        (settings.embedded_pacs_worker, "sitetune-pacs"),
    ):
        if enabled:  # its parent becomes the bentoml process (same pid)
            executable = os.path.join(os.path.dirname(sys.executable), command)
            subprocess.Popen([executable, "--supervise"], env=env)
    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    os.execve(
        bentoml,
        [bentoml, "serve", "sitetune.service.app:Sitetune", "--host", host, "--port", str(port)],
        env,
    )
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())

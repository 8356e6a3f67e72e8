"""``sitetune-serve``: prepare local state on the embedded defaults and run ``bentoml serve``."""

from __future__ import annotations

import argparse
import os
import sys

from sitetune.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sitetune-serve", description="Run the sitetune HTTP service."
    )
    parser.add_argument("--host", help="listen address (default from settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default from settings: 3000)")
    args = parser.parse_args(argv)
    settings = Settings()
    settings.prepare()
    host = args.host or settings.host
    port = args.port or settings.port
    print(
        f"sitetune: serving on http://{host}:{port} (state in {settings.data_dir.resolve()})",
        file=sys.stderr,
        flush=True,
    )
    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    command = [
        bentoml,
        "serve",
        "sitetune.service.app:Sitetune",
        "--host",
        host,
        "--port",
        str(port),
    ]
    os.execv(bentoml, command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())

"""Background processes: who is running work (``host:pid``), whether it is still alive,
and a supervisor that restarts a worker process whenever it dies."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def training_worker(argv: list[str] | None = None) -> int:
    """``sitetune-worker``: the fine-tune worker (`sitetune.training.worker`)."""
    return worker_main("sitetune-worker", "The fine-tune worker.", "sitetune.training.worker",
                       "Worker", argv)  # fmt: skip


def pacs_worker(argv: list[str] | None = None) -> int:
    """``sitetune-pacs``: the PACS worker (`sitetune.pacs.worker`)."""
    return worker_main("sitetune-pacs", "The PACS worker.", "sitetune.pacs.worker",
                       "PacsWorker", argv)  # fmt: skip


def sitetune_command(argv: list[str] | None = None) -> int:
    """``sitetune``: the HTTP client CLI (`sitetune.clients.cli`), and ``sitetune db ...``
    on the server's own host (`sitetune.db`: the schema of the settings' database)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["db"]:
        from sitetune.db import main as db_main

        return db_main(argv[1:])
    from sitetune.clients.cli import main as cli_main

    return cli_main(argv)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(worker: str | None) -> bool:
    """True when ``worker`` ("host:pid") ran on this host and its process no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def supervise(module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` and start a new one whenever it dies; stop with the
    parent process (the service)."""
    parent = os.getppid()
    child: subprocess.Popen | None = None
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    command = [sys.executable, "-m", module, *argv]
    while not stopping:
        child = subprocess.Popen(command)
        while child.poll() is None:
            if os.getppid() != parent:  # the service is gone: stop with it
                stop()
            time.sleep(0.5)
        if not stopping:
            logger.warning("%s exited with %s; starting a new one", module, child.returncode)
            time.sleep(1.0)
    if child is not None:
        child.wait()
    return 0


def worker_main(
    prog: str, description: str, module: str, build: Callable | str, argv: list[str] | None
) -> int:
    """The command line of a background worker: ``--supervise`` runs ``module`` under
    `supervise`; otherwise ``build(settings)`` makes the worker (with ``stopping``,
    ``describe()`` and ``serve_forever()``), which runs until SIGTERM. ``build`` may be the
    class's name in ``module``: the supervisor then never imports the worker's code (and
    its torch: a supervisor stays a few tens of MB)."""
    from sitetune.settings import Settings

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--supervise", action="store_true", help="restart the worker whenever it dies"
    )
    args, rest = parser.parse_known_args(argv)
    os.umask(0o077)  # files it writes (results, checkpoints, logs) for the service user only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.supervise:
        return supervise(module, rest)
    settings = Settings()
    settings.prepare()
    if isinstance(build, str):
        import importlib

        build = getattr(importlib.import_module(module), build)
    worker = build(settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    logger.info("%s %s", prog, worker.describe())
    worker.serve_forever()
    return 0

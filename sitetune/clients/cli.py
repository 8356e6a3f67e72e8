"""``sitetune``: the command line of the sitetune service (inference of local files,
fine-tune jobs, models, named principals and the DIMSE bridge).

It parses arguments, calls `SitetuneClient` (and, for inference, `sitetune.clients.infer`)
and prints what `render` makes of the answer (``--json``: the answer itself).

    sitetune segment case.nii.gz --model lv-ct          # -> case.sitetune/
    sitetune thickness cine-dicom/ -o out/              # a DICOM folder, zipped on the fly
    sitetune lesions studies/ --json                    # a batch: one case per entry
    sitetune jobs submit site.zip --base lv-ct:production --epochs 20 --wait
    sitetune models promote lv-ct 4 --reason "site B fine-tune, Dice 0.89"
    sitetune tokens create "Dr A. Example" --roles clinical
    sitetune bridge --ae-title SITETUNE --port 11112 --token $PACS_TOKEN

Exit codes (the epilog of ``sitetune --help`` is this list):

  0    done
  1    a followed job failed or was cancelled; an inference case was refused or failed
       (in a batch the other cases are written; nothing is written for that case)
  2    bad arguments or input path, or the service refused the request (HTTP 4xx,
       a missing, wrong or revoked token and a role without access included)
  3    the service could not be reached
  4    the service failed (HTTP 5xx or an unreadable answer)
  130  interrupted
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from sitetune.clients import infer, render
from sitetune.clients.client import (
    SitetuneClient,
    SitetuneClientError,
    SitetuneConnectionError,
)
from sitetune.clients.results import Inference, InferenceResult

STRATEGIES = ("all", "decoder", "head", "scratch")
EXIT_CODES = "exit codes:\n" + (__doc__ or "").partition("this list):\n\n")[2].rstrip()


class ClientSettings(BaseSettings):
    """Defaults of ``--url`` and ``--token``: ``SITETUNE_URL``, ``SITETUNE_TOKEN``."""

    model_config = SettingsConfigDict(env_prefix="SITETUNE_", extra="ignore")

    url: str = "http://127.0.0.1:3000"
    token: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None  # with client_key: mutual TLS
    client_key: str | None = None


# -- commands: each calls the client and prints; returns the exit code -----------------


def _emit(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(json.dumps(answer, indent=2) if args.json else text)


def _jobs_submit(client: SitetuneClient, args: argparse.Namespace) -> int:
    job = client.submit_job(
        args.dataset,
        args.base,
        strategy=args.strategy,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        val_fraction=args.val_fraction,
        val_cases=args.val_cases,
        seed=args.seed,
        auto_promote=args.auto_promote,
        promote_margin=args.promote_margin,
        iterations_per_epoch=args.iterations_per_epoch,
    )
    if args.wait:
        if not args.json:
            print(f"submitted job {job['job_id']} ({job.get('state')})")
        return _follow_job(client, job["job_id"], args)
    _emit(args, job, f"submitted job {job['job_id']} ({job.get('state')})")
    return 0


def _jobs_list(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.jobs()
    _emit(args, answer, render.job_table(answer.get("jobs") or []))
    return 0


def _jobs_status(client: SitetuneClient, args: argparse.Namespace) -> int:
    if args.follow:
        return _follow_job(client, args.job, args)
    job = client.job(args.job)
    _emit(args, job, render.job_summary(job))
    return 0


def _jobs_cancel(client: SitetuneClient, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.job)
    _emit(args, job, f"job {job.get('job_id', args.job)}: {job.get('state')}")
    return 0


def _jobs_logs(client: SitetuneClient, args: argparse.Namespace) -> int:
    if args.follow:
        for text in client.follow_logs(args.job, args.offset, args.interval):
            sys.stdout.write(text)
            sys.stdout.flush()
        return 0
    chunk = client.job_logs(args.job, args.offset)
    if args.json:
        print(json.dumps({"job_id": args.job, "text": chunk.text, "offset": chunk.offset}))
    else:
        sys.stdout.write(chunk.text)
    return 0


def _follow_job(client: SitetuneClient, job_id: str, args: argparse.Namespace) -> int:
    """Poll the job, draw its progress on stderr, print the summary; 0 only if it succeeded."""
    stream = sys.stderr
    live = stream.isatty()
    columns = shutil.get_terminal_size().columns - 1
    job: dict = {}
    last: tuple | None = None
    try:
        for job in client.watch_job(job_id, args.interval):
            if live:
                stream.write("\r" + render.progress_line(job)[:columns] + "\x1b[K")
                stream.flush()
                continue
            progress = job.get("progress") or {}
            key = (job.get("state"), progress.get("epoch"))
            if key != last:
                print(render.progress_line(job, bar=False), file=stream, flush=True)
                last = key
    except KeyboardInterrupt:
        print(
            f"\nstopped following job {job_id}; it goes on (`sitetune jobs cancel {job_id}`"
            " stops it)",
            file=stream,
        )
        return 130
    finally:
        if live and job:
            stream.write("\n")
    _emit(args, job, render.job_summary(job))
    return 0 if job.get("state") == "succeeded" else 1


def _models_list(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.models()
    _emit(args, answer, render.models_table(answer))
    return 0


def _models_show(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.model(args.name)
    _emit(args, answer, render.model_details(answer))
    return 0


def _models_promote(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.promote(args.name, args.version, args.reason, force=args.force)
    _emit(args, answer, render.alias_moved(answer))
    return 0


def _models_rollback(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.rollback(args.name, args.reason)
    _emit(args, answer, render.alias_moved(answer))
    return 0


def _tokens_create(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.create_token(args.name, args.roles.split(","))
    text = (
        f"created principal {answer['name']} ({', '.join(answer['roles'])}), id {answer['id']}\n"
        f"token (shown once; store it now): {answer['token']}"
    )
    _emit(args, answer, text)
    return 0


def _tokens_list(client: SitetuneClient, args: argparse.Namespace) -> int:
    answer = client.tokens()
    _emit(args, answer, render.tokens_table(answer["tokens"]))
    return 0


def _tokens_revoke(client: SitetuneClient, args: argparse.Namespace) -> int:
    matches = [p for p in client.tokens()["tokens"] if p["id"].startswith(args.id)]
    if len(matches) != 1:
        print(f"sitetune: {len(matches)} principals have an id starting {args.id!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    answer = client.revoke_token(matches[0]["id"])
    _emit(args, answer, f"revoked {answer['name']} ({answer['id']})")
    return 0


# -- inference -------------------------------------------------------------------------


class _StderrReporter:
    """Upload percentage, the end of processing, skipped outputs and errors on stderr;
    with ``quiet`` only the errors. A terminal gets the percentage redrawn in place."""

    def __init__(self, quiet: bool, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._shown: tuple[str, int] | None = None  # (case, percent) last drawn
        self._open = False  # a live line waits for its newline

    def _print(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def uploading(self, case: infer.Case, sent: int, total: int) -> None:
        if self.quiet:
            return
        percent = 100 if total <= 0 else min(100, sent * 100 // total)
        step = percent if self.live or percent == 100 else percent // 25 * 25
        if self._shown == (case.name, step):
            return
        self._shown = (case.name, step)
        text = f"{case.name}: uploading {render.size(total)} {step:3d}%"
        if step == 100:
            text += ", processing"
        if self.live:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._open = True
        else:
            self._print(text)

    def processed(self, case: infer.Case, result: InferenceResult, seconds: float) -> None:
        self.note(f"{case.name}: processed in {seconds:.1f} s (result {result.result_id})")

    def skipped(self, case: infer.Case, output: str, reason: str) -> None:
        self.note(f"{case.name}: no {output}: {reason}")

    def finished(self, outcome: infer.CaseOutcome) -> None:
        case, error = outcome.case, outcome.error
        if error is not None:
            status = f"HTTP {error.status} " if error.status else ""
            self._print(f"error: {case.name}: {outcome.status} ({status}{error.code}): {error}")
        else:
            self.note(f"{case.name}: wrote {len(outcome.written)} files to {case.output_dir}")


def _case_json(outcome: infer.CaseOutcome) -> dict:
    error = outcome.error
    return {
        "case": outcome.case.name,
        "input": str(outcome.case.path),
        "status": outcome.status,
        "output_dir": str(outcome.case.output_dir) if outcome.ok else None,
        "files": outcome.written,
        "skipped": outcome.skipped,
        "error": None
        if error is None
        else {"status": error.status, "code": error.code, "message": error.message},
        "result": outcome.result.answer if outcome.result is not None else None,
    }


def _infer(client: SitetuneClient, args: argparse.Namespace) -> int:
    """``sitetune segment|thickness|lesions INPUT``: 0 if every case is written, else 1."""
    kind = Inference(args.command)
    found = infer.discover(args.input, args.output)
    reporter = _StderrReporter(args.quiet)
    for path in found.ignored:
        reporter.note(f"left out {path}: not a NIfTI file, a zip or a folder")
    outcomes = infer.run_cases(client, kind, found.cases, reporter, model=args.model,
                               version=args.version, series=args.series)  # fmt: skip
    cases = [_case_json(outcome) for outcome in outcomes]
    if found.batch:
        _emit(args, {"cases": cases}, render.cases_table(kind.value, cases))
    elif outcomes[0].ok:
        case = cases[0]
        text = render.inference_summary(kind.value, case["result"], case["output_dir"],
                                        case["files"])  # fmt: skip
        _emit(args, case["result"], text)
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def _inference_parser(commands: argparse._SubParsersAction) -> None:
    summaries = {
        Inference.SEGMENT: "segment images (POST /v1/segment): label map, label volumes",
        Inference.THICKNESS: "LV wall thickness at ED and ES (POST /v1/thickness)",
        Inference.LESIONS: "count and measure lesions in FLAIR images (POST /v1/lesion-volume)",
    }
    for kind, summary in summaries.items():
        parser = _command(commands, kind.value, _infer, summary)
        parser.epilog = (
            "INPUT is a NIfTI file (.nii, .nii.gz), a zip of DICOM files, a folder of DICOM "
            "files (zipped on the fly), or a folder of such cases (a batch: each NIfTI "
            "file, zip and sub-folder is one case, and a table sums them up). Each case "
            "gets a folder with result.json and the outputs the service has for it (mask, "
            "thickness or lesion map; SEG and SR for DICOM input)."
        )
        parser.add_argument("input", metavar="INPUT", help="a file, a DICOM folder, or a batch")
        parser.add_argument(
            "-o",
            "--output",
            metavar="OUTDIR",
            help="the case's folder (a batch: one sub-folder per case); default "
            "<INPUT name>.sitetune beside INPUT",
        )
        parser.add_argument("--model", help="model name (default: the service's choice)")
        parser.add_argument("--version", help="pin a model version (default: production)")
        parser.add_argument(
            "--series", help="SeriesInstanceUID or SeriesNumber, to pick one series of several"
        )
        parser.add_argument(
            "-q", "--quiet", action="store_true", help="no progress on stderr (errors only)"
        )


# -- parser ----------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``--url``, ``--token``, ``--json``: before the command, or (suppressed) after it."""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument(
        "--url", help="service URL (default: $SITETUNE_URL or http://127.0.0.1:3000)", **default
    )
    parser.add_argument("--token", help="bearer token (default: $SITETUNE_TOKEN)", **default)
    parser.add_argument(
        "--ca-file", help="CA of an HTTPS service (default: $SITETUNE_CA_FILE)", **default
    )
    parser.add_argument(
        "--json", action="store_true", help="print the service's JSON answer", **default
    )


def _command(
    group: argparse._SubParsersAction,
    name: str,
    handler: Callable[[SitetuneClient, argparse.Namespace], int],
    summary: str,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=summary, description=summary)
    _global_options(parser, suppress=True)
    parser.set_defaults(handler=handler)
    return parser


def _interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between polls (default 1)"
    )


def _jobs_parser(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="fine-tune jobs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    submit = _command(jobs, "submit", _jobs_submit, "upload a site dataset and start a job")
    submit.add_argument("dataset", help="zip in Medical Segmentation Decathlon layout")
    submit.add_argument("--base", required=True, help="name, name:alias or name:version")
    submit.add_argument("--strategy", choices=STRATEGIES, help="layers to train (default all)")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--learning-rate", type=float)
    held_out = submit.add_mutually_exclusive_group()
    held_out.add_argument("--val-fraction", type=float, help="share of cases held out")
    held_out.add_argument("--val-cases", help="comma-separated case names held out")
    submit.add_argument("--seed", type=int)
    submit.add_argument(
        "--auto-promote",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="promote the result if it beats production",
    )
    submit.add_argument("--promote-margin", type=float, help="how much better it must be")
    submit.add_argument("--iterations-per-epoch", type=int)
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    _interval(submit)

    _command(jobs, "list", _jobs_list, "list jobs")
    status = _command(jobs, "status", _jobs_status, "show a job")
    status.add_argument("job")
    status.add_argument("--follow", action="store_true", help="poll until the job ends")
    _interval(status)
    _command(jobs, "cancel", _jobs_cancel, "cancel a job").add_argument("job")
    logs = _command(jobs, "logs", _jobs_logs, "print a job's log")
    logs.add_argument("job")
    logs.add_argument("--offset", type=int, default=0, help="start at this byte offset")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    _interval(logs)


def _models_parser(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model registry").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    _command(models, "list", _models_list, "list models and their aliases")
    _command(models, "show", _models_show, "show a model's versions").add_argument("name")
    promote = _command(models, "promote", _models_promote, "move production to a version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True, help="recorded in the audit log")
    promote.add_argument("--force", action="store_true", help="override the evaluation gate")
    rollback = _command(models, "rollback", _models_rollback, "move production back")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True, help="recorded in the audit log")


def _tokens_parser(commands: argparse._SubParsersAction) -> None:
    tokens = commands.add_parser("tokens", help="named principals").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = _command(tokens, "create", _tokens_create, "create a principal and its token")
    create.add_argument("name", help="the person or system that will hold the token")
    create.add_argument("--roles", required=True, help="comma-separated: clinical, pacs, ops")
    _command(tokens, "list", _tokens_list, "list principals (never their tokens)")
    revoke = _command(tokens, "revoke", _tokens_revoke, "revoke a principal's token")
    revoke.add_argument("id", help="the principal's id (or an unambiguous prefix)")


def _bridge(client: SitetuneClient, args: argparse.Namespace) -> int:
    from sitetune.clients.bridge import Bridge  # pynetdicom only for this command

    if not args.allow and not args.allow_any_caller:
        print(
            "error: name the PACS that may send with --allow AE_TITLE (repeat it), or pass "
            "--allow-any-caller",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Bridge(
        client.base_url,
        client.auth_headers,
        Path(args.spool),
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allowed_callers=args.allow,
        idle_seconds=args.idle_seconds,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        tls_client_ca=args.tls_client_ca,
        service_tls=client.tls,
    ).serve_forever()
    return 0


def _bridge_parser(commands: argparse._SubParsersAction) -> None:
    summary = "DIMSE C-STORE SCP forwarding each received study to the service (STOW-RS)"
    bridge = commands.add_parser("bridge", help=summary, description=summary)
    _global_options(bridge, suppress=True)
    bridge.set_defaults(handler=_bridge)
    bridge.add_argument("--ae-title", default="SITETUNE", help="called AE title to answer")
    bridge.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    bridge.add_argument("--port", type=int, default=11112, help="listen port (default 11112)")
    bridge.add_argument(
        "--allow", action="append", metavar="AE", help="a calling AE title to accept (repeat)"
    )
    bridge.add_argument("--tls-cert", help="DICOM TLS: the bridge's certificate (PEM)")
    bridge.add_argument("--tls-key", help="DICOM TLS: its private key (PEM)")
    bridge.add_argument(
        "--tls-client-ca", help="DICOM TLS: accept only callers with a certificate this CA signed"
    )
    bridge.add_argument(
        "--allow-any-caller",
        action="store_true",
        help="accept associations from any calling AE title (default: only --allow ones)",
    )
    bridge.add_argument(
        "--spool", default="var/bridge-spool", help="where instances wait to be forwarded"
    )
    bridge.add_argument(
        "--idle-seconds",
        type=_positive,
        default=30.0,
        help="forward a study this long after its last instance even if the association "
        "is still open (default 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitetune",
        description="Command line of the sitetune service.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _inference_parser(commands)
    _jobs_parser(commands)
    _models_parser(commands)
    _tokens_parser(commands)
    _bridge_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    settings = ClientSettings()
    url = args.url or settings.url
    token = args.token if args.token is not None else settings.token
    ca_file = getattr(args, "ca_file", None) or settings.ca_file
    try:
        pair = (settings.client_cert, settings.client_key) if settings.client_cert else None
        with SitetuneClient(url, token, ca_file=ca_file, client_cert=pair) as client:
            return args.handler(client, args)
    except SitetuneConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SitetuneClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.status is not None and 400 <= exc.status < 500 else 4
    except (OSError, ValueError) as exc:  # unreadable dataset file, contradictory options
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

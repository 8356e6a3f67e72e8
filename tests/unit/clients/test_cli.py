"""The ``sitetune`` command line against a loopback server answering the documented JSON."""

from __future__ import annotations

import io
import json
import socket
import zipfile
from importlib.metadata import entry_points

import pytest

from sitetune.clients.cli import main
from sitetune.clients.client import SitetuneClient, SitetuneClientError

from .conftest import Answer

TOKEN = "ops-token"


def run(fake, *argv: str) -> int:
    return main(["--url", fake.url, "--token", TOKEN, *argv])


def job(state: str, progress: dict | None = None, **extra) -> dict:
    return {
        "job_id": "j1",
        "state": state,
        "base": "lv-ct:production",
        "config": {"epochs": 3, "auto_promote": True},
        "progress": progress,
        "created_at": "2026-05-01T10:00:00+00:00",
        "started_at": None if state == "queued" else "2026-05-01T10:00:05+00:00",
        "finished_at": None,
        "error": None,
        "result": None,
    } | extra


def progress(epoch: int, loss: float, val: dict | None = None, eta: float | None = 20) -> dict:
    return {"epoch": epoch, "epochs": 3, "train_loss": loss, "val": val, "eta_s": eta}


SUCCEEDED = job(
    "succeeded",
    progress(3, 0.31, {"dice/LV myocardium": 0.88}, None),
    finished_at="2026-05-01T10:05:00+00:00",
    result={
        "version": 4,
        "evaluation": {
            "candidate": {"dice/LV myocardium": 0.891, "cases": 5},
            "production": {"dice/LV myocardium": 0.762, "cases": 5},
        },
        "promoted": True,
        "promotion": {"from_version": 1, "to_version": 4},
    },
)
RUNNING = [
    job("queued"),
    job("running", progress(1, 0.9)),
    job("running", progress(1, 0.9)),
    job("running", progress(2, 0.5, {"dice/LV myocardium": 0.81}, 10)),
    SUCCEEDED,
]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "site-b.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dataset.json", "{}")
    return path


# -- submit ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fields"),
    [
        ([], {}),
        (
            ["--epochs", "5", "--learning-rate", "0.0005", "--val-cases", "case1,case2"],
            {"epochs": "5", "learning_rate": "0.0005", "val_cases": "case1,case2"},
        ),
        (
            ["--strategy", "decoder", "--val-fraction", "0.2", "--seed", "7", "--auto-promote"],
            {"strategy": "decoder", "val_fraction": "0.2", "seed": "7", "auto_promote": "true"},
        ),
        (
            ["--no-auto-promote", "--promote-margin", "0.01", "--iterations-per-epoch", "10"],
            {"auto_promote": "false", "promote_margin": "0.01", "iterations_per_epoch": "10"},
        ),
    ],
)
def test_submit_sends_exactly_the_given_fields_and_the_file(fake, dataset, capsys, options, fields):
    fake.on("POST", "/v1/jobs", Answer(202, job("queued")))
    assert run(fake, "jobs", "submit", str(dataset), "--base", "lv-ct:production", *options) == 0
    (request,) = fake.sent("POST", "/v1/jobs")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    sent_fields, files = request.form()
    assert sent_fields == {"base": "lv-ct:production"} | fields
    assert files == {"dataset": ("site-b.zip", dataset.read_bytes())}
    assert "submitted job j1 (queued)" in capsys.readouterr().out


def test_submit_refuses_val_fraction_with_val_cases(fake, dataset, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(
            fake,
            "jobs",
            "submit",
            str(dataset),
            "--base",
            "lv-ct",
            "--val-fraction",
            "0.2",
            "--val-cases",
            "a",
        )
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert fake.requests == []


def test_submit_wait_follows_the_job(fake, dataset, capsys):
    fake.on("POST", "/v1/jobs", Answer(202, job("queued")))
    fake.on("GET", "/v1/jobs/j1", [Answer(body=j) for j in RUNNING])
    argv = ["jobs", "submit", str(dataset), "--base", "lv-ct", "--wait", "--interval", "0.01"]
    assert run(fake, *argv) == 0
    out = capsys.readouterr().out
    assert "submitted job j1" in out and "version: lv-ct:4" in out


def test_a_missing_dataset_file_is_an_error(fake, tmp_path, capsys):
    assert run(fake, "jobs", "submit", str(tmp_path / "none.zip"), "--base", "lv-ct") == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert fake.requests == []


# -- following a job -------------------------------------------------------------------


def test_follow_prints_a_line_per_epoch_and_the_summary(fake, capsys):
    fake.on("GET", "/v1/jobs/j1", [Answer(body=j) for j in RUNNING])
    assert run(fake, "jobs", "status", "j1", "--follow", "--interval", "0.01") == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "job j1 queued"
    assert sum("epoch 1/3" in line for line in lines) == 1  # unchanged epoch: no new line
    assert "epoch 2/3  loss 0.5000  ETA 10s  val dice/LV myocardium 0.810" in lines[2]
    assert "\r" not in captured.err
    out = captured.out
    assert "job j1 succeeded" in out
    assert "version: lv-ct:4" in out
    assert "evaluation: dice/LV myocardium 0.891 (production 0.762)" in out
    assert "promoted: yes (production 1 -> 4)" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_follow_draws_a_live_bar_on_a_terminal(fake, capsys, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setenv("COLUMNS", "200")
    fake.on("GET", "/v1/jobs/j1", [Answer(body=j) for j in RUNNING])
    assert run(fake, "jobs", "status", "j1", "--follow", "--interval", "0.01") == 0
    drawn = terminal.getvalue()
    assert drawn.count("\r") == len(RUNNING) and drawn.endswith("\n")
    assert "[#############-------]  epoch 2/3  loss 0.5000  ETA 10s  val dice/LV myo" in drawn
    assert "job j1 succeeded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (job("failed", progress(1, 0.9), error="out of memory"), "error: out of memory"),
        (job("cancelled", progress(1, 0.9)), "job j1 cancelled"),
    ],
)
def test_follow_exits_1_when_the_job_did_not_succeed(fake, capsys, final, expected):
    fake.on(
        "GET", "/v1/jobs/j1", [Answer(body=job("running", progress(1, 0.9))), Answer(body=final)]
    )
    assert run(fake, "jobs", "status", "j1", "--follow", "--interval", "0.01") == 1
    assert expected in capsys.readouterr().out


def test_status_without_follow_shows_why_a_result_was_not_promoted(fake, capsys):
    refused = SUCCEEDED | {
        "result": SUCCEEDED["result"]
        | {"promoted": False, "promotion": {"reason": "candidate not better by 0.01"}}
    }
    fake.on("GET", "/v1/jobs/j1", Answer(body=refused))
    assert run(fake, "jobs", "status", "j1") == 0
    assert "promoted: no (candidate not better by 0.01)" in capsys.readouterr().out


def test_list_cancel_and_json(fake, capsys):
    fake.on("GET", "/v1/jobs", Answer(body={"jobs": [job("running", progress(2, 0.5)), SUCCEEDED]}))
    fake.on("POST", "/v1/jobs/j1/cancel", Answer(body=job("cancelled")))
    assert run(fake, "jobs", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["JOB", "STATE", "BASE", "EPOCH", "CREATED", "VERSION"]
    assert table[1].split()[:4] == ["j1", "running", "lv-ct:production", "2/3"]
    assert table[2].split()[-1] == "lv-ct:4"
    for argv in (["--json", "jobs", "list"], ["jobs", "list", "--json"]):
        assert run(fake, *argv) == 0
        assert json.loads(capsys.readouterr().out)["jobs"][1] == SUCCEEDED
    assert run(fake, "jobs", "cancel", "j1") == 0
    assert capsys.readouterr().out == "job j1: cancelled\n"
    assert len(fake.sent("POST", "/v1/jobs/j1/cancel")) == 1


def test_logs_follow_reads_on_from_the_offset_given(fake, capsys):
    log = b"epoch 1 loss 0.9\nepoch 2 loss 0.5\n"
    served = iter([17, len(log)])  # the log grows while the job runs

    def logs(request):
        start = int(request.query["offset"])
        end = next(served, len(log))
        return Answer(body=log[start:end], headers={"X-Log-Offset": str(end)})

    fake.on("GET", "/v1/jobs/j1/logs", logs)
    fake.on("GET", "/v1/jobs/j1", [Answer(body=job("running")), Answer(body=SUCCEEDED)])
    assert run(fake, "jobs", "logs", "j1", "--follow", "--interval", "0.01") == 0
    assert capsys.readouterr().out == log.decode()
    offsets = [r.query["offset"] for r in fake.sent("GET", "/v1/jobs/j1/logs")]
    assert offsets == ["0", "17"]


# -- models ----------------------------------------------------------------------------


def test_models_list_show_promote_rollback(fake, capsys):
    card = {
        "modality": "CT",
        "labels": [{"value": 1, "name": "LV blood pool"}, {"value": 2, "name": "LV myocardium"}],
        "metrics": {"site_B": {"dice/LV myocardium": 0.9534, "cases": 10, "site": "B"}},
    }
    version = {"version": 1, "parent": None, "created_at": "t0", "created_by": "x", "card": card}
    fake.on(
        "GET",
        "/v1/models",
        Answer(
            body={"models": [{"name": "lv-ct", "aliases": {"production": 1}, "versions": [1, 2]}]}
        ),
    )
    fake.on(
        "GET",
        "/v1/models/lv-ct",
        Answer(body={"name": "lv-ct", "aliases": {"production": 1}, "versions": [version]}),
    )
    moved = {"name": "lv-ct", "alias": "production", "from_version": 1, "to_version": 2}
    fake.on("POST", "/v1/models/lv-ct/promote", Answer(body=moved))
    fake.on(
        "POST",
        "/v1/models/lv-ct/rollback",
        Answer(body=moved | {"from_version": 2, "to_version": 1}),
    )

    assert run(fake, "models", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["lv-ct", "1", "production=1", "1,2"]
    assert run(fake, "models", "show", "lv-ct") == 0
    shown = capsys.readouterr().out
    assert "version 1  [production]" in shown
    assert "labels: LV blood pool, LV myocardium" in shown
    assert "site_B: dice/LV myocardium 0.953" in shown
    assert run(fake, "models", "promote", "lv-ct", "2", "--reason", "site B", "--force") == 0
    assert capsys.readouterr().out == "lv-ct: production 1 -> 2\n"
    assert fake.sent("POST", "/v1/models/lv-ct/promote")[0].json() == {
        "version": 2,
        "reason": "site B",
        "force": True,
    }
    assert run(fake, "models", "rollback", "lv-ct", "--reason", "worse on site B") == 0
    assert capsys.readouterr().out == "lv-ct: production 2 -> 1\n"
    assert fake.sent("POST", "/v1/models/lv-ct/rollback")[0].json() == {"reason": "worse on site B"}


# -- errors ----------------------------------------------------------------------------


def test_dataset_problems_are_listed_one_per_line(fake, dataset, capsys):
    problems = [
        {"case": "case1", "code": "shape_mismatch", "message": "label shape differs from image"},
        {"case": "case2", "code": "empty_label", "message": "the label is all zero"},
    ]
    body = {
        "error": {
            "code": "invalid_dataset",
            "message": "the dataset has 2 problem(s)",
            "details": {"problems": problems},
        }
    }
    fake.on("POST", "/v1/jobs", Answer(422, body))
    assert run(fake, "jobs", "submit", str(dataset), "--base", "lv-ct") == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the dataset has 2 problem(s)",
        "  case1: label shape differs from image [shape_mismatch]",
        "  case2: the label is all zero [empty_label]",
    ]


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (
            403,
            {"error": {"code": "wrong_role", "message": "role clinical may not"}},
            2,
            "error: role clinical may not",
        ),
        (404, {"error": {"code": "not_found", "message": "no job 'j9'"}}, 2, "error: no job 'j9'"),
        (
            500,
            {"error": {"code": "internal_error", "message": "quote request id 1"}},
            4,
            "error: quote request id 1",
        ),
        (502, "<html>Bad Gateway</html>", 4, "error: HTTP 502: <html>Bad Gateway</html>"),
    ],
)
def test_error_bodies_become_error_lines_and_exit_codes(fake, capsys, status, body, code, message):
    fake.on("GET", "/v1/jobs/j9", Answer(status, body))
    assert run(fake, "jobs", "status", "j9") == code
    assert capsys.readouterr().err.strip() == message


def test_an_unreachable_service_exits_3(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        assert main(["--url", url, "jobs", "list"]) == 3
    assert capsys.readouterr().err.startswith(f"error: cannot reach {url}")


def test_url_and_token_default_to_the_environment(fake, monkeypatch, capsys):
    monkeypatch.setenv("SITETUNE_URL", fake.url)
    monkeypatch.setenv("SITETUNE_TOKEN", "from-env")
    fake.on("GET", "/v1/jobs", Answer(body={"jobs": []}))
    assert main(["jobs", "list"]) == 0
    assert capsys.readouterr().out == "no jobs\n"
    assert fake.requests[0].headers["authorization"] == "Bearer from-env"


def test_the_client_raises_its_error_with_status_and_code(fake):
    fake.on(
        "GET",
        "/v1/models/nope",
        Answer(404, {"error": {"code": "model_not_found", "message": "no model"}}),
    )
    with SitetuneClient(fake.url, None) as client, pytest.raises(SitetuneClientError) as err:
        client.model("nope")
    assert (err.value.status, err.value.code, str(err.value)) == (
        404,
        "model_not_found",
        "no model",
    )
    assert "authorization" not in fake.requests[0].headers
    with pytest.raises(ValueError, match="not both"):
        SitetuneClient(fake.url, None).submit_job("x.zip", "lv-ct", val_fraction=0.2, val_cases="a")


def test_the_console_script_is_registered_and_dispatches(capsys):
    (script,) = entry_points(group="console_scripts", name="sitetune")
    assert script.value == "sitetune.processes:sitetune_command"
    command = script.load()
    with pytest.raises(SystemExit):
        command(["--help"])
    assert "tokens" in capsys.readouterr().out, "the client CLI"
    with pytest.raises(SystemExit):
        command(["db", "--help"])
    assert "upgrade" in capsys.readouterr().out, "the schema commands"

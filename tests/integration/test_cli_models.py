"""``sitetune models ...`` against the real service."""

from __future__ import annotations

import json
import re

from sitetune.clients.cli import main
from tests.server import TOKENS


def sitetune(server, role: str, *argv: str) -> int:
    return main(["--url", server.base_url, "--token", TOKENS[role], *argv])


def test_models_list_and_show_name_lv_ct_and_its_production_version(server, capsys):
    with server.client("ops") as client:
        production = client.get("/v1/models/lv-ct").json()["aliases"]["production"]

    assert sitetune(server, "ops", "models", "list") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["NAME", "PRODUCTION", "ALIASES", "VERSIONS"]
    assert ["lv-ct", str(production)] == next(r for r in rows if r[0] == "lv-ct")[:2]

    assert sitetune(server, "ops", "models", "show", "lv-ct") == 0
    shown = capsys.readouterr().out
    first = shown.splitlines()[0]  # other aliases (a job's "candidate") may come first
    assert first.startswith("lv-ct  aliases: ") and re.search(
        rf"\bproduction={production}\b", first
    )
    assert f"version {production}  [production]" in shown
    assert "labels: LV blood pool, LV myocardium" in shown

    assert sitetune(server, "ops", "--json", "models", "show", "lv-ct") == 0
    assert json.loads(capsys.readouterr().out)["aliases"]["production"] == production


def test_a_clinical_token_is_refused_with_exit_code_2(server, capsys):
    assert sitetune(server, "clinical", "models", "list") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: clinical (clinical) may not use this route")
    assert "ops" in err

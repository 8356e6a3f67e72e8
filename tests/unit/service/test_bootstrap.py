"""First start: tokens generated and printed once, built-in models registered once."""

from __future__ import annotations

import re

from sitetune.models.builtin import builtin_folders
from sitetune.service.state import AppState, bootstrap
from sitetune.settings import Settings


def test_first_start_then_restart(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "state", _env_file=None)
    bootstrap(settings)
    printed = capsys.readouterr().err
    tokens = dict(re.findall(r"^\s+(clinical|pacs|ops): (\S+)$", printed, re.MULTILINE))
    assert set(tokens) == {"clinical", "pacs", "ops"}
    state = AppState.build(settings)
    assert state.tokens.role_of(tokens["ops"]) == "ops"
    names = {folder.name for folder in builtin_folders()}
    assert set(state.registry.names()) == names
    for name in names:
        version = state.registry.resolve(name)  # the production alias
        assert version.version == 1 and version.onnx_path.is_file()
        assert version.card.export["parity_max_abs_logit_diff"] < 1e-3
    bootstrap(settings)  # a restart: no new tokens, no new versions
    assert "generated bearer tokens" not in capsys.readouterr().err
    assert all(len(state.registry.versions(n)) == 1 for n in names)

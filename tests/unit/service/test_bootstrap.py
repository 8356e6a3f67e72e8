"""First start: one principal per role, tokens in a 0600 file (never printed), built-in
models registered once."""

from __future__ import annotations

import re

from sitetune.models.builtin import builtin_folders
from sitetune.service.state import AppState, bootstrap
from sitetune.settings import Settings


def test_first_start_then_restart(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "state", _env_file=None)
    bootstrap(settings)
    printed = capsys.readouterr().err
    path = settings.resolved_initial_tokens_file
    assert str(path) in printed and oct(path.stat().st_mode & 0o777) == "0o600"
    tokens = dict(re.findall(r"^(\w+) \(\w+\): (\S+)$", path.read_text(), re.MULTILINE))
    assert set(tokens) == {"clinical", "pacs", "ops"}
    assert not any(token in printed for token in tokens.values())
    state = AppState.build(settings)
    assert state.principals.authenticate(tokens["ops"]).name == "ops"
    names = {folder.name for folder in builtin_folders()}
    assert set(state.registry.names()) == names
    for name in names:
        version = state.registry.resolve(name)  # the production alias
        assert version.version == 1 and version.onnx_path.is_file()
        assert version.card.export["parity_max_abs_logit_diff"] < 1e-3
    path.unlink()  # as the operator is told to
    bootstrap(settings)  # a restart: no new tokens, no new versions
    assert "first start" not in capsys.readouterr().err and not path.exists()
    assert state.principals.count() == 3
    assert all(len(state.registry.versions(n)) == 1 for n in names)

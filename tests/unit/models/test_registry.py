"""Registry: immutable numbered versions, atomic alias moves, audit, rollback."""

from __future__ import annotations

import pytest

from sitetune.db import connect
from sitetune.errors import Conflict, NotFound
from sitetune.models.registry import PRODUCTION, Registry
from sitetune.training.base import BASE_CARDS


@pytest.fixture
def registry(tmp_path):
    return Registry(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights")
    return path


def _card(parent=None):
    card = next(iter(BASE_CARDS.values()))
    return card.model_copy(
        update={"provenance": card.provenance.model_copy(update={"parent": parent})}
    )


def test_versions_are_numbered_immutable_and_carry_their_files(registry, weights):
    v1 = registry.register(_card(), {"weights.pt": weights}, actor="ops", aliases=(PRODUCTION,))
    v2 = registry.register(_card(parent="lv-ct:1"), {"weights.pt": weights}, actor="ops")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.card.version == "2" and v2.parent == "lv-ct:1"
    assert v1.weights_path.read_bytes() == b"weights"
    assert (v1.folder / "card.json").exists()
    assert [v.version for v in registry.versions("lv-ct")] == [1, 2]
    assert registry.resolve("lv-ct").version == 1  # the production alias by default
    assert registry.resolve("lv-ct:2").version == 2
    assert not (registry.root / ".staging").exists() or not any(
        (registry.root / ".staging").iterdir()
    )


def test_promotion_rollback_and_audit(registry, weights):
    for _ in range(3):
        registry.register(_card(), {"weights.pt": weights}, actor="ops")
    registry.promote("lv-ct", 1, actor="alice", reason="first")
    registry.promote("lv-ct", 2, actor="alice", reason="better")
    registry.promote("lv-ct", 3, actor="bob", reason="even better")
    assert registry.rollback("lv-ct", actor="carol", reason="regression") == (3, 2)
    assert registry.rollback("lv-ct", actor="carol", reason="again") == (2, 1)
    with pytest.raises(Conflict):
        registry.rollback("lv-ct", actor="carol", reason="nothing left")
    assert registry.aliases("lv-ct") == {PRODUCTION: 1}
    entries = registry.audit("lv-ct")
    assert [e.action for e in entries[:3]] == ["rollback", "rollback", "promote"]
    assert (entries[2].actor, entries[2].from_version, entries[2].to_version) == ("bob", 2, 3)


def test_unknown_names_versions_and_aliases_are_404(registry, weights):
    registry.register(_card(), {"weights.pt": weights}, actor="ops")
    with pytest.raises(NotFound, match="no model named 'nope'"):
        registry.resolve("nope")
    with pytest.raises(NotFound, match="no version 9"):
        registry.resolve("lv-ct:9")
    with pytest.raises(NotFound, match="no alias 'production'"):
        registry.resolve("lv-ct")


def test_failed_registration_leaves_no_files(registry, tmp_path):
    with pytest.raises(FileNotFoundError):
        registry.register(_card(), {"weights.pt": tmp_path / "missing.pt"}, actor="ops")
    with pytest.raises(NotFound):
        registry.versions("lv-ct")
    assert not (registry.root / "lv-ct").exists()

"""Result store: atomic writes, retention."""

from __future__ import annotations

import datetime

import pytest

from sitetune.analysis.results import ResultStore
from sitetune.db import connect
from sitetune.errors import NotFound


@pytest.fixture
def store(tmp_path):
    return ResultStore(
        connect(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        tmp_path / "a",
        datetime.timedelta(hours=1),
    )


def test_result_files_and_summary(store):
    result_id = store.create("segment", {"x": 1}, {"mask.nii.gz": lambda p: p.write_bytes(b"m")})
    assert store.summary(result_id) == {"result_id": result_id, "x": 1}
    assert store.file(result_id, "mask.nii.gz", "mask").read_bytes() == b"m"
    with pytest.raises(NotFound, match="has no DICOM SEG"):
        store.file(result_id, "seg.dcm", "DICOM SEG")


def test_failed_writer_leaves_nothing(store):
    def broken(path):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.create("segment", {}, {"a": lambda p: p.write_bytes(b"ok"), "b": broken})
    assert [p.name for p in store.root.iterdir() if p.name != ".staging"] == []
    assert list((store.root / ".staging").iterdir()) == []


def test_expired_results_are_gone(store):
    result_id = store.create("segment", {}, {})
    store.retention = datetime.timedelta(seconds=-1)
    with pytest.raises(NotFound, match="retention"):
        store.summary(result_id)
    assert store.purge_expired() == 1
    assert not (store.root / result_id).exists()

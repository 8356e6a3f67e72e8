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


def test_recent_lists_the_newest_live_results_with_headlines(store):
    first = store.create("segment", {"model": {"name": "m", "version": "1"},
                                     "labels": {"a": {"volume_ml": 1.0}}}, {})  # fmt: skip
    second = store.create("thickness", {"ed": {"thickness_mm": {"median": 9.5}}}, {})
    listed = store.recent()
    assert [r["result_id"] for r in listed] == [second, first]
    assert listed[0]["ed_median_mm"] == 9.5 and listed[1]["labels"] == {"a": {"volume_ml": 1.0}}
    assert [r["result_id"] for r in store.recent(kind="segment")] == [first]
    assert len(store.recent(limit=1)) == 1
    store.retention = datetime.timedelta(seconds=-1)
    assert store.recent() == []


def test_the_image_of_a_result_and_an_honest_not_found(store):
    with_image = store.create("segment", {}, {"image.nii.gz": lambda p: p.write_bytes(b"i")})
    assert store.image(with_image).read_bytes() == b"i"
    without = store.create("segment", {}, {})
    with pytest.raises(NotFound, match="no stored image"):
        store.image(without)


def test_display_copy_is_int16_only_when_nothing_is_lost():
    import numpy as np

    from sitetune.analysis.results import display_copy
    from sitetune.imaging.volume import Volume

    hu = Volume(np.array([[[-1024.0, 0.0], [40.0, 3071.0]]], np.float32), np.eye(4))
    assert display_copy(hu).array.dtype == np.int16
    assert np.array_equal(display_copy(hu).array, hu.array)
    fractional = Volume(np.array([[[0.5, 1.0]]], np.float32), np.eye(4))
    assert display_copy(fractional).array.dtype == np.float32
    wide = Volume(np.array([[[0.0, 70000.0]]], np.float32), np.eye(4))
    assert display_copy(wide).array.dtype == np.float32

"""Series assembly, analyses and deliveries in the database (sitetune.pacs.store)."""

from __future__ import annotations

import datetime
import shutil

import pytest

from sitetune.db import make_engine
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.pacs.delivery import next_retry
from sitetune.pacs.routing import Group, PacsConfig, Route
from sitetune.pacs.store import PacsStore
from sitetune.pacs.stow import ReceivedPart, check_instance

NOW = datetime.timedelta(0)
CONFIG = PacsConfig(routes=(
    Route("study", "lv-ct", destinations=("pacs",), group=Group.STUDY, series_description="cine"),
    Route("single", "lv-ct", series_description="single"),
))  # fmt: skip


@pytest.fixture()
def store(tmp_path):
    return PacsStore(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


def _receive(store, volume, folder, description, study_uid=None, end=True):
    files = write_dicom_series(volume, folder, series_description=description,
                               study_uid=study_uid)  # fmt: skip
    return _send(store, files, end)


def _send(store, files, end=True):
    """Accept copies of ``files`` as one request's parts (accepting moves the part)."""
    checked = []
    for path in files:
        part = path.with_suffix(".part")
        shutil.copyfile(path, part)
        checked.append(check_instance(ReceivedPart(part, None)))
    series = store.accept(checked)
    if end:
        store.end_request(series)
    return checked[0].study_uid, series


def test_a_study_route_waits_for_every_series_then_takes_them_together(
    store, oblique_cardiac, tmp_path
):
    phase = oblique_cardiac.image.phase
    study, first = _receive(store, phase(0), tmp_path / "a", "cine 0%")
    _, receiving = _receive(store, phase(1), tmp_path / "b", "cine 25%", study, end=False)
    assert store.assemble(CONFIG, NOW) == [], "a series of the study is still arriving"
    store.end_request(receiving)
    assert store.assemble(CONFIG, datetime.timedelta(hours=1)) == [], "not settled yet"
    (analysis,) = store.assemble(CONFIG, NOW)
    assert analysis.route == "study" and set(analysis.series_uids) == first | receiving
    assert len(store.series_files(analysis)) == 2 * phase(0).shape[2]
    assert store.assemble(CONFIG, NOW) == [], "assembled once"


def test_series_routes_unrouted_series_and_resent_series(store, oblique_cardiac, tmp_path):
    image = oblique_cardiac.image.phase(0)
    _, single = _receive(store, image, tmp_path / "a", "single phase")
    _, other = _receive(store, image, tmp_path / "b", "scout")
    (analysis,) = store.assemble(CONFIG, NOW)
    assert analysis.route == "single"
    states = {s["series_uid"]: s["state"] for s in store.list_series()}
    assert states[next(iter(other))] == "unrouted"
    # the same instances sent again: the series is analysed again (no duplicate files)
    _send(store, sorted((tmp_path / "a").glob("*.dcm")))
    (again,) = store.assemble(CONFIG, NOW)
    assert again.id != analysis.id and again.series_uids == analysis.series_uids == list(single)
    assert len(store.series_files(again)) == image.shape[2]


def test_analysis_claim_finish_and_delivery_retries(store, oblique_cardiac, tmp_path):
    _receive(store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    (queued,) = store.assemble(CONFIG, NOW)
    running = store.claim("host:1")
    assert running.id == queued.id and running.state == "running"
    assert store.claim("host:2") is None, "one worker per analysis"
    done = store.finish(running.id, outputs=[{"name": "sr.dcm", "path": "/x"}],
                        summary={"ok": 1}, deliveries={"pacs": ["/x"]})  # fmt: skip
    assert done.state == "done" and done.summary == {"ok": 1}
    (due,) = store.due_deliveries()
    retry = next_retry(1, 2.0, 10.0)
    pending = store.delivery_attempted(due.id, "connection refused", retry)
    assert pending.state == "pending" and pending.attempts == 1
    assert store.due_deliveries() == [], "not due before its backoff"
    delivered = store.delivery_attempted(due.id, None, None)
    assert delivered.state == "delivered" and delivered.delivered_at
    gave_up = store.delivery_attempted(store.retry_delivery(due.id).id, "refused", None)
    assert gave_up.state == "failed"
    assert store.counts()["deliveries"] == {"failed": 1}


def test_a_dead_workers_analysis_is_queued_again_then_failed(store, oblique_cardiac, tmp_path):
    _receive(store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    store.assemble(CONFIG, NOW)
    for attempt in range(3):
        analysis = store.claim("host:1")
        assert analysis.attempts == attempt + 1
        assert store.recover(lambda worker: True) == [], "its worker is alive"
        store.recover(lambda worker: False)
    assert store.analysis(analysis.id).state == "failed"


def test_backoff_doubles_up_to_the_cap():
    assert [next_retry(n, 5, 30).total_seconds() for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]


def test_expired_files_go_unless_a_delivery_still_needs_them(store, oblique_cardiac, tmp_path):
    _receive(store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    _, scout = _receive(store, oblique_cardiac.image.phase(0), tmp_path / "b", "scout")
    (analysis,) = store.assemble(CONFIG, NOW)
    store.claim("host:1")
    outputs = store.output_folder(analysis.id)
    outputs.mkdir(parents=True)
    (outputs / "sr.dcm").write_bytes(b"sr")
    store.finish(analysis.id, outputs=[], deliveries={"pacs": [str(outputs / "sr.dcm")]})
    instances = store.series_folder(analysis.study_uid, analysis.series_uids[0])
    scout_folder = store.series_folder(analysis.study_uid, next(iter(scout)))
    assert store.purge_expired(datetime.timedelta(hours=1)) == 0, "nothing is old enough"
    assert store.purge_expired(NOW) == 1, "only the unrouted series: a delivery is pending"
    assert not scout_folder.exists() and instances.exists() and outputs.exists()
    (delivery,) = store.due_deliveries()
    store.delivery_attempted(delivery.id, None, None)
    assert store.purge_expired(NOW) == 2
    assert not instances.exists() and not outputs.exists()
    assert store.analysis(analysis.id).state == "done", "rows stay"

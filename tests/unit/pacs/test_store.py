"""Series assembly, analyses and deliveries in the database (sitetune.pacs.store)."""

from __future__ import annotations

import datetime
import shutil

import pytest
from sqlalchemy.orm import Session

from sitetune.db import connect, utcnow
from sitetune.dicomweb import next_retry
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.pacs.routing import Group, PacsConfig, Route
from sitetune.pacs.store import PacsAnalysisRow, PacsDeliveryRow, PacsStore
from sitetune.pacs.stow import ReceivedPart, check_instance

NOW = datetime.timedelta(0)
CONFIG = PacsConfig(routes=(
    Route("study", "lv-ct", destinations=("pacs",), group=Group.STUDY, series_description="cine"),
    Route("single", "lv-ct", series_description="single"),
))  # fmt: skip


@pytest.fixture()
def store(tmp_path):
    return PacsStore(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "artifacts")


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
    done = store.finish(running.id, "host:1", outputs=[{"name": "sr.dcm", "path": "/x"}],
                        summary={"ok": 1}, deliveries={"pacs": ["/x"]})  # fmt: skip
    assert done.state == "done" and done.summary == {"ok": 1}
    sending = store.claim_delivery("host:1")
    assert sending.state == "sending" and store.claim_delivery("host:2") is None
    pending = store.delivery_attempted(sending.id, "host:1", "connection refused")
    assert pending.state == "pending" and pending.attempts == 1
    assert store.claim_delivery("host:1") is None, "not due before its backoff"
    with Session(store.engine) as s, s.begin():  # the backoff has passed
        s.get(PacsDeliveryRow, sending.id).next_attempt_at = utcnow()
    again = store.claim_delivery("host:2")
    delivered = store.delivery_attempted(again.id, "host:2", None)
    assert delivered.state == "delivered" and delivered.delivered_at and delivered.attempts == 2
    retried = store.retry_delivery(again.id)
    assert retried.state == "pending" and retried.attempts == 0, "an operator's fresh start"
    store.claim_delivery("host:1")
    gave_up = store.delivery_attempted(again.id, "host:1", "refused", permanent=True)
    assert gave_up.state == "failed" and gave_up.last_error == "refused"
    assert store.counts()["deliveries"] == {"failed": 1}


def test_an_analysis_outcome_is_written_only_by_its_holder(store, oblique_cardiac, tmp_path):
    _receive(store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    store.assemble(CONFIG, NOW)
    analysis = store.claim("old-host:1")
    store.analyses.lease = datetime.timedelta(seconds=-1)  # its lease is over
    assert store.recover(alive=lambda worker: True) == [analysis.id]
    with Session(store.engine) as s, s.begin():
        s.get(PacsAnalysisRow, analysis.id).next_attempt_at = utcnow()
    taken = store.claim("new-host:7")
    assert taken.id == analysis.id and taken.attempts == 2
    late = store.finish(analysis.id, "old-host:1", summary={"from": "old"}, deliveries={"x": []})
    assert late.state == "running" and late.summary is None and late.worker == "new-host:7"
    assert store.list_deliveries() == [], "the late outcome queued nothing"
    assert store.finish(analysis.id, "new-host:7", summary={"ok": 1}).state == "done"


def test_a_dead_workers_analysis_is_queued_again_then_failed(store, oblique_cardiac, tmp_path):
    _receive(store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    store.assemble(CONFIG, NOW)
    for attempt in range(3):
        with Session(store.engine) as s, s.begin():  # skip the backoff
            for row in s.query(PacsAnalysisRow):
                row.next_attempt_at = None
        analysis = store.claim("host:1")
        assert analysis.attempts == attempt + 1
        assert store.recover(lambda worker: True) == [], "its worker is alive"
        assert {s["state"] for s in store.list_series()} == {"analysing"}
        store.recover(lambda worker: False)
    failed = store.analysis(analysis.id)
    assert failed.state == "failed" and "stopped during attempt 3" in failed.error
    assert {s["state"] for s in store.list_series()} == {"failed"}


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
    store.finish(analysis.id, "host:1", outputs=[],
                 deliveries={"pacs": [str(outputs / "sr.dcm")]})  # fmt: skip
    instances = store.series_folder(analysis.study_uid, analysis.series_uids[0])
    scout_folder = store.series_folder(analysis.study_uid, next(iter(scout)))
    assert store.purge_expired(datetime.timedelta(hours=1)) == 0, "nothing is old enough"
    assert store.purge_expired(NOW) == 1, "only the unrouted series: a delivery is pending"
    assert not scout_folder.exists() and instances.exists() and outputs.exists()
    delivery = store.claim_delivery("host:1")
    store.delivery_attempted(delivery.id, "host:1", None)
    assert store.purge_expired(NOW) == 2
    assert not instances.exists() and not outputs.exists()
    assert store.analysis(analysis.id).state == "done", "rows stay"

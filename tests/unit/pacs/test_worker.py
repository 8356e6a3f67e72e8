"""The PACS worker's loop on the durable-work primitive, with the committed lv-ct model
in a real ONNX Runtime session and a real SQLite database: an analysis whose worker
stopped (another host: its pid cannot be checked) is taken over once its lease runs out,
and poison analyses end ``failed`` with the error while the loop goes on."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from sitetune.models.builtin import BUILTIN_DIR
from sitetune.models.card import ModelCard
from sitetune.models.importing import register_weights
from sitetune.models.registry import PRODUCTION
from sitetune.pacs.routing import PacsConfig, Route
from sitetune.pacs.store import PacsAnalysisRow
from sitetune.pacs.worker import PacsWorker
from sitetune.settings import Settings
from sitetune.stores import Stores
from sitetune.work import Backoff
from tests.unit.pacs.test_store import _receive

_NOW = datetime.timedelta(0)  # settled at once
CONFIG = PacsConfig(routes=(Route("single", "lv-ct", series_description="single"),))


@pytest.fixture()
def settings(tmp_path) -> Settings:
    settings = Settings(data_dir=tmp_path / "state", _env_file=None, lease_seconds=1.0,
                        pacs_settle_seconds=0.0, engine="onnxruntime", threads=1)  # fmt: skip
    settings.prepare()
    card = ModelCard.model_validate_json((BUILTIN_DIR / "lv-ct" / "card.json").read_text())
    register_weights(Stores.from_settings(settings).registry, card,
                     BUILTIN_DIR / "lv-ct" / "weights.pt", actor="tests", reason="built-in",
                     aliases=(PRODUCTION,))  # fmt: skip
    return settings


def _worker(settings: Settings, identity: str) -> PacsWorker:
    worker = PacsWorker(settings, CONFIG)
    worker.identity = identity  # as on another pod: the host name differs
    return worker


def test_an_analysis_whose_worker_stopped_is_taken_over_by_another_host(
    settings, oblique_cardiac, tmp_path
):
    old = _worker(settings, "sitetune-pacs-7d9f:12")
    new = _worker(settings, "sitetune-pacs-5c2a:8")
    _receive(old.store, oblique_cardiac.image.phase(0), tmp_path / "a", "single")
    old._assemble()
    held = old.store.claim(old.identity)  # ... and its pod is gone: no more heartbeats
    assert held is not None
    new.run_once()
    still = new.store.analysis(held.id)
    assert still.state == "running" and still.worker == old.identity, "its lease is fresh"
    time.sleep(1.2)  # the lease (1 s) runs out
    new.run_once()
    done = new.store.analysis(held.id)
    assert done.state == "done" and done.worker == new.identity and done.attempts == 2
    assert done.summary["thickness"]["phases"][0]["thickness_mm"]["mean"] > 0
    assert {s["state"] for s in new.store.list_series()} == {"analysed"}
    late = old.store.finish(held.id, old.identity, error="late")
    assert late.state == "done" and late.error is None, "the old holder cannot overwrite it"


def test_poison_analyses_fail_with_the_error_and_the_loop_goes_on(
    settings, oblique_cardiac, tmp_path, monkeypatch
):
    worker = _worker(settings, "sitetune-pacs-1:1")
    worker.store.analyses.backoff = Backoff(3, base_seconds=0.0, max_seconds=0.0)
    image = oblique_cardiac.image.phase(0)
    _receive(worker.store, image, tmp_path / "corrupt", "single")
    (corrupt,) = worker.store.assemble(CONFIG, settle=_NOW)
    with Session(worker.store.engine) as s, s.begin():  # a row no code can read back
        s.execute(update(PacsAnalysisRow).where(PacsAnalysisRow.id == corrupt.id)
                  .values(series_uids="{not json"))  # fmt: skip
    _receive(worker.store, image, tmp_path / "raises", "single")
    (raising,) = worker.store.assemble(CONFIG, settle=_NOW)
    _receive(worker.store, image, tmp_path / "good", "single")
    (good,) = worker.store.assemble(CONFIG, settle=_NOW)

    import sitetune.pacs.worker as module

    real = module.analyse

    def analyse(files, *args, **kwargs):
        if raising.series_uids[0] in str(files[0]):  # instances lie in their series' folder
            raise RuntimeError("the engine crashed on this series")
        return real(files, *args, **kwargs)

    monkeypatch.setattr(module, "analyse", analyse)
    loop = threading.Thread(target=worker.serve_forever, kwargs={"poll_seconds": 0.05})
    loop.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = {a: worker.store.analysis(a).state for a in (raising.id, good.id)}
            if states == {raising.id: "failed", good.id: "done"} and _state(worker, corrupt.id):
                break
            time.sleep(0.2)
        assert loop.is_alive(), "nothing an analysis does stops the loop"
    finally:
        worker.stopping.set()
        loop.join(30)
    failed = worker.store.analysis(raising.id)
    assert failed.attempts == 3 and "the engine crashed on this series" in failed.error
    assert worker.store.analysis(good.id).state == "done"
    with Session(worker.store.engine) as s:
        row = s.get(PacsAnalysisRow, corrupt.id)
        assert row.state == "failed" and row.attempts == 3 and "stopped" in row.error


def _state(worker: PacsWorker, analysis_id: str) -> bool:
    with Session(worker.store.engine) as s:
        return s.get(PacsAnalysisRow, analysis_id).state == "failed"

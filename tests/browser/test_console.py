"""The ops console (`GET /console`) in a real headless Chromium against the real service.

Chromium is Debian's (``chromium``), driven by playwright through its executable (playwright
cannot download a browser here). Each test works as an operator or a clinician would: sign in
with a token, follow links, fill forms; then checks the page (key elements, the service's
own state) and its screenshot (not blank; the viewer's overlay really coloured). The
screenshots are artefacts of the run, under ``$SITETUNE_TEST_ARTIFACTS/console``
(default ``build/test-artifacts/console``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sitetune.imaging.nifti import save_nifti
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset
from sitetune.service.routes_console import DIST
from tests.conftest import zip_tree
from tests.server import TOKENS

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed"),
    pytest.mark.skipif(
        not (DIST / "index.html").is_file(), reason="console not built (`make console`)"
    ),
]
ARTIFACTS = Path(os.environ.get("SITETUNE_TEST_ARTIFACTS", "build/test-artifacts")) / "console"
# SwiftShader gives headless Chromium the WebGL2 that niivue draws with (no GPU here).
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--ignore-gpu-blocklist"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab (its own sessionStorage: signed out) on the console; page errors fail."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.set_default_timeout(30_000)
    tab.goto(f"{server.base_url}/console")
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page, role: str) -> None:
    page.get_by_test_id("token").fill(TOKENS[role])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_test_id("who").get_by_text(role).wait_for()


def screenshot(page, name: str, locator=None):
    """Save the page (or one element) under the artefacts folder; returns it as RGB."""
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = locator if locator is not None else page
    png = target.screenshot(path=str(ARTIFACTS / f"{name}.png"), **(
        {"full_page": True} if locator is None else {}))  # fmt: skip
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def assert_not_blank(pixels: np.ndarray) -> None:
    grey = pixels.mean(axis=2)
    assert grey.std() > 10, "the screenshot is (nearly) one colour"


def coloured_share(pixels: np.ndarray, rule) -> float:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float(rule(r, g, b).mean())


def myocardium_green(r, g, b):  # label 2 in the viewer's label colours, blended on grey
    return (g - r > 50) & (g - b > 50)


def warm(r, g, b):  # niivue's "warm" colour map: red to yellow, little blue
    return (r > 150) & (g > 60) & (r - b > 90)


@pytest.fixture(scope="module")
def site_zip(tmp_path_factory) -> Path:
    """Three site-B cardiac cases (2 phases, labelled at ED and ES) as an MSD zip."""
    root = tmp_path_factory.mktemp("console-site")
    spec = DatasetSpec("lv-ct", "B", cases=3, phases=2, label_phases="ed_es", seed=21)
    return zip_tree(write_msd_dataset(spec, root / "ds", workers=2), root / "site.zip")


@pytest.fixture(scope="module")
def heart_nifti(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("console-heart") / "heart.nii.gz"
    save_nifti(cardiac_phantom(4, "B", phases=2).image, path)
    return path


def test_a_wrong_token_gets_a_clear_message_and_no_sections(page):
    page.get_by_test_id("token").fill("not-a-token")
    page.get_by_role("button", name="Sign in", exact=True).click()
    error = page.get_by_test_id("error")
    error.wait_for()
    assert "refused this token" in error.inner_text()
    assert "invalid_token" in error.inner_text()
    assert page.locator("#nav a").count() == 0
    assert_not_blank(screenshot(page, "wrong-token"))


def test_ops_sees_models_versions_lineage_and_audit(page):
    sign_in(page, "ops")
    models = page.get_by_test_id("models")
    models.wait_for()
    names = models.locator("tbody tr td:first-child").all_inner_texts()
    assert {"lv-ct", "flair-lesion"} <= set(names)
    page.get_by_role("link", name="lv-ct").click()
    page.get_by_test_id("lineage").wait_for()
    assert page.get_by_test_id("versions").locator("tbody tr").count() >= 1
    assert page.get_by_test_id("production").inner_text().startswith("v")
    assert_not_blank(screenshot(page, "model"))
    page.get_by_role("link", name="Audit log").click()
    audit = page.get_by_test_id("audit")
    audit.wait_for()
    assert "built-in base model" in audit.inner_text()


def test_a_clinical_token_sees_results_only(page, server):
    sign_in(page, "clinical")
    assert page.locator("#nav a").all_inner_texts() == ["Results"]
    page.get_by_test_id("results").wait_for()
    page.goto(f"{server.base_url}/console#/models")
    assert "do not include this section" in page.get_by_test_id("error").inner_text()


def test_a_pacs_token_sees_the_pacs_tables_only(page):
    sign_in(page, "pacs")
    assert page.locator("#nav a").all_inner_texts() == ["PACS"]
    for table in ("deliveries", "analyses", "series"):
        page.get_by_test_id(table).wait_for()
    assert page.get_by_role("button", name="Retry now").count() == 0  # retry is for ops


def test_submit_a_job_watch_it_finish_and_promote_it(page, server, site_zip):
    with server.client("ops") as ops:
        production_before = ops.get("/v1/models/lv-ct").json()["aliases"]["production"]
    sign_in(page, "ops")
    page.get_by_role("link", name="Jobs").click()
    form = page.get_by_test_id("submit-job")
    form.wait_for()
    page.get_by_test_id("dataset").set_input_files(str(site_zip))
    page.get_by_test_id("base").select_option("lv-ct")
    page.get_by_test_id("epochs").fill("2")
    page.get_by_test_id("iterations").fill("2")
    form.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/console#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    page.get_by_test_id("state").get_by_text("succeeded").wait_for(timeout=400_000)
    page.get_by_test_id("job-result").wait_for()
    result = page.get_by_test_id("job-result").inner_text()
    assert "Kept epoch" in result and "Training estimated" in result
    assert page.get_by_test_id("loss-chart").locator("circle").count() == 2
    assert page.get_by_test_id("dice-chart").locator("circle").count() == 2
    page.get_by_test_id("log").get_by_text("kept the weights").wait_for()
    assert_not_blank(screenshot(page, "job"))

    with server.client("ops") as ops:
        job = ops.get(f"/v1/jobs/{job_id}").json()
    version = int(job["result"]["version"])
    page.get_by_test_id("review").click()
    page.get_by_test_id("gate").wait_for()
    per_case = page.get_by_test_id("per-case")
    held_out = job["result"]["evaluation"]["held_out_cases"]
    assert per_case.locator("tbody tr").count() == len(held_out)
    assert set(per_case.locator("tbody td:first-child").all_inner_texts()) == set(held_out)
    passed = job["result"]["evaluation"]["gate"]["passed"]
    assert ("Gate passed" if passed else "Gate refuses") in page.get_by_test_id("gate").inner_text()
    assert_not_blank(screenshot(page, "promotion"))
    page.get_by_test_id("promote-reason").fill("console test: site fine-tune reviewed")
    page.get_by_test_id("promote").click()
    try:
        if passed:
            page.get_by_test_id("promoted").wait_for()
        else:  # the gate refused: force is offered, behind a typed confirmation
            assert "promotion_refused" in page.get_by_test_id("error").inner_text()
            page.get_by_test_id("force-confirm").fill("FORCE")
            page.get_by_test_id("force").click()
            page.get_by_test_id("promoted").wait_for()
        with server.client("ops") as ops:
            assert ops.get("/v1/models/lv-ct").json()["aliases"]["production"] == version
            entry = ops.get("/v1/audit").json()["entries"][0]
        assert entry["to_version"] == version and "console test" in entry["reason"]
    finally:  # put production back for the rest of the session, through the console
        page.goto(f"{server.base_url}/console#/models/lv-ct")
        page.get_by_test_id("rollback-reason").fill("console test done")
        page.get_by_role("button", name="Roll production back").click()
        page.get_by_test_id("production").get_by_text(f"v{production_before}").wait_for()


def test_force_needs_the_gate_refusal_and_a_typed_confirmation(page, server):
    with server.client("ops") as ops:
        production = ops.get("/v1/models/lv-ct").json()["aliases"]["production"]
        refused = {"passed": False, "reason": "candidate mean Dice 0.5 is below 0.9",
                   "metric": "mean_dice", "candidate": 0.5, "production": 0.9,
                   "margin": 0.0}  # fmt: skip
        evaluation = {"held_out_cases": ["case-009"], "training_cases": ["case-001"],
                      "production_version": f"lv-ct:{production}", "gate": refused,
                      "candidate": {"dice": {"LV myocardium": 0.5}, "mean_dice": 0.5},
                      "production": {"dice": {"LV myocardium": 0.9}, "mean_dice": 0.9}}  # fmt: skip
        registered = server.register_production_copy(
            ops, "lv-ct", metrics={"site_evaluation": evaluation}
        )
        assert registered.status_code == 201, registered.text
        version = int(registered.json()["version"])
    sign_in(page, "ops")
    page.goto(f"{server.base_url}/console#/promote/lv-ct/{version}")
    assert "Gate refuses" in page.get_by_test_id("gate").inner_text()
    page.get_by_test_id("promote-reason").fill("console test: forced")
    page.get_by_test_id("promote").click()
    assert "promotion_refused" in page.get_by_test_id("error").inner_text()
    force = page.get_by_test_id("force")
    assert force.is_disabled()
    page.get_by_test_id("force-confirm").fill("force")  # not the word asked for
    assert force.is_disabled()
    with server.client("ops") as ops:
        assert ops.get("/v1/models/lv-ct").json()["aliases"]["production"] == production
    page.get_by_test_id("force-confirm").fill("FORCE")
    force.click()
    page.get_by_test_id("promoted").wait_for()
    with server.client("ops") as ops:
        try:
            assert ops.get("/v1/models/lv-ct").json()["aliases"]["production"] == version
            entry = ops.get("/v1/audit").json()["entries"][0]
            assert "forced past the gate" in entry["reason"]
        finally:
            ops.post("/v1/models/lv-ct/rollback", json={"reason": "console test done"})


def test_a_result_shows_the_image_with_the_mask_the_thickness_map_and_the_bullseye(
    page, server, heart_nifti
):
    sign_in(page, "clinical")
    page.get_by_test_id("analyse-file").set_input_files(str(heart_nifti))
    page.get_by_test_id("analyse-task").select_option("thickness")
    page.get_by_role("button", name="Analyse").click()
    page.wait_for_url("**/console#/results/*", timeout=300_000)
    result_id = page.url.rsplit("/", 1)[1]
    viewer = page.get_by_test_id("viewer")
    page.wait_for_selector("canvas[data-loaded=mask]", timeout=60_000)
    page.get_by_test_id("bullseye").wait_for()
    assert page.get_by_test_id("segments").locator("tbody tr").count() == 17
    page.wait_for_timeout(500)  # one more frame drawn
    with_mask = screenshot(page, "result-mask", viewer)
    assert_not_blank(with_mask)
    assert coloured_share(with_mask, myocardium_green) > 0.01, "no myocardium colour in the viewer"
    assert_not_blank(screenshot(page, "result"))

    page.get_by_test_id("overlay").select_option("thickness")
    page.wait_for_selector("canvas[data-loaded=thickness]", timeout=60_000)
    page.wait_for_timeout(500)
    with_map = screenshot(page, "result-thickness", viewer)
    assert coloured_share(with_map, warm) > 0.01, "no thickness colours in the viewer"
    assert coloured_share(with_map, myocardium_green) < 0.001, "the mask is still shown"
    frames = page.get_by_test_id("frame").locator("option").all_inner_texts()
    assert frames == ["phase 0 (ED)", "phase 1 (ES)"]

    bullseye = screenshot(page, "bullseye", page.get_by_test_id("bullseye"))
    assert_not_blank(bullseye)
    with server.client("clinical") as clinical:
        listed = clinical.get("/v1/results", params={"kind": "thickness"}).json()["results"]
    assert result_id in [r["result_id"] for r in listed]


def test_the_console_page_is_static_and_locked_down(server):
    import httpx

    response = httpx.get(f"{server.base_url}/console")  # no token: the page holds no data
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "https://" not in response.text  # nothing from a CDN
    script = httpx.get(f"{server.base_url}/console/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for bad in ("routes_console.py", ".gitignore", "missing.js", "%2E%2E%2Fapp.py"):
        answer = httpx.get(f"{server.base_url}/console/{bad}")
        assert answer.status_code == 404, bad
        assert json.loads(answer.text)["error"]["code"] == "route_not_found"


@pytest.fixture(scope="module")
def idp(server):
    from tests.browser.idp import FakeIdp
    from tests.server import CONSOLE_CLIENT_ID, IDP_PORT

    with FakeIdp(IDP_PORT, CONSOLE_CLIENT_ID, server.jwt) as provider:
        yield provider


def test_sign_in_through_the_identity_provider_with_pkce(page, server, idp):
    config = json.loads(page.evaluate("fetch('/console/config').then(r => r.text())"))
    assert config["oidc"]["client_id"] == "sitetune-console"
    page.get_by_test_id("oidc-sign-in").click()
    page.get_by_test_id("who").get_by_text("dr.console").wait_for()
    assert "?code=" not in page.url  # the code is not left in the address bar or history
    assert idp.exchanges[-1]["granted"] and idp.exchanges[-1]["form"]["code_verifier"]
    page.get_by_test_id("models").wait_for()  # the JWT's roles: ops
    assert_not_blank(screenshot(page, "oidc-signed-in"))


def test_a_declined_or_forged_sign_in_is_explained(page, server, idp):
    idp.refuse = True
    try:
        page.get_by_test_id("oidc-sign-in").click()
        assert "the user declined" in page.get_by_test_id("error").inner_text()
    finally:
        idp.refuse = False
    page.goto(f"{server.base_url}/console?code=stolen&state=guess")  # not started in this tab
    assert "does not belong to a sign-in started" in page.get_by_test_id("error").inner_text()
    assert page.locator("#nav a").count() == 0

"""Every file of pydicom's test files and of pydicom-data, posted alone to each inference
route of the real server, and every folder of them that forms a series, posted as a zip:
200 with outputs that can be fetched, or a 4xx whose code and message name the problem.
Never a 5xx.

The tally (status and code per route) is written to ``corpus.md`` in the test's
temporary folder and printed; README's "DICOM conformance" table comes from it.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROUTES = ("/v1/segment", "/v1/thickness", "/v1/lesion-volume")


def corpus_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    files = {Path(f) for f in get_testdata_files()}
    try:
        import data_store  # pydicom-data's package

        files |= set((Path(data_store.__file__).parent / "data").iterdir())
    except ImportError:
        pass
    return sorted(f for f in files if f.is_file())


def series_folders(files: list[Path]) -> list[Path]:
    """Folders of the corpus holding several DICOM files (pydicom's DICOMDIR trees)."""
    parents = Counter(f.parent for f in files if f.suffix in ("", ".dcm"))
    return sorted(p for p, n in parents.items() if n > 1 and p.name != "test_files")


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                z.write(path, path.name)
    return buffer.getvalue()


def check_answer(client, route: str, name: str, response) -> tuple[int, str]:
    """The answer is a 200 whose outputs can be fetched, or a typed 4xx."""
    assert response.status_code < 500, f"{route} {name}: {response.status_code} {response.text}"
    body = response.json()
    if response.status_code != 200:
        error = body["error"]
        assert error["code"] and len(error["message"]) > 10, (route, name, body)
        return response.status_code, error["code"]
    for output, state in body["outputs"].items():
        if output == "summary":
            continue
        got = client.get(state["url"]) if state["available"] else None
        if got is not None:
            assert got.status_code == 200, (route, name, output, got.text)
    return 200, "ok"


def test_every_corpus_file_and_series_gets_200_or_a_typed_4xx(server, tmp_path):
    files = corpus_files()
    folders = series_folders(files)
    assert len(files) > 200, "pydicom's test files (and pydicom-data) are missing"
    tally: dict[str, Counter] = {route: Counter() for route in ROUTES}
    examples: dict[tuple, list[str]] = {}
    with server.client("clinical") as client:
        for path in files:
            data = path.read_bytes()
            for route in ROUTES:
                response = client.post(route, files={"file": (path.name, data)})
                answer = check_answer(client, route, path.name, response)
                tally[route][answer] += 1
                examples.setdefault((route, *answer), []).append(path.name)
        for folder in folders:
            data = zipped(folder)
            for route in ROUTES:
                response = client.post(route, files={"file": (f"{folder.name}.zip", data)})
                answer = check_answer(client, route, folder.name, response)
                tally[route][answer] += 1
                examples.setdefault((route, *answer), []).append(f"{folder.name}/")
    lines = [
        f"{len(files)} files and {len(folders)} series folders, each posted to every route",
        "",
        "| route | status | code | inputs | for example |",
        "| --- | --- | --- | --- | --- |",
    ]
    for route, counts in tally.items():
        for (status, code), n in sorted(counts.items()):
            some = ", ".join(examples[(route, status, code)][:3])
            lines.append(f"| `{route}` | {status} | `{code}` | {n} | {some} |")
    report = "\n".join(lines)
    (tmp_path / "corpus.md").write_text(report)
    if os.environ.get("SITETUNE_CORPUS_REPORT"):
        Path(os.environ["SITETUNE_CORPUS_REPORT"]).write_text(report)
    print(report)
    assert sum(sum(c.values()) for c in tally.values()) == 3 * (len(files) + len(folders))


def test_every_corpus_series_both_load_lies_on_dcm2niix_grid(tmp_path):
    """Geometry of real files judged by dcm2niix: each file or series folder the loader
    reads (whether or not a model would accept it) and dcm2niix converts has the same
    voxel-centre lattice, up to axis order and flips (<= 1e-3 mm)."""
    import nibabel as nib

    from sitetune.errors import SitetuneError
    from sitetune.imaging.load import load_volume
    from tests.conformance import judges

    judges.require("dcm2niix")
    files = corpus_files()
    compared, differ = 0, {}
    for n, source in enumerate([*files, *series_folders(files)]):
        try:
            volume = load_volume(source, decode=False)
        except SitetuneError:
            continue
        ours = judges.voxel_lattice(volume.affine, volume.shape)
        if source.is_file():
            (tmp_path / f"in{n}").mkdir()
            (tmp_path / f"in{n}" / source.name).write_bytes(source.read_bytes())
            source = tmp_path / f"in{n}"
        try:
            outputs = judges.dcm2niix(source, tmp_path / f"out{n}")
        except AssertionError:
            continue  # dcm2niix cannot convert it: nothing to compare against
        images = [nib.load(o) for o in outputs]
        diffs = [
            judges.same_lattice(ours, judges.voxel_lattice(image.affine, image.shape))
            for image in images
            if sorted(image.shape[:3]) == sorted(volume.shape)
        ]
        diffs = [d for d in diffs if d is not None]
        if not diffs:
            continue
        compared += 1
        if min(diffs) > 1e-3:
            # dcm2niix corrects gantry tilt on its own terms (it rescales a tilted single
            # slice); such a file must be tilted, and ITK must read our grid
            itk = judges.same_lattice(ours, judges.voxel_lattice(*judges.itk_affine(source)))
            tilt = float(volume.dicom.datasets[0].get("GantryDetectorTilt") or 0.0)
            if tilt == 0.0 or itk is None or itk > 1e-2:  # ITK renormalises the cosines
                differ[source.name] = (min(diffs), itk, tilt)
    assert compared >= 20, f"only {compared} corpus inputs compared"
    assert differ == {}, f"grids differ from dcm2niix's (mm, ITK's, gantry tilt): {differ}"

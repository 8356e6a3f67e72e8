"""STOW-RS parsing and the Store Instances Response (sitetune.pacs.stow)."""

from __future__ import annotations

import asyncio
import random

import pydicom
import pytest

from sitetune.dicomweb import multipart_body
from sitetune.errors import InputError, PayloadTooLarge, UnsupportedInput
from sitetune.imaging.dicom_write import write_dicom_series
from sitetune.pacs.stow import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    ReceivedPart,
    boundary_of,
    check_instance,
    receive_parts,
    response_status,
    store_response,
)


@pytest.fixture(scope="module")
def instances(small_cardiac_3d, tmp_path_factory):
    return write_dicom_series(small_cardiac_3d.image, tmp_path_factory.mktemp("dcm"))[:4]


def _receive(body: bytes, boundary: bytes, folder, max_bytes=1 << 30, pieces=None):
    async def chunks():
        if pieces is None:
            yield body
            return
        cuts = sorted(random.Random(0).sample(range(1, len(body)), pieces))
        for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
            yield body[start:end]

    return asyncio.run(receive_parts(chunks(), boundary, folder, max_bytes))


@pytest.mark.parametrize(
    "header",
    [
        'multipart/related; type="application/dicom"; boundary=abc-1',
        'multipart/related; type=application/dicom; boundary="abc-1"',
        "Multipart/Related; boundary=abc-1",  # no type: application/dicom
    ],
)
def test_boundary_in_any_form(header):
    assert boundary_of(header) == b"abc-1"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, UnsupportedInput),
        ("application/dicom", UnsupportedInput),
        ('multipart/related; type="application/dicom+json"; boundary=x', UnsupportedInput),
        ('multipart/related; type="application/dicom"', InputError),
    ],
)
def test_unsupported_or_malformed_content_types(header, error):
    with pytest.raises(error) as raised:
        boundary_of(header)
    assert raised.value.status == (415 if error is UnsupportedInput else 400)


def test_parts_round_trip_whatever_the_chunking(instances, tmp_path):
    body = b"".join(multipart_body(instances, "sep-42"))
    for pieces in (None, 7, 300):
        folder = tmp_path / f"p{pieces}"
        folder.mkdir()
        parts = _receive(body, b"sep-42", folder, pieces=pieces)
        assert [p.path.read_bytes() for p in parts] == [f.read_bytes() for f in instances]
        assert {p.content_type for p in parts} == {"application/dicom"}


def test_a_truncated_body_or_too_large_a_body_is_refused(instances, tmp_path):
    body = b"".join(multipart_body(instances, "sep"))
    with pytest.raises(InputError, match="closing boundary"):
        _receive(body[:-20], b"sep", tmp_path)
    with pytest.raises(PayloadTooLarge):
        _receive(body, b"sep", tmp_path, max_bytes=len(body) // 2)


def test_check_names_corrupt_instances_and_keeps_good_ones(instances, tmp_path):
    good = check_instance(ReceivedPart(instances[0], "application/dicom"))
    assert good.failure is None and good.dataset is not None and "PixelData" not in good.dataset
    ds = pydicom.dcmread(instances[0])
    assert (good.sop_instance_uid, good.series_uid) == (ds.SOPInstanceUID, ds.SeriesInstanceUID)

    cut = tmp_path / "cut.dcm"
    cut.write_bytes(instances[1].read_bytes()[:-500])
    truncated = check_instance(ReceivedPart(cut, None))
    assert truncated.failure == CANNOT_UNDERSTAND and "pixel data" in truncated.reason
    assert truncated.sop_instance_uid == pydicom.dcmread(instances[1]).SOPInstanceUID

    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello, not DICOM")
    assert check_instance(ReceivedPart(junk, None)).failure == CANNOT_UNDERSTAND

    other = check_instance(ReceivedPart(instances[2], None), study_uid="1.2.3")
    assert other.failure == DATASET_DOES_NOT_MATCH


def test_store_response_lists_every_instance_once(instances, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"junk")
    checked = [check_instance(ReceivedPart(p, None)) for p in instances[:2]]
    failed = check_instance(ReceivedPart(junk, None))
    body = store_response([*checked, failed], "http://host/dicomweb")
    referenced = body["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in referenced] == [c.sop_instance_uid for c in checked]
    assert referenced[0]["00081190"]["Value"][0].startswith("http://host/dicomweb/studies/")
    (item,) = body["00081198"]["Value"]
    assert item["00081197"] == {"vr": "US", "Value": [CANNOT_UNDERSTAND]}
    assert "Value" not in item["00081155"]  # unknown UID: present, empty
    assert response_status(checked) == 200
    assert response_status([*checked, failed]) == 202
    assert response_status([failed]) == 409

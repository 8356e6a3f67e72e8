"""Hostile and broken zips fail with typed errors before anything is inflated or written."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest

from sitetune.errors import PayloadTooLarge, UnsafeArchive, UnsupportedInput
from sitetune.imaging.archive import ZipLimits, extract_zip, iter_zip_files


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.parametrize(
    "name",
    ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "C:/windows/x.dcm", "a\\..\\b.dcm"],
)
def test_escaping_names_are_refused_and_nothing_is_written(tmp_path, name):
    archive = _zip(tmp_path / "evil.zip", {"ok.dcm": b"x", name: b"payload"})
    before = _tree(tmp_path)
    with pytest.raises(UnsafeArchive) as err:
        extract_zip(archive, tmp_path / "out")
    assert err.value.status == 400 and repr(name)[1:-1] in err.value.message
    assert _tree(tmp_path) == before  # the destination was removed again, nothing outside
    with pytest.raises(UnsafeArchive):
        list(iter_zip_files(archive))


def test_symlink_members_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        list(iter_zip_files(archive))


def test_zip_bomb_is_refused_by_its_ratio_before_inflating(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(64 << 20)})
    assert archive.stat().st_size < 200_000  # tiny on disk, 64 MiB inside
    with pytest.raises(PayloadTooLarge, match="zip bomb") as err:
        list(iter_zip_files(archive))
    assert err.value.status == 413


def test_total_size_and_member_count_limits(tmp_path):
    rng_bytes = os.urandom(300_000)  # incompressible, so the ratio check stays quiet
    archive = _zip(tmp_path / "big.zip", {f"{i}.dcm": rng_bytes for i in range(4)})
    with pytest.raises(PayloadTooLarge, match="split the upload"):
        list(iter_zip_files(archive, ZipLimits(max_total_bytes=1_000_000)))
    with pytest.raises(PayloadTooLarge, match="entries"):
        list(iter_zip_files(archive, ZipLimits(max_members=3)))


def test_member_lying_about_its_size_is_stopped_while_inflating(tmp_path):
    data = os.urandom(100_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.dcm", data)
    raw = bytearray(buffer.getvalue())
    # Patch the central directory's uncompressed size (offset 24 in the entry) to 1000.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (1000).to_bytes(4, "little")
    archive = tmp_path / "liar.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises((PayloadTooLarge, UnsafeArchive)):
        list(iter_zip_files(archive))


def test_random_bytes_are_not_a_zip(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(UnsupportedInput, match="not a readable zip"):
        list(iter_zip_files(path))


def test_os_litter_is_skipped_and_good_zips_extract(tmp_path):
    archive = _zip(
        tmp_path / "ok.zip",
        {"s/1.dcm": b"a", "__MACOSX/s/._1.dcm": b"junk", "s/.DS_Store": b"junk", "s/2.dcm": b"b"},
    )
    assert [n for n, _ in iter_zip_files(archive)] == ["s/1.dcm", "s/2.dcm"]
    out = extract_zip(archive, tmp_path / "out")
    assert _tree(out) == {"s/1.dcm", "s/2.dcm"}

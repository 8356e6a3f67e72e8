"""Coverage-guided fuzzing (atheris, libFuzzer) of the DICOM and NIfTI loaders: whatever
bytes arrive, the loaders answer with a volume or one of sitetune's typed errors
(`SitetuneError`, mapped to a 4xx), never another exception.

    .venv/bin/python bench/fuzz_loaders.py [--runs 20000] [--out bench/results/fuzz.json]

The corpus starts from a small phantom written as a DICOM slice (explicit VR, deflated,
RLE) and as NIfTI (.nii and .nii.gz); libFuzzer mutates it. The input size is capped at
64 KiB and the declared-size limits are small, so a run measures parsing, not memory.
Exits 1 (and writes the failing input under the output's folder) on any untyped error.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seeds(folder: Path) -> list[Path]:
    import nibabel as nib
    import numpy as np
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

    from sitetune.imaging.dicom_write import write_dicom_series
    from sitetune.imaging.volume import Volume

    array = (np.arange(16 * 16 * 4).reshape(16, 16, 4) % 300 - 100).astype(np.int16)
    volume = Volume(array, np.diag([0.8, 0.8, 2.5, 1.0]), modality="CT")
    written = write_dicom_series(volume, folder / "dicom")
    deflated = pydicom.dcmread(written[1])
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(folder / "deflated.dcm", enforce_file_format=True)
    rle = pydicom.dcmread(written[2])
    rle.compress(RLELossless)
    rle.save_as(folder / "rle.dcm")
    nib.save(nib.Nifti1Image(array, volume.affine), folder / "seed.nii")
    (folder / "seed.nii.gz").write_bytes(gzip.compress((folder / "seed.nii").read_bytes()))
    return [written[0], folder / "deflated.dcm", folder / "rle.dcm", folder / "seed.nii",
            folder / "seed.nii.gz"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--out", default="bench/results/fuzz.json")
    args = parser.parse_args()
    import atheris

    with atheris.instrument_imports():
        from sitetune.errors import SitetuneError
        from sitetune.imaging.load import load_volume
        from sitetune.imaging.volume import ImageLimits

    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for seed in seeds(work):
        (corpus / seed.name).write_bytes(seed.read_bytes())
    limits = ImageLimits(max_voxels=1 << 20, max_inflated_bytes=16 << 20)
    counts = {"inputs": 0, "volumes": 0, "typed_errors": 0}  # volumes/errors: per suffix tried
    crash = Path(args.out).parent / "fuzz-crash.bin"

    started = time.perf_counter()

    def report() -> None:
        result = {"runs": args.runs, "seconds": round(time.perf_counter() - started, 1),
                  **counts, "untyped_errors": int(crash.exists())}  # fmt: skip
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)

    def one(data: bytes) -> None:
        counts["inputs"] += 1
        if counts["inputs"] % 500 == 0:
            report()  # libFuzzer ends the process itself: the figures are kept as it goes
        for suffix in (".dcm", ".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"):
            path = work / f"input{suffix}"
            path.write_bytes(data)
            try:
                load_volume(path, image_limits=limits)
                counts["volumes"] += 1
            except SitetuneError:
                counts["typed_errors"] += 1
            except BaseException:  # anything untyped, a decoder's panic included
                crash.parent.mkdir(parents=True, exist_ok=True)
                crash.write_bytes(data)
                report()
                raise

    atexit.register(report)  # where the interpreter's exit handlers still run
    crash.unlink(missing_ok=True)
    atheris.Setup(
        [sys.argv[0], f"-runs={args.runs}", "-max_len=65536", "-rss_limit_mb=4096", str(corpus)],
        one,
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

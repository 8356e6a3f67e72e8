"""``python -m sitetune.imaging.phantoms`` / ``sitetune-phantoms``: write a phantom dataset."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sitetune.imaging.dicom_write import PhaseLayout
from sitetune.imaging.phantoms.dataset import (
    DatasetSpec,
    ImageFormat,
    LabelPhases,
    write_msd_dataset,
)
from sitetune.imaging.phantoms.sites import SITES, Family


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitetune-phantoms",
        description="Write N synthetic cases in Medical Segmentation Decathlon layout.",
    )
    parser.add_argument("--family", required=True, choices=[f.value for f in Family])
    parser.add_argument(
        "--site", required=True, help=f"site profile, e.g. {', '.join(sorted(SITES[Family.LV_CT]))}"
    )
    parser.add_argument("--cases", type=int, required=True, help="number of cases")
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument(
        "--format",
        default="nifti",
        choices=[f.value for f in ImageFormat],
        help="image format (labels are always NIfTI)",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="cardiac phases per case (lv-ct; 1 = 3D at end-diastole)",
    )
    parser.add_argument(
        "--label-phases",
        default="all",
        choices=[p.value for p in LabelPhases],
        help="label every phase, or only ED and ES (others left all-zero)",
    )
    parser.add_argument(
        "--phase-layout",
        default="series",
        choices=[p.value for p in PhaseLayout],
        help="DICOM 4D layout: one series per phase or one temporal series",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = DatasetSpec(
            args.family,
            args.site,
            args.cases,
            args.format,
            args.phases,
            args.label_phases,
            args.seed,
            args.phase_layout,
        )
    except ValueError as exc:
        print(f"sitetune-phantoms: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(
            f"\r{done}/{total} cases  {time.perf_counter() - started:6.1f} s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        out = write_msd_dataset(spec, args.out, workers=args.workers, progress=progress)
    except FileExistsError as exc:
        print(f"sitetune-phantoms: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    print(
        json.dumps(
            {
                "out": str(out),
                "cases": spec.cases,
                "family": str(spec.family),
                "site": spec.site,
                "format": str(spec.image_format),
                "phases": spec.phases,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

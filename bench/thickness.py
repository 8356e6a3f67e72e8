"""Wall-thickness accuracy and speed: sitetune's solver against pyezzi, same phantoms, same run.

    .venv/bin/pip install -e '.[bench]'   # pyezzi from PyPI
    .venv/bin/python bench/thickness.py [--runs 3] [--out bench/results/thickness.json]

Accuracy: analytic phantoms (``sitetune.imaging.phantoms.analytic``) with exact thickness
and a random sub-voxel centre offset per phantom -- spherical shells (radii 20-30, 30-40,
50-56 mm), cylindrical shells (axis z and axis (1,1,1)), slabs with normals (1,0,0),
(1,1,0), (1,1,1), their thickness near 8 mm on the projected voxel lattice (see
``lattice_thickness``) -- at 1 mm isotropic, 0.5x0.5x0.7 mm and 1x1x2 mm. Errors are in voxels
of the finest axis, over the voxels where the closed form holds: mean (bias), p95 and
max of |error|; per spacing, the slab orientation spread (max - min of the three slab
biases). pyezzi runs ``compute_thickness_cardiac(endo=blood pool, epi=blood pool+wall)``.

``sitetune`` is ``wall_thickness`` as served (surfaces fitted to their staircase, with coarse
slices the in-plane links only); ``sitetune-smoothed`` is ``surfaces="smoothed"`` (placed by
the smoothing alone: faster, less accurate at some offsets).

Robustness (``--seeds``): the same rows for sitetune (both surface placements) at further
centre offsets, worst value of each statistic per row over the seeds, and the rows missing
a target.

Speed: a spherical shell of radii 60-80 voxels in a 256^3 array at 1 mm, median of
``--runs`` for each method (interleaved, after one warm-up call each), and the ratios; each
sitetune run's stage times (surface placement, Laplace, path lengths) beside it.

GPU (``--device cuda``): adds ``sitetune-cuda`` and ``sitetune-smoothed-cuda`` (the Laplace and
path-length solves in torch on the GPU, the surface placement on the CPU) to the table and
the timing; ``--skip-accuracy --seeds ''`` times them alone, e.g. on a GPU host:

    python bench/thickness.py --device cuda --skip-accuracy --seeds '' \
        --out bench/results/thickness_gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from fractions import Fraction
from functools import reduce
from pathlib import Path

import numpy as np

from sitetune.imaging.phantoms.analytic import cylindrical_shell, slab, spherical_shell
from sitetune.measure.thickness import wall_thickness

SPACINGS = {"1mm": (1.0, 1.0, 1.0), "0.5x0.5x0.7mm": (0.5, 0.5, 0.7), "1x1x2mm": (1.0, 1.0, 2.0)}


def phantoms(spacing, rng):
    """(row name, phantom) for one spacing."""
    for r_in, r_out in ((20, 30), (30, 40), (50, 56)):
        yield f"sphere {r_in}-{r_out}", spherical_shell(r_in, r_out, spacing, rng=rng)
    yield "cylinder 20-30 axis z", cylindrical_shell(20, 30, spacing, rng=rng)
    yield (
        "cylinder 20-30 axis (1,1,1)",
        cylindrical_shell(20, 30, spacing, axis=(1, 1, 1), length_mm=80, rng=rng),
    )
    for normal in ((1, 0, 0), (1, 1, 0), (1, 1, 1)):
        thickness = lattice_thickness(8.0, normal, spacing)
        yield (
            f"slab {thickness:.3f} mm normal {normal}",
            slab(thickness, normal, spacing, rng=rng),
        )


def _fraction_gcd(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(
        math.gcd(a.numerator * b.denominator, b.numerator * a.denominator),
        a.denominator * b.denominator,
    )


def lattice_thickness(target_mm: float, normal, spacing) -> float:
    """The thickness nearest ``target_mm`` that is a whole number of steps of the voxel
    lattice projected on ``normal``.

    Voxel centres project onto the normal at multiples of a step (1/sqrt(2) mm for normal
    (1,1,0) at 1 mm): a boundary plane anywhere between two projections gives the same
    label map, so a slab's thickness is only determined by its labels to within that
    step. At whole multiples it is determined exactly, whatever the offset, and the
    errors measure the method rather than the sampling.
    """
    normal = np.asarray(normal, float) / np.linalg.norm(normal)
    terms = [
        Fraction(float(s)).limit_denominator(1000)
        for s, n in zip(spacing, normal, strict=True)
        if n
    ]
    step = reduce(_fraction_gcd, terms)
    step_mm = float(step) * float(normal[normal > 0].min())
    return round(target_mm / step_mm) * step_mm


def sitetune_method(surfaces: str = "fitted", device: str | None = None):
    """``wall_thickness`` with these options, as a bench method: ``(thickness, stage seconds)``."""

    def run(labels: np.ndarray, spacing) -> tuple[np.ndarray, dict]:
        result = wall_thickness(labels, spacing, surfaces=surfaces, device=device)
        return result.thickness_mm, result.method["stage_seconds"]

    return run


def pyezzi_thickness(labels: np.ndarray, spacing) -> tuple[np.ndarray, None]:
    from pyezzi import compute_thickness_cardiac

    endo = labels == 1
    epi = labels >= 1
    out = compute_thickness_cardiac(endo, epi, spacing=tuple(float(s) for s in spacing))
    return np.nan_to_num(np.asarray(out, dtype=np.float64)), None


METHODS = {
    "sitetune": sitetune_method(),
    "sitetune-smoothed": sitetune_method("smoothed"),
    "pyezzi": pyezzi_thickness,
}


def add_device_methods(device: str) -> None:
    """Add ``sitetune-<device>`` and ``sitetune-smoothed-<device>`` (torch solvers)."""
    METHODS[f"sitetune-{device}"] = sitetune_method(device=device)
    METHODS[f"sitetune-smoothed-{device}"] = sitetune_method("smoothed", device)


def errors_of(method, phantom) -> tuple[dict, float]:
    spacing = phantom.labels.spacing
    started = time.perf_counter()
    thickness, stages = METHODS[method](phantom.labels.array, spacing)
    seconds = time.perf_counter() - started
    errors = (thickness[phantom.valid] - phantom.thickness_mm) / min(spacing)
    absolute = np.abs(errors)
    return {
        "mean_error_vox": round(float(errors.mean()), 3),
        "p95_abs_error_vox": round(float(np.percentile(absolute, 95)), 3),
        "max_abs_error_vox": round(float(absolute.max()), 3),
        "voxels": int(errors.size),
        "seconds": round(seconds, 2),
    } | ({"stage_seconds": stages} if stages else {}), seconds


def accuracy(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    table: dict = {}
    for spacing_name, spacing in SPACINGS.items():
        rows = {}
        for name, phantom in phantoms(spacing, rng):
            rows[name] = {method: errors_of(method, phantom)[0] for method in METHODS}
            print(json.dumps({spacing_name: {name: rows[name]}}), flush=True)
        spread = {}
        for method in METHODS:
            biases = [row[method]["mean_error_vox"] for name, row in rows.items() if "slab" in name]
            spread[method] = round(max(biases) - min(biases), 3)
        table[spacing_name] = {"rows": rows, "slab_orientation_spread_vox": spread}
    return table


TARGETS = {"mean_error_vox": 0.1, "p95_abs_error_vox": 0.3, "max_abs_error_vox": 0.6}


def robustness(seeds: list[int]) -> dict:
    """sitetune's worst statistics per row over ``seeds`` (one set of offsets each), for
    each of its surface placements, and the rows missing a target."""
    worst: dict = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for spacing_name, spacing in SPACINGS.items():
            for name, phantom in phantoms(spacing, rng):
                for method in ("sitetune", "sitetune-smoothed"):  # not pyezzi, not torch
                    row, _ = errors_of(method, phantom)
                    into = worst.setdefault(method, {}).setdefault(spacing_name, {})
                    into = into.setdefault(name, {})
                    for key in TARGETS:
                        into[key] = max(into.get(key, 0.0), abs(row[key]))
    missing = {
        method: [
            f"{spacing_name} {name}: {key} {value}"
            for spacing_name, rows in table.items()
            for name, row in rows.items()
            for key, value in row.items()
            if value > TARGETS[key]
        ]
        for method, table in worst.items()
    }
    return {"seeds": seeds, "worst": worst, "targets": TARGETS, "missing": missing}


def speed(runs: int) -> dict:
    phantom = spherical_shell(60, 80, rng=np.random.default_rng(0), margin_mm=47.5)
    assert phantom.labels.shape == (256, 256, 256), phantom.labels.shape
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    last_run = {}
    warm_up = spherical_shell(8, 12, rng=np.random.default_rng(0))
    for method in METHODS:  # numba compiles on first use (then from its disk cache)
        errors_of(method, warm_up)
    for _ in range(runs):
        for method in METHODS:  # interleaved, so machine drift hits both alike
            row, seconds = errors_of(method, phantom)
            times[method].append(seconds)
            last_run[method] = row
    out = {
        "shape": list(phantom.labels.shape),
        "radii_vox": [60, 80],
        "wall_voxels": int((phantom.labels.array == 2).sum()),
        "median_s": {m: round(statistics.median(t), 2) for m, t in times.items()},
        "runs_s": {m: [round(v, 2) for v in t] for m, t in times.items()},
        "last_run": last_run,
    }
    for method in METHODS:
        if method != "pyezzi":
            ratio = out["median_s"]["pyezzi"] / out["median_s"][method]
            out[f"pyezzi_over_{method.replace('-', '_')}"] = round(ratio, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--seeds", default="1,2,3,4,5", help="further offsets (robustness)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true", help="speed (and --seeds) only")
    parser.add_argument("--device", help="also time the torch solvers on this device ('cuda')")
    parser.add_argument("--out", default="bench/results/thickness.json")
    args = parser.parse_args()
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if args.device:
        import torch

        add_device_methods(args.device)
        if args.device.startswith("cuda"):
            machine["gpu"] = torch.cuda.get_device_name(args.device)
        machine["torch"] = torch.__version__
    result: dict = {"machine": machine}
    if not args.skip_accuracy:
        result["accuracy"] = accuracy(args.seed)
    if args.seeds:
        result["robustness"] = robustness([int(s) for s in args.seeds.split(",")])
        print(json.dumps({"robustness_missing": result["robustness"]["missing"]}), flush=True)
    if not args.skip_speed:
        result["speed_256"] = speed(args.runs)
        print(json.dumps({"speed_256": result["speed_256"]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Segmentation and wall-thickness speed of two checkouts of sitetune, side by side: a
refactoring must leave both within noise and the outputs identical.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/trees.py /tmp/before . [--pairs 3] [--out bench/results/trees.json]

Each measurement runs in a fresh process with the checkout first on ``sys.path``,
alternating before / after ``--pairs`` times (machine drift hits both alike):
``segment`` (lv-ct through ONNX Runtime on the CPU, `sitetune.models.inference.segment`,
a 128x128x112 cardiac phantom, median of 5 after a warm-up) and ``thickness``
(`wall_thickness`, fitted and smoothed surfaces, the 256^3 shell of ``bench/thickness.py``,
median of 3 after a warm-up). Reported: per pair the medians, their ratio after/before,
and a checksum of the outputs (equal when the outputs are).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SEGMENT = r"""
import json, statistics, sys, time
from sitetune.imaging.phantoms.cardiac import cardiac_phantom
from sitetune.models.card import ModelCard
from sitetune.models.engines import OrtEngine
from sitetune.models.inference import InferenceSettings, segment
card = ModelCard.model_validate_json(open(sys.argv[1] + "/card.json").read())
engine = OrtEngine(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
volume = cardiac_phantom(7, "A", phases=1, spacing=(1.0, 1.0, 1.0)).image
segment(volume, card, engine, InferenceSettings())
times = []
for _ in range(5):
    t = time.perf_counter()
    labels = segment(volume, card, engine, InferenceSettings()).labels
    times.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(times), "checksum": int(labels.sum())}))
"""

THICKNESS = r"""
import json, statistics, time
import numpy as np
from sitetune.imaging.phantoms.analytic import spherical_shell
from sitetune.measure.thickness import wall_thickness
shell = spherical_shell(60, 80, rng=np.random.default_rng(0), margin_mm=47.5).labels
warm = spherical_shell(8, 12, rng=np.random.default_rng(0)).labels
out = {}
for surfaces in ("fitted", "smoothed"):
    wall_thickness(warm.array, warm.spacing, surfaces=surfaces)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        result = wall_thickness(shell.array, shell.spacing, surfaces=surfaces)
        times.append(time.perf_counter() - t)
    out[surfaces] = {"median_s": statistics.median(times),
                     "checksum": float(np.nansum(result.thickness_mm))}
print(json.dumps(out))
"""


def _export_model(folder: Path) -> Path:
    """lv-ct's committed weights exported once, for both checkouts to load."""
    code = (
        "import sys, shutil, torch\n"
        "from sitetune.models.card import ModelCard\n"
        "from sitetune.models.export import export_onnx\n"
        "from sitetune.models.networks import build_network\n"
        "src = 'sitetune/models/builtin/lv-ct/'\n"
        "card = ModelCard.model_validate_json(open(src + 'card.json').read())\n"
        "net = build_network(card)\n"
        "net.load_state_dict(torch.load(src + 'weights.pt', map_location='cpu'))\n"
        "export_onnx(net.eval(), card, sys.argv[1] + '/model.onnx')\n"
        "shutil.copy(src + 'card.json', sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, check=True)
    return folder


def _run(tree: Path, code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    run = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def _same_outputs(pair: dict) -> bool:
    before, after = pair["before"], pair["after"]
    same = before["segment"]["checksum"] == after["segment"]["checksum"]
    for key in ("fitted", "smoothed"):
        same &= before["thickness"][key]["checksum"] == after["thickness"][key]["checksum"]
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default="bench/results/trees.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = _export_model(Path(tmp))
        pairs = []
        for _ in range(args.pairs):
            pair = {}
            for side in ("before", "after"):
                tree = getattr(args, side)
                pair[side] = {"segment": _run(tree, SEGMENT, str(model)),
                              "thickness": _run(tree, THICKNESS)}  # fmt: skip
            pairs.append(pair)
            print(json.dumps(pair), flush=True)

    def ratio(path) -> float:
        values = []
        for pair in pairs:
            before, after = (path(pair[side]) for side in ("before", "after"))
            values.append(after / before)
        return round(statistics.median(values), 3)

    out = {
        "machine": {"cpus": os.cpu_count()},
        "before": str(args.before),
        "after": str(args.after),
        "pairs": pairs,
        "median_ratio_after_over_before": {
            "segment": ratio(lambda s: s["segment"]["median_s"]),
            "thickness_fitted": ratio(lambda s: s["thickness"]["fitted"]["median_s"]),
            "thickness_smoothed": ratio(lambda s: s["thickness"]["smoothed"]["median_s"]),
        },
        "outputs_identical": all(_same_outputs(p) for p in pairs),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["median_ratio_after_over_before"]), "identical:", out["outputs_identical"])


if __name__ == "__main__":
    main()

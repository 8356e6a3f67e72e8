"""Time to write phantom datasets in MSD layout, per family and site.

    .venv/bin/python bench/phantoms.py [--cases 40] [--workers 2]

Each configuration is written once into a temporary folder (generation dominates; the
per-case seconds inside dataset.json give the spread). Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset

CONFIGS = [
    {"family": "lv-ct", "site": "A", "phases": 1},
    {"family": "lv-ct", "site": "A", "phases": 10},
    {"family": "lv-ct", "site": "B", "phases": 10},
    {"family": "flair-lesion", "site": "A", "phases": 1},
    {"family": "flair-lesion", "site": "B", "phases": 1},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="bench/results/phantoms.json")
    args = parser.parse_args()
    rows = []
    for config in CONFIGS:
        spec = DatasetSpec(config["family"], config["site"], args.cases, phases=config["phases"])
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            out = write_msd_dataset(spec, Path(tmp) / "ds", workers=args.workers)
            seconds = time.perf_counter() - started
            meta = json.loads((out / "dataset.json").read_text())
            per_case = [c["seconds"] for c in meta["sitetune"]["cases"]]
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        row = dict(
            config,
            cases=args.cases,
            workers=args.workers,
            total_s=round(seconds, 1),
            per_case_median_s=round(statistics.median(per_case), 2),
            megabytes=round(size / 1e6, 1),
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`facext bench analysis`: time every analysis stage on generated pairs.

Runs on one core (CPU affinity and OpenCV threads pinned), so pairs/s is per core, and
compares the whole to the floor no implementation can go under: decoding both images
plus the three model inferences (detection, mesh, segmentation), measured in the same
run.
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

FLOOR_STAGES = ("decode", "detect", "mesh", "segmentation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["analysis"], help="what to measure")
    parser.add_argument("--n", type=int, default=20, help="generated pairs to time (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", help="existing sample-data folder to use instead of generating")
    parser.add_argument("-o", "--output", default="bench_analysis.json", help="JSON file to write")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")


def _pin_to_one_core() -> None:
    import cv2

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def bench_analysis(pairs_dir: Path, repeats: int = 1) -> dict:
    from pipelines.analysis import STAGES, PairAnalyzer

    manifest = [json.loads(line) for line in (pairs_dir / "manifest.jsonl").read_text().splitlines() if line]
    good = [row for row in manifest if not row.get("expected_reject")]
    if not good:
        raise SystemExit(f"no good pairs in {pairs_dir}")
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    statuses = {"ok": 0, "rejected": 0}
    with PairAnalyzer() as analyzer:
        analyzer.analyze_files(pairs_dir / good[0]["real"], pairs_dir / good[0]["fake"])  # warm-up
        for _ in range(repeats):
            for row in good:
                start = time.perf_counter()
                result = analyzer.analyze_files(pairs_dir / row["real"], pairs_dir / row["fake"])
                totals.append(time.perf_counter() - start)
                statuses[result.analysis.status] += 1
                for stage in STAGES:
                    per_stage[stage].append(result.timings.get(stage, 0.0))
    mean_ms = {s: 1000 * statistics.fmean(v) for s, v in per_stage.items()}
    total_ms = 1000 * statistics.fmean(totals)
    floor_ms = sum(mean_ms[s] for s in FLOOR_STAGES)
    return {
        "pairs": len(totals),
        "statuses": statuses,
        "stage_ms": {s: round(v, 3) for s, v in mean_ms.items()},
        "total_ms_per_pair": round(total_ms, 3),
        "total_ms_p50": round(1000 * statistics.median(totals), 3),
        "pairs_per_s_per_core": round(1000 / total_ms, 3),
        "floor_stages": list(FLOOR_STAGES),
        "floor_ms_per_pair": round(floor_ms, 3),
        "ratio_to_floor": round(total_ms / floor_ms, 3),
    }


def _machine() -> dict:
    import cv2
    import mediapipe
    import numpy

    return {
        "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__, "opencv": cv2.__version__, "mediapipe": mediapipe.__version__,
    }


def run_from_args(args: argparse.Namespace) -> int:
    if not args.all_cores:
        _pin_to_one_core()
    if args.pairs:
        report = bench_analysis(Path(args.pairs))
    else:
        from build_tools.sample_data import make_sample_pairs

        with tempfile.TemporaryDirectory() as tmp:
            make_sample_pairs(tmp, n=args.n, seed=args.seed)
            report = bench_analysis(Path(tmp))
    report["one_core"] = not args.all_cores
    report["machine"] = _machine()
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['pairs']} pairs, {report['pairs_per_s_per_core']:.2f} pairs/s "
          f"{'per core' if report['one_core'] else 'on all cores'}")
    width = max(len(s) for s in report["stage_ms"])
    for stage, ms in report["stage_ms"].items():
        mark = "  (floor)" if stage in FLOOR_STAGES else ""
        print(f"  {stage:<{width}}  {ms:8.2f} ms{mark}")
    print(f"  {'total':<{width}}  {report['total_ms_per_pair']:8.2f} ms per pair")
    print(f"floor (decode + 3 model inferences): {report['floor_ms_per_pair']:.2f} ms; "
          f"whole / floor = {report['ratio_to_floor']:.2f}")
    print(f"wrote {args.output}")
    return 0

"""`facext bench analysis|pipeline`: speed on generated pairs, written as JSON (`llm` and
`publish` live in bench_llm and bench_publish).

`analysis` times every analysis stage; `pipeline` runs the whole FiFa-Instruct Beam
pipeline (FnApiRunner in this process) and reports its pairs/s and peak memory.  Both
run on one core (CPU affinity and OpenCV threads pinned) unless --all-cores, so pairs/s
is per core, and compare against the floor no implementation can go under: decoding
both images plus the three model inferences (detection, mesh, segmentation), measured
in the same run.
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
    parser.add_argument("target", choices=["analysis", "pipeline", "llm", "publish"],
                        help="what to measure (llm: client throughput against a local server; publish: "
                             "Parquet export and report page of a run)")
    parser.add_argument("--n", type=int, default=20, help="generated pairs to time (default 20)")
    parser.add_argument("--workers", type=int, default=None,
                        help="pipeline: DirectRunner multi-process workers (default: in-process "
                             "FnApiRunner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", help="existing sample-data folder to use instead of generating")
    parser.add_argument("-o", "--output", default=None,
                        help="JSON file to write (default bench_TARGET.json)")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    parser.add_argument("--run", default=None,
                        help="publish: an existing pipeline output to measure (default: run --n generated pairs)")
    parser.add_argument("--per-task", type=int, default=2, help="publish: report samples per task (default 2)")
    parser.add_argument("--pipeline-pairs", type=int, default=8,
                        help="llm: also describe and rate this many generated pairs through the pipeline "
                             "(0: the client scenarios only; default 8)")


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


def _peak_rss_mb() -> dict:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}


def _time_pipeline(manifest: Path, workers: int | None) -> tuple[float, dict]:
    from pipelines.fifa_annotate import run

    with tempfile.TemporaryDirectory() as out:
        argv = ["--input", str(manifest), "--output", out, "--allow_absolute_paths"]
        runner = None
        if workers:
            argv += ["--runner", "DirectRunner", "--direct_num_workers", str(workers),
                     "--direct_running_mode", "multi_processing"]
        else:
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            runner = FnApiRunner()
        start = time.perf_counter()
        result = run(argv, runner=runner)
        return time.perf_counter() - start, result.report


def bench_pipeline(pairs_dir: Path, workers: int | None = None) -> dict:
    """The whole pipeline over the folder's manifest, against the analysis floor.

    Runs twice, on a quarter of the rows and on all of them, so the cost of one more
    pair (the slope) is told apart from the fixed cost of starting a run.
    """
    floor = bench_analysis(pairs_dir)
    rows = [json.loads(line) for line in (pairs_dir / "manifest.jsonl").read_text().splitlines() if line]
    for row in rows:  # absolute paths so the subset manifest can live elsewhere
        for key in ("real", "fake"):
            row[key] = str((pairs_dir / row[key]).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        subset, full = Path(tmp) / "quarter.jsonl", Path(tmp) / "all.jsonl"
        subset.write_text("".join(json.dumps(r) + "\n" for r in rows[: max(2, len(rows) // 4)]))
        full.write_text("".join(json.dumps(r) + "\n" for r in rows))
        wall_small, small = _time_pipeline(subset, workers)
        rss_small = _peak_rss_mb()["peak_rss_mb"]
        wall, report = _time_pipeline(full, workers)
    written, inputs = report["pairs_written"], report["inputs"]
    cores = workers or 1
    extra_pairs = written - small["pairs_written"]
    ms_per_pair = 1000 * (wall - wall_small) * cores / max(extra_pairs, 1)
    # Too few pairs for a slope (noise can make it negative): fall back to the whole run.
    steady = extra_pairs >= 4 and ms_per_pair > 0
    if not steady:
        ms_per_pair = 1000 * wall * cores / max(written, 1)
    return {
        "pairs_in": inputs,
        "pairs_written": written,
        "samples": report["samples"]["total"],
        "runner": f"DirectRunner multi_processing x{workers}" if workers else "FnApiRunner (in process)",
        "wall_s": round(wall, 3),
        "wall_s_quarter_run": round(wall_small, 3),
        "steady_state": steady,
        "fixed_cost_s": round(wall - (ms_per_pair / 1000 / cores) * written, 3),
        "pairs_per_s_whole_run": round(written / wall, 3),
        "pairs_per_s_per_core": round(1000 / ms_per_pair, 3),
        "samples_per_s_whole_run": round(report["samples"]["total"] / wall, 3),
        "pipeline_ms_per_written_pair_core": round(ms_per_pair, 3),
        "analysis_ms_per_pair": floor["total_ms_per_pair"],
        "floor_ms_per_pair": floor["floor_ms_per_pair"],
        "ratio_to_floor": round(ms_per_pair / floor["floor_ms_per_pair"], 3),
        "ratio_to_analysis": round(ms_per_pair / floor["total_ms_per_pair"], 3),
        "analysis": floor,
        # Peak memory after the quarter run and after the whole run: equal when memory
        # does not grow with the input.
        "peak_rss_mb_quarter_run": rss_small,
        **_peak_rss_mb(),
    }


def run_from_args(args: argparse.Namespace) -> int:
    if args.target == "publish":
        from build_tools.bench_publish import run_bench_publish

        return run_bench_publish(args.run, args.n, args.seed, args.per_task, args.output or "bench_publish.json")
    if args.target == "llm":
        from build_tools.bench_llm import bench_llm, summary

        report = {**bench_llm(pipeline_pairs=args.pipeline_pairs), "machine": _machine()}
        Path(args.output or "bench_llm.json").write_text(json.dumps(report, indent=2) + "\n")
        print(summary(report))
        print(f"wrote {args.output or 'bench_llm.json'}")
        return 0
    if not args.all_cores and not args.workers:
        _pin_to_one_core()
    measure = bench_pipeline if args.target == "pipeline" else bench_analysis
    extra = {"workers": args.workers} if args.target == "pipeline" else {}
    if args.pairs:
        report = measure(Path(args.pairs), **extra)
    else:
        from build_tools.sample_data import make_sample_pairs

        with tempfile.TemporaryDirectory() as tmp:
            make_sample_pairs(tmp, n=args.n, seed=args.seed)
            report = measure(Path(tmp), **extra)
    args.output = args.output or f"bench_{args.target}.json"
    report["one_core"] = not args.all_cores and not args.workers
    if args.target == "pipeline":
        report["machine"] = _machine()
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"{report['pairs_in']} pairs in, {report['pairs_written']} written, {report['samples']} samples, "
              f"{report['runner']}: {report['wall_s']:.1f} s")
        basis = "at steady state" if report["steady_state"] else "over the whole run (too few pairs for a slope)"
        print(f"  {report['pairs_per_s_per_core']:.2f} pairs/s per core {basis} "
              f"({report['pipeline_ms_per_written_pair_core']:.0f} ms per pair and core; whole run "
              f"{report['pairs_per_s_whole_run']:.2f} pairs/s with {report['fixed_cost_s']:.1f} s to start)")
        print(f"  analysis alone {report['analysis_ms_per_pair']:.0f} ms per pair, "
              f"floor {report['floor_ms_per_pair']:.0f} ms")
        print(f"  pipeline / floor = {report['ratio_to_floor']:.2f}, pipeline / analysis = "
              f"{report['ratio_to_analysis']:.2f}; peak RSS {report['peak_rss_mb']:.0f} MB "
              f"({report['peak_rss_mb_quarter_run']:.0f} MB after the quarter run; "
              f"children {report['peak_rss_children_mb']:.0f} MB)")
        print(f"wrote {args.output}")
        return 0
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

"""`facext bench analysis|pipeline`: speed on generated pairs (`llm` and `publish` are
their own modules of `build_tools.bench`).

`analysis` times every analysis stage; `pipeline` runs the whole FiFa-Instruct Beam
pipeline (FnApiRunner in this process) and reports its pairs/s and peak memory.  Both
run on one core (CPU affinity and OpenCV threads pinned) unless --all-cores, so pairs/s
is per core, and compare against the floor no implementation can go under: decoding
both images plus the three model inferences (detection, mesh, segmentation), measured
in the same run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from build_tools.bench.machine import peak_rss_mb

FLOOR_STAGES = ("decode", "detect", "mesh", "segmentation")


def bench_analysis(pairs_dir: Path, repeats: int = 1) -> dict:
    from pipelines.fifa.analysis import STAGES, PairAnalyzer

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
        rss_small = peak_rss_mb()["peak_rss_mb"]
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
        **peak_rss_mb(),
    }

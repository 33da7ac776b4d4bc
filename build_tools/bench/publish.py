"""`facext bench publish`: how fast a run becomes Hub Parquet and a report page, and how
much memory the export holds, written as JSON.

Each measurement runs in a fresh process, so its peak memory (resident, and Arrow's
allocations) is its own and not the pipeline run's that made the output.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _arrow_bytes(output: Path) -> int:
    return sum(p.stat().st_size for split in ("train", "test", "rejected") for p in (output / split).glob("*.arrow"))


def _export(output: str, dest: str) -> dict:
    import resource

    import datasets  # noqa: F401 - imported before the clock starts
    import pyarrow as pa
    import pyarrow.parquet

    from build_tools.publish.export import export_for_hub

    start = time.perf_counter()
    summary = export_for_hub(output, dest, progress=False)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "files": summary["files"], "rows": summary["rows"],
            "parquet_mb": round(summary["bytes"] / 1e6, 2),
            "peak_arrow_mb": round(pa.default_memory_pool().max_memory() / 1e6, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _report(output: str, page: str, per_task: int) -> dict:
    from build_tools.report_html import Selection, write_report

    start = time.perf_counter()
    drawn = write_report(output, page, Selection(per_task=per_task, rejected=True), progress=False)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "samples": drawn["samples"], "pairs": drawn["pairs"],
            "pictures": drawn["images"], "ms_per_sample": round(1000 * wall / max(drawn["samples"], 1), 1)}


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def bench_publish(output: Path, per_task: int = 2) -> dict:
    arrow = _arrow_bytes(output)
    with tempfile.TemporaryDirectory() as tmp:
        export = _in_fresh_process(_export, str(output), str(Path(tmp) / "hub"))
        again = _in_fresh_process(_export, str(output), str(Path(tmp) / "hub"))  # re-export: unchanged files
        report = _in_fresh_process(_report, str(output), str(Path(tmp) / "report.html"), per_task)
    return {
        "output": str(output),
        "arrow_mb": round(arrow / 1e6, 2),
        "export": {**export, "mb_per_s": round(arrow / 1e6 / export["wall_s"], 1),
                   "rows_per_s": round(export["rows"] / export["wall_s"], 1),
                   "peak_arrow_share_of_output": round(export["peak_arrow_mb"] * 1e6 / max(arrow, 1), 3)},
        "re_export": again,
        "report": report,
    }


def run_bench_publish(output: str | None, n: int, seed: int, per_task: int, target: str) -> int:
    from build_tools.bench.machine import machine

    if output:
        result = bench_publish(Path(output), per_task)
    else:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        from pipelines.fifa.sample_data import make_sample_pairs
        from pipelines.fifa_annotate import run

        with tempfile.TemporaryDirectory() as tmp:
            manifest = make_sample_pairs(Path(tmp) / "pairs", n=n, seed=seed)
            run(["--input", str(manifest), "--output", str(Path(tmp) / "out")], runner=FnApiRunner())
            result = bench_publish(Path(tmp) / "out", per_task)
    result["machine"] = machine()
    Path(target).write_text(json.dumps(result, indent=2) + "\n")
    e, r = result["export"], result["report"]
    print(f"export: {result['arrow_mb']:.1f} MB of shards -> {e['files']} Parquet files in {e['wall_s']:.2f} s "
          f"({e['mb_per_s']:.0f} MB/s, {e['rows_per_s']:.0f} rows/s); peak Arrow memory {e['peak_arrow_mb']:.0f} MB "
          f"({100 * e['peak_arrow_share_of_output']:.0f}% of the shards), peak RSS {e['peak_rss_mb']:.0f} MB")
    print(f"re-export (files unchanged): {result['re_export']['wall_s']:.2f} s")
    print(f"report: {r['samples']} samples of {r['pairs']} pairs, {r['pictures']} pictures in {r['wall_s']:.1f} s "
          f"({r['ms_per_sample']:.0f} ms per sample, re-analysis included)")
    print(f"wrote {target}")
    return 0

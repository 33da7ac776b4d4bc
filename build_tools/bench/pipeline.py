"""`facext bench analysis|pipeline`: speed on generated pairs (`llm` and `publish` are
their own modules of `build_tools.bench`).

`analysis` times every analysis stage; `pipeline` runs the whole FiFa-Instruct Beam
pipeline (FnApiRunner in this process) and reports its pairs/s and peak memory.  Both
run on one core (CPU affinity and OpenCV threads pinned) unless --all-cores, so pairs/s
is per core, and compare against the floor no implementation can go under: decoding
both images plus the three model inferences (detection, mesh, segmentation), measured
in the same run.  A second floor adds the lossless PNG encoding of the two crops the
dataset stores (what any writer of lossless crops pays on top).

`pipeline` also reports the bytes a pair and a sample cost on disk against the encoded
size of the pair's distinct crops, and (`scale_out`) throughput with 1 and 2 local
worker processes, and (`llm`) the LLM stage's call rate through the pipeline against
min(rpm/60, concurrency/latency) on the local protocol server.
"""

from __future__ import annotations

import json
import os
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
    from pipelines.fifa.stages import encode_png

    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals, encode = [], []
    statuses = {"ok": 0, "rejected": 0}
    with PairAnalyzer() as analyzer:
        analyzer.analyze_files(pairs_dir / good[0]["real"], pairs_dir / good[0]["fake"])  # warm-up
        for _ in range(repeats):
            for row in good:
                start = time.perf_counter()
                result = analyzer.analyze_files(pairs_dir / row["real"], pairs_dir / row["fake"])
                totals.append(time.perf_counter() - start)
                statuses[result.analysis.status] += 1
                if result.ok:
                    start = time.perf_counter()
                    encode_png(result.real_crop), encode_png(result.fake_crop)
                    encode.append(time.perf_counter() - start)
                for stage in STAGES:
                    per_stage[stage].append(result.timings.get(stage, 0.0))
    mean_ms = {s: 1000 * statistics.fmean(v) for s, v in per_stage.items()}
    total_ms = 1000 * statistics.fmean(totals)
    floor_ms = sum(mean_ms[s] for s in FLOOR_STAGES)
    encode_ms = 1000 * statistics.fmean(encode) if encode else 0.0
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
        "png_encode_ms_per_pair": round(encode_ms, 3),  # both crops, as the dataset stores them
        "floor_with_encode_ms_per_pair": round(floor_ms + encode_ms, 3),
    }


def _time_pipeline(manifest: Path, workers: int | None) -> tuple[float, dict, dict]:
    """Wall seconds of one run, its report, and what it wrote (`_bytes_written`)."""
    from pipelines.fifa_annotate import run

    with tempfile.TemporaryDirectory() as tmp:
        # A cache of its own: a cache beside the output (the default) would hand this run
        # the analyses of an earlier one.
        argv = ["--input", str(manifest), "--output", f"{tmp}/out", "--allow_absolute_paths",
                "--analysis_cache", f"{tmp}/analysis_cache", "--llm_cache", f"{tmp}/llm_cache"]
        runner = None
        if workers:
            argv += ["--runner", "DirectRunner", "--direct_num_workers", str(workers),
                     "--direct_running_mode", "multi_processing"]
        else:
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            runner = FnApiRunner()
        start = time.perf_counter()
        result = run(argv, runner=runner)
        wall = time.perf_counter() - start
        return wall, result.report, _bytes_written(Path(tmp) / "out", result.report)


def _bytes_written(output: Path, report: dict) -> dict:
    """Bytes of the sample shards per written pair and per sample, against the encoded
    size of the distinct crops they hold (the image column's PNG bytes, each crop once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shard_bytes, crop_bytes = 0, 0
    for split in ("train", "test"):
        for path in sorted((output / split).glob("data-*.arrow")):
            shard_bytes += path.stat().st_size
            with pa.memory_map(str(path)) as source:
                images = pa.ipc.open_stream(source).read_all().column("image").combine_chunks()
            crop_bytes += pc.sum(pc.binary_length(images.field("bytes"))).as_py() or 0
    pairs, samples = max(report["pairs_written"], 1), max(report["samples"]["total"], 1)
    return {"shard_bytes": shard_bytes, "distinct_crop_bytes": crop_bytes,
            "bytes_per_pair": round(shard_bytes / pairs), "bytes_per_sample": round(shard_bytes / samples),
            "bytes_over_distinct_crops": round(shard_bytes / crop_bytes, 4) if crop_bytes else None}


def bench_pipeline(pairs_dir: Path, workers: int | None = None) -> dict:
    """The whole pipeline over the folder's manifest, against the analysis floor.

    Runs twice, on a quarter of the rows and on all of them, so the cost of one more
    pair (the slope) is told apart from the fixed cost of starting a run.
    """
    floor = bench_analysis(pairs_dir)
    with tempfile.TemporaryDirectory() as tmp:
        subset, full = _subset_manifests(pairs_dir, Path(tmp))
        wall_small, small, _ = _time_pipeline(subset, workers)
        rss_small = peak_rss_mb()["peak_rss_mb"]
        wall, report, written_bytes = _time_pipeline(full, workers)
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
        "floor_with_encode_ms_per_pair": floor["floor_with_encode_ms_per_pair"],
        "ratio_to_floor_with_encode": round(ms_per_pair / floor["floor_with_encode_ms_per_pair"], 3),
        "bytes": written_bytes,
        "ratio_to_analysis": round(ms_per_pair / floor["total_ms_per_pair"], 3),
        "analysis": floor,
        # Peak memory after the quarter run and after the whole run: equal when memory
        # does not grow with the input.
        "peak_rss_mb_quarter_run": rss_small,
        **peak_rss_mb(),
    }


def bench_scale_out(pairs_dir: Path, workers: tuple[int, ...] = (1, 2)) -> dict:
    """Steady-state pairs per second with 1 and N local worker processes (DirectRunner,
    multi_processing, every core): like `bench_pipeline`, a run on a quarter of the
    pairs and one on all of them, so starting the workers (each loads the face models)
    is not counted as work.  `efficiency` is N workers' rate over N times one worker's
    (1.0: perfect scaling); the whole runs' rates are kept beside."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        subset, full = _subset_manifests(pairs_dir, Path(tmp))
        for n in workers:
            wall_small, small, _ = _time_pipeline(subset, n)
            wall, report, _ = _time_pipeline(full, n)
            extra = report["pairs_written"] - small["pairs_written"]
            rate = extra / (wall - wall_small) if wall > wall_small and extra > 0 else None
            runs[str(n)] = {"pairs_per_s": round(rate, 3) if rate else None,
                            "pairs_written": report["pairs_written"], "wall_s": round(wall, 3), "wall_s_quarter_run": round(wall_small, 3),
                            "pairs_per_s_whole_run": round(report["pairs_written"] / wall, 3)}
    one = runs[str(workers[0])]["pairs_per_s"]
    for n, run in runs.items():
        run["efficiency"] = round(run["pairs_per_s"] / (int(n) * one), 3) if one and run["pairs_per_s"] else None
    return {"runner": "DirectRunner multi_processing", "cpu_count": os.cpu_count(), "runs": runs}


def _subset_manifests(pairs_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """A quarter of the folder's rows and all of them, as manifests with absolute paths."""
    rows = [json.loads(line) for line in (pairs_dir / "manifest.jsonl").read_text().splitlines() if line]
    for row in rows:
        for key in ("real", "fake"):
            row[key] = str((pairs_dir / row[key]).resolve())
    subset, full = tmp / "quarter.jsonl", tmp / "all.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows[: max(2, len(rows) // 4)]))
    full.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return subset, full


def jpeg_pairs(source: Path, dest: Path, size: int = 512, quality: int = 95) -> Path:
    """The good pairs of a sample-data folder as JPEGs whose longer side is `size` (both
    images of a pair resized alike, so they stay aligned): the inputs users have, where
    the generated PNGs are larger and lossless.  Returns the new manifest."""
    import cv2

    (dest / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for line in (source / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line) if line else None
        if row is None or row.get("expected_reject"):
            continue
        out = {k: row[k] for k in ("pair_id", "method", "category", "subject_id") if row.get(k) is not None}
        for key in ("real", "fake"):
            image = cv2.imread(str(source / row[key]), cv2.IMREAD_COLOR)
            scale = size / max(image.shape[:2])
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            name = f"pairs/{row['pair_id']}_{key}.jpg"
            cv2.imwrite(str(dest / name), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            out[key] = name
        rows.append(out)
    manifest = dest / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


_PEAK_RSS_OF_A_RUN = """
import json, resource, sys
from pipelines.fifa_annotate import run
done = run(sys.argv[1:])
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "pairs_written": done.report["pairs_written"], "samples": done.report["samples"]["total"]}))
"""


def bench_memory(pairs_dir: Path, sizes: tuple[int, ...] = (1000, 5000)) -> dict:
    """Peak RSS of whole runs (the default runner, each in a fresh process) over manifests
    of `sizes` pairs: flat memory means the larger run peaks where the smaller one does.

    The pairs are the folder's good pairs, each repeated with its two images shifted
    alike by a few pixels (and mirrored), so every row has pixels of its own and the
    analysis cache cannot serve one row from another."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    base = [json.loads(line) for line in (pairs_dir / "manifest.jsonl").read_text().splitlines() if line]
    base = [row for row in base if not row.get("expected_reject")]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pairs"
        folder.mkdir()
        images: dict[str, str] = {}

        def variant(path: str, v: int) -> str:
            name = f"{Path(path).stem}_v{v}.jpg"
            if name not in images:
                image = cv2.imread(str(pairs_dir / path), cv2.IMREAD_COLOR)
                dx, dy = v % 7 - 3, v // 7 % 7 - 3
                image = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                                       borderMode=cv2.BORDER_REPLICATE)
                if v // 49 % 2:
                    image = image[:, ::-1]
                cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                images[name] = name
            return f"pairs/{name}"

        for size in sorted(sizes):
            rows = []
            for k in range(size):
                row, v = base[k % len(base)], k // len(base)
                rows.append({"pair_id": f"{row['pair_id']}-v{v}", "real": variant(row["real"], v),
                             "fake": variant(row["fake"], v), "method": row.get("method", ""),
                             "category": row.get("category", "")})
            manifest = Path(tmp) / f"pairs_{size}.jsonl"
            manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", _PEAK_RSS_OF_A_RUN, "--input", str(manifest), "--output", f"{tmp}/out{size}",
                 "--analysis_cache", f"{tmp}/cache{size}", "--llm_cache", f"{tmp}/llm{size}"],
                capture_output=True, text=True, check=True, env={**os.environ, "FACEXT_PROGRESS": "0"})
            runs[str(size)] = {**json.loads(done.stdout.strip().splitlines()[-1]),
                               "wall_s": round(time.perf_counter() - start, 1)}
    peaks = [runs[str(s)]["peak_rss_mb"] for s in sorted(sizes)]
    return {"runs": runs, "largest_over_smallest": round(peaks[-1] / peaks[0], 3),
            "runner": "DirectRunner (in process)", "flat": peaks[-1] <= 1.1 * peaks[0]}

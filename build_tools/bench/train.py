"""`facext bench train`: samples/s and peak memory of `training/train.py` on FiFa-Instruct
shards, for the `tiny` config on this machine's CPU, and the `small` config where a GPU is
present (bf16).

The shards are the bundled sample's (`fifa_annotate`, made here in a temporary folder
unless `--run` names an output folder).  Each config trains in a process of its own, so its
peak RSS is that process's, for `--steps` steps; samples/s is the median over the logged
steps after the first fifth (warm-up: the first batches' allocations, lazy imports).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[2] / "training" / "train.py"
CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs" / "fifa_mllm"


def _shards(run: str | None, tmp: Path) -> Path:
    if run:
        return Path(run)
    from pipelines.fifa_annotate import run as fifa

    out = tmp / "fifa"
    fifa(["--output", str(out), "--limit", "8"])
    return out


def measure(config: str, shards: Path, out: Path, steps: int, extra: tuple[str, ...] = ()) -> dict:
    """One training run in a child process: its steady samples/s, peak RSS and wall time."""
    probe = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
             "code = 0\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as exc:\n    code = exc.code or 0\n"
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(code)")
    command = [sys.executable, "-c", probe, str(TRAIN), "--config", str(CONFIGS / f"{config}.yaml"),
               "--data", str(shards), "--output_dir", str(out), "--max_steps", str(steps),
               f"train.checkpoint_every={steps}", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"training {config} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[len(rows) // 5:] or rows
    return {"config": config, "steps": steps, "wall_s": round(wall, 2),
            "samples_per_s": round(statistics.median(r["samples_per_s"] for r in steady), 2),
            "peak_rss_mb": round(peak_kb / 1024, 1), "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}


def bench_train(run: str | None = None, steps: int = 30) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        shards = _shards(run, Path(tmp))
        report = {"shards": str(shards) if run else "the bundled sample (8 pairs)",
                  "tiny": measure("tiny", shards, Path(tmp) / "tiny", steps)}
        if torch.cuda.is_available():
            report["gpu"] = torch.cuda.get_device_name(0)
            report["small"] = measure("small", shards, Path(tmp) / "small", steps)
        else:
            report["small"] = "no GPU on this machine: the small config was not run"
    return report


def summary(report: dict) -> str:
    lines = []
    for name in ("tiny", "small"):
        r = report[name]
        if isinstance(r, str):
            lines.append(f"{name}: {r}")
        else:
            lines.append(f"{name}: {r['samples_per_s']} samples/s, peak RSS {r['peak_rss_mb']} MB, {r['steps']} steps "
                         f"in {r['wall_s']} s (loss {r['first_loss']:.3f} -> {r['last_loss']:.3f})")
    return "\n".join(lines)

"""`facext bench train [--model NAME|all]`: samples/s and peak memory of `training/train.py`,
for each model's `tiny` config on this machine's CPU, and its `small` config where a GPU is
present (bf16; peak GPU memory too).

The shards are the bundled samples' (`fifa_annotate`, or `faceinstruct_build` for
face_llava, made here in a temporary folder unless `--run` names a FiFa-Instruct output
folder).  Each config trains in a process of its own, so its
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
CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
MODELS = ("fifa_mllm", "face_llava", "aap", "corit")


def _shards(run: str | None, tmp: Path) -> Path:
    if run:
        return Path(run)
    from pipelines.fifa_annotate import run as fifa

    out = tmp / "fifa"
    fifa(["--output", str(out), "--limit", "8"])
    return out


def _faceinstruct_shards(tmp: Path) -> Path:
    from pipelines.faceinstruct_build import run as faceinstruct

    out = tmp / "faceinstruct"
    if not out.exists():
        faceinstruct(["--output", str(out)])
    return out


def measure(config: str, shards: Path, out: Path, steps: int, extra: tuple[str, ...] = (),
            model: str = "fifa_mllm") -> dict:
    """One training run in a child process: its steady samples/s, peak RSS (and peak GPU
    memory on a GPU) and wall time."""
    probe = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
             "code = 0\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as exc:\n    code = exc.code or 0\n"
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
             "import torch\n"
             "if torch.cuda.is_available():\n"
             "    print('PEAK_GPU_B', torch.cuda.max_memory_allocated(), file=sys.stderr)\n"
             "sys.exit(code)")
    command = [sys.executable, "-c", probe, str(TRAIN), "--config", str(CONFIGS / model / f"{config}.yaml"),
               "--data", str(shards), "--output_dir", str(out), "--max_steps", str(steps),
               f"train.checkpoint_every={steps}", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"training {config} failed:\n{done.stderr[-3000:]}")
    lines = done.stderr.splitlines()
    peak_kb = int(next(line.split()[1] for line in lines if line.startswith("PEAK_RSS_KB")))
    gpu = [int(line.split()[1]) for line in lines if line.startswith("PEAK_GPU_B")]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[len(rows) // 5:] or rows
    result = {"model": model, "config": config, "steps": steps, "wall_s": round(wall, 2),
              "samples_per_s": round(statistics.median(r["samples_per_s"] for r in steady), 2),
              "step_s": round(statistics.median(1.0 / r["samples_per_s"] for r in steady)
                              * _batch_size(model, config), 4),
              "peak_rss_mb": round(peak_kb / 1024, 1), "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
    if gpu:
        result["peak_gpu_mb"] = round(gpu[0] / 2**20, 1)
    return result


def _batch_size(model: str, config: str) -> int:
    import yaml

    raw = yaml.safe_load((CONFIGS / model / f"{config}.yaml").read_text())
    train = raw.get("train") or {}
    return int(train.get("batch_size", 4)) * int(train.get("grad_accum", 1))


def bench_train(run: str | None = None, steps: int = 30, models: tuple[str, ...] = ("fifa_mllm",)) -> dict:
    """`tiny` (and on a GPU `small`) of each model; the first model's results are also the
    report's top-level `tiny`/`small` (the shape this command has always written)."""
    import torch

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    with tempfile.TemporaryDirectory() as tmp:
        fifa = _shards(run, Path(tmp)) if any(m != "face_llava" for m in models) else None
        report: dict = {"shards": str(fifa) if run else "the bundled samples (FiFa: 8 pairs; FaceInstruct)",
                        "models": {}}
        if torch.cuda.is_available():
            report["gpu"] = torch.cuda.get_device_name(0)
        for model in models:
            shards = _faceinstruct_shards(Path(tmp)) if model == "face_llava" else fifa
            entry = {"tiny": measure("tiny", shards, Path(tmp) / model / "tiny", steps, model=model)}
            if torch.cuda.is_available():
                entry["small"] = measure("small", shards, Path(tmp) / model / "small", steps, model=model)
            else:
                entry["small"] = "no GPU on this machine: the small config was not run"
            report["models"][model] = entry
        report.update(report["models"][models[0]])
    return report


def summary(report: dict) -> str:
    lines = []
    for model, entry in report["models"].items():
        for name in ("tiny", "small"):
            r = entry[name]
            if isinstance(r, str):
                lines.append(f"{model} {name}: {r}")
            else:
                gpu = f", peak GPU {r['peak_gpu_mb']} MB" if "peak_gpu_mb" in r else ""
                lines.append(f"{model} {name}: {r['samples_per_s']} samples/s ({r['step_s']} s/step), peak RSS "
                             f"{r['peak_rss_mb']} MB{gpu}, {r['steps']} steps in {r['wall_s']} s "
                             f"(loss {r['first_loss']:.3f} -> {r['last_loss']:.3f})")
    return "\n".join(lines)

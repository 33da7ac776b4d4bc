"""`facext export llava OUT --out DIR`: a FaceInstruct run as the LLaVA / Video-LLaVA training
files the Face-LLaVA trainer reads as published (`../shared/references/faceinstruct.md` §3.3):

    DIR/<source>.json                         a JSON list per source dataset (the published
                                              FaceInstruct files are one per source)
    DIR/<source>/images/<sample_id>.jpg       the face crop of an image sample
    DIR/<source>/videos/<sample_id>.mp4       the crop track of a video (24 fps, no audio)
    DIR/<source>/landmarks/<sample_id>.npy    68 iBUG points: (68, 2) for an image,
                                              (frames of the mp4, 68, 2) for a video,
                                              in pixels of a 256 crop (the trainer divides by 256)

Each entry is `{"id", "image"|"video", "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", ...}], "landmarks_2d"}` with paths relative to DIR: pass
DIR as both `--image_folder` and `--video_folder`.  Provenance (task, label, rating)
rides along in extra keys, which the trainer ignores.  The test split goes to
`<source>_test.json` with `--split test` (or both with `--split all`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

LANDMARK_SCALE = 256  # Face-LLaVA divides landmark pixels by 256
PNG_MAGIC = b"\x89PNG"


class ExportError(ValueError):
    """An output folder that is not a finished FaceInstruct run, or an export that would
    overwrite something."""


def export_llava(output: str, out: str, split: str = "train", overwrite: bool = False) -> dict[str, int]:
    """Write the export; returns entries per JSON file."""
    from datasets import Image, load_from_disk

    root = Path(output)
    report_path = root / "run_report.json"
    if not report_path.is_file():
        raise ExportError(f"{output} holds no run_report.json: not a finished pipeline run")
    report = json.loads(report_path.read_text())
    if report.get("pipeline") != "faceinstruct_build":
        raise ExportError(f"{output} was written by {report.get('pipeline')!r}; the LLaVA export reads "
                          f"faceinstruct_build runs")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise ExportError(f"--out {out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(target)
    splits = ("train", "test") if split == "all" else (split,)
    dataset = load_from_disk(str(root))
    entries: dict[str, list[dict]] = {}
    for name in splits:
        rows = dataset[name].cast_column("image", Image(decode=False))
        for row in rows:
            source = row["source_dataset"]
            file = source if name == "train" else f"{source}_{name}"
            entries.setdefault(file, []).append(_entry(row, target, source))
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    for file, items in sorted(entries.items()):
        (target / f"{file}.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
        counts[f"{file}.json"] = len(items)
    return counts


def _entry(row: dict, target: Path, source: str) -> dict:
    sid = row["sample_id"]
    points = np.asarray(row["landmarks"], np.float32) * LANDMARK_SCALE
    entry: dict = {"id": sid}
    if row["media_type"] == "video":
        rel = f"{source}/videos/{sid}.mp4"
        _write(target / rel, row["video"])
        entry["video"] = rel
    else:
        data = row["image"]["bytes"]
        suffix = "png" if data[:4] == PNG_MAGIC else "jpg"
        rel = f"{source}/images/{sid}.{suffix}"
        _write(target / rel, data)
        entry["image"] = rel
        points = points[0]  # (68, 2): one frame
    landmarks = f"{source}/landmarks/{sid}.npy"
    (target / landmarks).parent.mkdir(parents=True, exist_ok=True)
    np.save(target / landmarks, points)
    entry["conversations"] = [{"from": turn["from"], "value": turn["value"]} for turn in row["conversations"]]
    entry["landmarks_2d"] = landmarks
    entry.update(task=row["task"], label=json.loads(row["label"]), source_path=row["source_path"],
                 source_frame=row["source_frame"], rating=row["rating"])
    return entry


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

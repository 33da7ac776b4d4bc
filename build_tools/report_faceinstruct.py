"""`facext report OUTPUT -o report.html` on a FaceInstruct run: one static page to judge it
by eye.

The run's figures (inputs that add up, per source and reason, the video tracks' jitter,
ratings), plots (samples per task and split, sources, ratings, reject reasons) and a card
per selected sample: the crop with its 68 landmarks drawn, for a video the strip of its
sampled frames (landmarks of each), the label, the instruction and description, the
rating and the measurements.  With `--rejected`, the rejected rows in a table.  Pictures
are PNG files in `PAGE_files/` beside the page, as for FiFa-Instruct.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from build_tools.report_html import (
    STYLE,
    THUMB,
    Pictures,
    ReportError,
    Selection,
    esc,
    figure_html,
    ratings_and_rejects_plots,
)
from schemas.faceinstruct import SPLITS, TASKS

LANDMARK_COLOUR = (0, 255, 120)


def draw_landmarks(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The crop with its 68 points (normalised 0..1) drawn as small dots."""
    out = image.copy()
    h, w = out.shape[:2]
    radius = max(1, round(w / 128))
    for x, y in np.asarray(points, np.float64):
        cv2.circle(out, (round(x * w), round(y * h)), radius, LANDMARK_COLOUR, -1, cv2.LINE_AA)
    return out


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def frame_strip(row: dict) -> np.ndarray:
    """A video row's sampled frames side by side, each with its landmarks."""
    tiles = [draw_landmarks(cv2.resize(_decode(data), (THUMB // 2, THUMB // 2), interpolation=cv2.INTER_AREA),
                            row["landmarks"][index])
             for data, index in zip(row["frames"], row["frame_indices"], strict=True)]
    return np.concatenate(tiles, axis=1)


def select(dataset, selection: Selection) -> list[tuple[str, dict]]:
    """(split, row) of the first `per_task` rows of each selected task, over the splits in order."""
    tasks = selection.tasks or TASKS
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ReportError(f"unknown task(s) {unknown}; FaceInstruct's are {', '.join(TASKS)}")
    if selection.concepts:
        raise ReportError("--concept selects FiFa-Instruct samples; a FaceInstruct run has no concepts")
    taken: dict[str, int] = {}
    out = []
    for split in SPLITS:
        rows = dataset[split]
        for i, task in enumerate(rows["task"]):
            if task in tasks and taken.get(task, 0) < selection.per_task:
                taken[task] = taken.get(task, 0) + 1
                out.append((split, rows[i]))
    return sorted(out, key=lambda pair: TASKS.index(pair[1]["task"]))


def _card(split: str, row: dict, writer: Pictures) -> str:
    name = f"{row['sample_id']}"
    crop = draw_landmarks(_decode(row["image"]["bytes"]), row["landmarks"][len(row["landmarks"]) // 2
                                                                            if row["media_type"] == "video" else 0])
    figures = [figure_html(writer.save(crop, f"crop_{name}"), "crop, 68 landmarks"
                           + (" (middle track frame)" if row["media_type"] == "video" else ""))]
    if row["media_type"] == "video":
        strip = writer.save(frame_strip(row), f"strip_{name}", side=None)
        figures.append(f'<figure><img class="strip" src="{esc(strip)}" alt="sampled frames"><figcaption>'
                       f'{len(row["frames"])} sampled frames of {row["track_frames"]} '
                       f'({row["fps"]:g} fps track)</figcaption></figure>')
    human, gpt = row["conversations"]
    rating = row["rating"]
    scores = (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rating.items() if k != "reason")
              + f" — {rating['reason']}") if rating else "not rated"
    measured = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row["measurements"].items() if v is not None)
    where = row["source_path"] + (f" frame {row['source_frame']}" if row["source_frame"] is not None else "")
    return f"""<div class="card"><h3>{esc(row['label_text'])}</h3>
<div><span class="tag">{esc(row['task'])}</span><span class="tag">{esc(row['source_dataset'])}</span>
<span class="tag">{esc(split)}</span><span class="muted">{esc(where)}</span></div>
<div class="pics">{''.join(figures)}</div>
<div class="conv"><div class="turn human">{esc(human['value'])}</div><div class="turn gpt">{esc(gpt['value'])}</div></div>
<p class="muted">rating: {esc(scores)}<br>measured: {esc(measured or 'nothing')}</p></div>"""


def _plots(report: dict, writer: Pictures) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    by_task = report["samples"]["by_task_and_split"]
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(TASKS))
    for j, split in enumerate(SPLITS):
        ax.bar(x + (j - 0.5) * 0.4, [by_task.get(t, {}).get(split, 0) for t in TASKS], 0.4, label=split)
    ax.set_xticks(x, TASKS)
    ax.legend(frameon=False)
    ax.set_title("samples per task and split")
    plots.append(("samples per task and split", writer.figure(fig, "plot_tasks")))
    sources = report.get("by_source") or {}
    if sources:
        names = sorted(sources)
        fig, ax = plt.subplots(figsize=(7, max(2.2, 0.35 * len(names))))
        written = [sources[n]["written"] for n in names]
        ax.barh(names, written, color="#3a7", label="written")
        ax.barh(names, [sources[n]["rejected"] for n in names], left=written, color="#c55", label="rejected")
        ax.legend(frameon=False)
        ax.set_title("items per source")
        plots.append(("items per source", writer.figure(fig, "plot_sources")))
    plots += ratings_and_rejects_plots(report, writer)
    return plots


def _summary(report: dict) -> str:
    rows: list[tuple[str, Any]] = [("inputs", report["inputs"]), ("items written", report["items_written"]),
                                   ("items rejected", report["items_rejected"]), ("adds up", report["adds_up"])]
    rows += [(f"samples ({split})", n) for split, n in report["samples"]["by_split"].items()]
    video = report.get("video") or {}
    if video.get("videos"):
        jitter = video["mean_jitter"]
        rows.append(("videos, track frames", f"{video['videos']}, {video['track_frames']}"))
        rows.append(("box jitter: detector → track", f"{jitter['detector']} → {jitter['track']}"))
    llm = report.get("llm") or {}
    rows.append(("describer / rater", f"{llm.get('describer')} / {llm.get('rater')}"))
    ratings = report.get("ratings") or {}
    if ratings.get("pairs_rated"):
        rows.append(("mean ratings", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ratings["mean"].items())))
    rows.append(("facext", f"{report['facext_version']} (options {report['options_hash']})"))
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    sources = "".join(
        f"<tr><td>{esc(n)}</td><td>{e['inputs']}</td><td>{e['written']}</td><td>{e['rejected']}</td>"
        f"<td>{esc(', '.join(f'{r} {c}' for r, c in sorted(e['by_reason'].items())))}</td></tr>"
        for n, e in sorted((report.get("by_source") or {}).items()))
    return (f"<table>{table}</table><h3>Per source</h3><table class='small'><tr><th>source</th><th>inputs</th>"
            f"<th>written</th><th>rejected</th><th>why</th></tr>{sources}</table>")


def _rejected(output: Path) -> str:
    import datasets

    rows = datasets.load_from_disk(str(output / "rejected"))
    body = "".join(
        f"<tr><td>{esc(r['source_dataset'])}</td><td>{esc(r['source_path'])}</td>"
        f"<td>{'' if r['source_frame'] is None else r['source_frame']}</td><td>{esc(r['stage'])}</td>"
        f"<td>{esc(r['reason'])}</td><td>{esc(r['detail'])}</td></tr>" for r in rows)
    return ("<table class='small'><tr><th>source</th><th>path</th><th>frame</th><th>stage</th><th>reason</th>"
            f"<th>detail</th></tr>{body}</table>")


def write_faceinstruct_report(output: Path, path: Path, report: dict, selection: Selection) -> dict[str, Any]:
    import datasets

    files = path.parent / f"{path.stem}_files"
    files.mkdir(parents=True, exist_ok=True)
    for old in files.glob("*.png"):
        old.unlink()
    writer = Pictures(files, path.parent)
    dataset = datasets.load_from_disk(str(output))
    dataset = datasets.DatasetDict({s: dataset[s].cast_column("image", datasets.Image(decode=False))
                                    for s in SPLITS})
    chosen = select(dataset, selection)
    cards = "".join(_card(split, row, writer) for split, row in chosen)
    plots = "".join(figure_html(src, title) for title, src in _plots(report, writer))
    rejected = f"<h2 id='rejected'>Rejected inputs</h2>{_rejected(output)}" if selection.rejected else ""
    options = esc(json.dumps(report.get("options", {}), indent=1))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facext report: {esc(output.name)}</title>
<style>{STYLE}
img.strip {{ width: auto; height: {THUMB // 2}px; }}</style></head>
<body><h1>FaceInstruct run: {esc(output.name)}</h1>
<p class="muted">{esc(report.get('input', ''))} → {esc(report.get('output', ''))}</p>
<h2 id="run">Run</h2>{_summary(report)}
<details><summary>pipeline options</summary><pre>{options}</pre></details>
<h2 id="dataset">Dataset</h2><div class="plots">{plots}</div>
<h2 id="samples">Samples ({len(chosen)}: {selection.per_task} per task)</h2>{cards or '<p>no sample</p>'}
{rejected}</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return {"samples": len(chosen), "pairs": 0, "images": writer.count, "page": str(path)}

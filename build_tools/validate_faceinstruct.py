"""`facext validate OUTPUT` on a FaceInstruct output folder (`faceinstruct_build`).

Checks the schema against `schemas.FaceSample`; every row's consistency: its label object
for its task, the `<image>`/`<video>` token of its instruction, a crop of `--crop_size`, a
video's track (an mp4, as many landmark frames as track frames, the sampled frames inside
the track); ratings within the run's bar; no subject in both splits; shard sizes; the
rejected table; and that the run report adds up and matches the rows on disk.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from build_tools.validate import Validation, check_rejected_table, check_shard_sizes, load_report
from schemas.faceinstruct import MEDIA_TYPES, SPLITS, TASKS, FaceSample, RejectedItem

LABEL_KEYS = {"expression": {"expression"}, "au": {"aus"}, "attribute": {"attributes"}, "age": {"age"},
              "deepfake": {"fake", "method"}}


def _label_problem(task: str, text: str) -> str | None:
    try:
        label = json.loads(text)
    except ValueError:
        return "label is not JSON"
    if not isinstance(label, dict) or set(label) != LABEL_KEYS[task]:
        return f"label {text} does not hold {sorted(LABEL_KEYS[task])}"
    if task == "au" and (label["aus"] != sorted(set(label["aus"])) or
                         not all(isinstance(a, int) for a in label["aus"])):
        return "AUs are not ascending whole numbers"
    if task == "age" and (not isinstance(label["age"], int) or isinstance(label["age"], bool)):
        return "age is not a whole number"
    if task == "deepfake" and (not isinstance(label["fake"], bool) or (label["method"] is not None
                                                                       and not label["fake"])):
        return "a real item names a method, or fake is not true/false"
    return None


def _check_row(row: dict, split: str, out: Validation, options: dict) -> None:
    from PIL import Image

    where = f"{split}/{row['sample_id']} ({row['task']})"
    if row["task"] not in TASKS or row["media_type"] not in MEDIA_TYPES:
        out.fail(f"{where}: unknown task or media type {row['media_type']!r}")
        return
    if row["split"] != split:
        out.fail(f"{where}: split column says {row['split']!r}")
    problem = _label_problem(row["task"], row["label"])
    if problem:
        out.fail(f"{where}: {problem}")
    conv = row["conversations"]
    token = "<video>" if row["media_type"] == "video" else "<image>"
    if len(conv) != 2 or (conv[0]["from"], conv[1]["from"]) != ("human", "gpt"):
        out.fail(f"{where}: conversation is not one human then one gpt turn")
    elif not conv[0]["value"].startswith(token + "\n") or conv[0]["value"].count("<") != 1 or not conv[1]["value"]:
        out.fail(f"{where}: the instruction does not start with {token} alone, or the answer is empty")
    size = options.get("crop_size")
    try:
        with Image.open(io.BytesIO(row["image"]["bytes"])) as image:
            if size and image.size != (size, size):
                out.fail(f"{where}: crop is {image.size}, not {size}x{size}")
    except Exception as exc:  # noqa: BLE001 - any decode failure is the problem
        out.fail(f"{where}: crop does not decode ({exc})")
    landmarks = row["landmarks"]
    if len(landmarks) != row["track_frames"] or any(len(frame) != 68 for frame in landmarks):
        out.fail(f"{where}: {len(landmarks)} landmark frames for {row['track_frames']} track frames")
    if row["media_type"] == "video":
        if not row["video"] or row["video"][4:8] != b"ftyp":
            out.fail(f"{where}: no mp4 crop track")
        if len(row["frames"]) != len(row["frame_indices"]) or \
                any(not 0 <= i < row["track_frames"] for i in row["frame_indices"]):
            out.fail(f"{where}: sampled frames do not fit the track")
    elif row["frames"] or row["video"] is not None or row["track_frames"] != 1:
        out.fail(f"{where}: an image row with frames or a video")
    rating, bar = row["rating"], options.get("min_rating")
    if rating and bar is not None and rating["overall"] < bar:
        out.fail(f"{where}: rated {rating['overall']}, below --min_rating {bar}")
    if options.get("rater") not in (None, "none") and not rating:
        out.fail(f"{where}: the run rated its items; this one has no rating")
    out.counts[(row["task"], split)] += 1


def validate_faceinstruct(output: str | Path) -> Validation:
    import datasets

    from schemas.features import hf_features

    out = Validation()
    root = Path(output)
    try:
        dd = datasets.load_from_disk(str(root))
    except Exception as exc:  # noqa: BLE001
        out.fail(f"datasets.load_from_disk({root}) failed: {exc}")
        return out
    report = load_report(root) or {}
    options = report.get("options", {})
    expected = hf_features(FaceSample).to_dict()
    seen: set[str] = set()
    subjects: dict[tuple, set[str]] = {}
    for split in SPLITS:
        if split not in dd:
            out.fail(f"split {split!r} missing")
            continue
        ds = dd[split]
        if ds.features.to_dict() != expected:
            out.fail(f"{split}: features differ from schemas.FaceSample")
            continue
        out.rows[split] = out.images[split] = ds.num_rows
        for row in ds.cast_column("image", datasets.Image(decode=False)):
            if row["sample_id"] in seen:
                out.fail(f"{split}/{row['sample_id']}: duplicate sample_id")
            seen.add(row["sample_id"])
            _check_row(row, split, out, options)
            if row["subject_id"]:
                subjects.setdefault((row["source_dataset"], row["subject_id"]), set()).add(split)
        check_shard_sizes(root / split, out)
    both = sorted(k for k, v in subjects.items() if len(v) > 1)
    if both:
        out.fail(f"{len(both)} subjects in both train and test, e.g. {both[:3]}")
    check_rejected_table(root, out, RejectedItem)
    _check_report(report, out)
    return out


def _check_report(report: dict, out: Validation) -> None:
    if not report:
        out.fail("run_report.json missing")
        return
    written, rejected = report["items_written"], report["items_rejected"]
    if report["inputs"] != written + rejected:
        out.fail(f"report: inputs {report['inputs']} != written {written} + rejected {rejected}")
    if written != sum(out.rows.values()):
        out.fail(f"report: {written} items written, {sum(out.rows.values())} rows in the shards")
    if rejected != sum(out.rejected.values()):
        out.fail(f"report: {rejected} rejected, {sum(out.rejected.values())} in the table")
    for (task, split), n in out.counts.items():
        if report["samples"]["by_task_and_split"].get(task, {}).get(split) != n:
            out.fail(f"report: {task}/{split} count differs from disk ({n})")
    if sum(s["rejected"] for s in report["stages"]) != rejected:
        out.fail("report: the stage table's rejections do not add up to items_rejected")
    for name, entry in (report.get("by_source") or {}).items():
        if entry["inputs"] != entry["written"] + entry["rejected"]:
            out.fail(f"report: source {name} does not add up")

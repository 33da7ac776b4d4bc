"""The generic reader (`--input MANIFEST`): JSONL, CSV or Parquet rows with the columns
`media`, `task`, `label` and optionally `subject_id`, `split`, `source_dataset` and
`source_frame`.

`media` is relative to the manifest's folder (absolute paths with --allow_absolute_paths),
as FiFa's manifests are; a folder of frames is a video.  `label` is the task's label
object (JSON text or a mapping: `{"expression": "Happy"}`), or the bare value for the
one-key tasks: `Happy`, `34`, `[1, 12]` / `1 12`, `Male Smiling`, `fake` / `real`.
"""

from __future__ import annotations

import json
import os

from pipelines.common.manifest import manifest_name, resolve
from pipelines.vision.video import VIDEO_SUFFIXES
from schemas.common import RejectReason, Stage
from schemas.faceinstruct import CELEBA_ATTRIBUTES, EMOTION_OF, SPLITS, TASKS, FaceItem, RejectedItem

REQUIRED = ("media", "task", "label")


def parse_label(task: str, value) -> dict:
    """The label object of `task` from a manifest cell; ValueError when it is not one."""
    if isinstance(value, str) and value.strip().startswith(("{", "[")):
        value = json.loads(value)
    if isinstance(value, dict):
        obj = value
    else:
        key = {"expression": "expression", "au": "aus", "attribute": "attributes", "age": "age",
               "deepfake": "fake"}[task]
        obj = {key: value}
    if task == "expression":
        name = obj.get("expression")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("an expression label is a class name")
        if name.strip().lower() not in EMOTION_OF:  # a misspelt class would be described as written
            raise ValueError(f"{name.strip()!r} is not an expression class of the source datasets "
                             f"({', '.join(sorted(EMOTION_OF))})")
        return {"expression": name.strip()}
    if task == "au":
        aus = obj.get("aus")
        if isinstance(aus, str):
            aus = aus.replace(",", " ").split()
        aus = sorted({int(a) for a in (aus if isinstance(aus, list) else [aus])})
        if any(a < 1 or a > 99 for a in aus):
            raise ValueError("AU numbers are 1..99")
        return {"aus": aus}
    if task == "attribute":
        names = obj.get("attributes")
        names = names.replace(",", " ").split() if isinstance(names, str) else list(names or [])
        unknown = [n for n in names if n not in CELEBA_ATTRIBUTES]
        if unknown:
            raise ValueError(f"not CelebA attributes: {', '.join(map(str, unknown))}")
        return {"attributes": [a for a in CELEBA_ATTRIBUTES if a in names]}
    if task == "age":
        age = obj.get("age")
        if isinstance(age, bool) or (isinstance(age, float) and not age.is_integer()):
            raise ValueError("an age is a whole number of years")
        age = int(str(age).strip()) if not isinstance(age, int) else age
        if not 0 <= age <= 130:
            raise ValueError(f"age {age} is out of 0..130")
        return {"age": age}
    fake = obj.get("fake")
    if isinstance(fake, str):
        if fake.strip().lower() not in ("fake", "real", "true", "false", "1", "0"):
            raise ValueError(f"deepfake label {fake!r} is not fake/real")
        fake = fake.strip().lower() in ("fake", "true", "1")
    if not isinstance(fake, bool):
        raise ValueError("a deepfake label is fake or real")  # noqa: TRY004 - one error type for bad labels
    method = obj.get("method") if fake else None
    return {"fake": fake, "method": str(method) if method else None}


def manifest_parser(allow_absolute: bool):
    """The row parser `ReadManifest` calls: a `FaceItem`, or a rejected row."""
    return _ManifestParser(allow_absolute)


class _ManifestParser:
    def __init__(self, allow_absolute: bool):
        self.allow_absolute = allow_absolute

    def __call__(self, manifest: str, index: int, row) -> FaceItem | RejectedItem:
        name = manifest_name(manifest)
        origin = f"{name}:{index + 1}"

        def reject(reason: RejectReason, detail: str, source_path: str = "") -> RejectedItem:
            return RejectedItem(source_dataset=(row.get("source_dataset") if isinstance(row, dict) else None)
                                or "manifest", source_path=source_path, task=None,
                                stage=(reason.stage or Stage.MANIFEST).value, reason=reason.value, detail=detail,
                                origin=origin)

        if not isinstance(row, dict):
            return reject(RejectReason.BAD_MANIFEST_ROW, str(row))
        missing = [c for c in REQUIRED if row.get(c) in (None, "")]
        if missing:
            return reject(RejectReason.BAD_MANIFEST_ROW, f"missing {', '.join(missing)}", str(row.get("media") or ""))
        ref, task = str(row["media"]), str(row["task"]).strip()
        if task not in TASKS:
            return reject(RejectReason.BAD_MANIFEST_ROW, f"task {task!r} is not one of {', '.join(TASKS)}", ref)
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            return reject(RejectReason.BAD_MANIFEST_ROW, f"split {split!r} is not train or test", ref)
        try:
            media = resolve(manifest, ref, self.allow_absolute)
        except ValueError as exc:
            return reject(RejectReason.PATH_OUTSIDE_MANIFEST, str(exc), ref)
        try:
            label = parse_label(task, row["label"])
        except (ValueError, TypeError) as exc:
            return reject(RejectReason.UNKNOWN_LABEL, f"{task} label {str(row['label'])[:80]!r}: {exc}", ref)
        frame = row.get("source_frame")
        frame = None if frame in (None, "") else int(frame)
        is_video = ref.lower().endswith(VIDEO_SUFFIXES) or (os.path.isdir(media) and "://" not in media)
        media_type = "image" if frame is not None or not is_video else "video"
        return FaceItem(source_dataset=str(row.get("source_dataset") or "manifest"), source_path=ref,
                        source_frame=frame, media=media, media_type=media_type, task=task, label=label,
                        split=split, subject_id=str(row["subject_id"]) if row.get("subject_id") else None,
                        origin=origin, manifest=name, row=index)

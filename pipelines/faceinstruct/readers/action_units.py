"""Action-unit readers: DISFA (frames of a video, intensities) and BP4D (frame images,
occurrence) (`../shared/references/faceinstruct_sources.md`, "Action units")."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

from pipelines.faceinstruct.labels import BP4D_PRESENT, DISFA_ACTIVE_INTENSITY
from pipelines.faceinstruct.readers.base import (
    IMAGE_SUFFIXES,
    ReadContext,
    SourceError,
    SourceTree,
    int_or_none,
    lines,
)
from pipelines.vision.video import VIDEO_SUFFIXES
from schemas.common import RejectReason

DISFA_AU_FILE = re.compile(r"(^|/)(SN\d{3})_au(\d+)\.txt$", re.IGNORECASE)


def read_disfa(tree: SourceTree, ctx: ReadContext) -> Iterator:
    """One item per labelled frame of each subject's video (left camera by default):
    `source_path` the video, `source_frame` the 0-based frame (label line t is frame t-1).
    An AU is active at intensity >= 2 (`labels.DISFA_ACTIVE_INTENSITY`).  `frame_step`
    keeps every n-th labelled frame."""
    camera = ctx.options.get("camera", "left").lower()
    step = max(1, int(ctx.options.get("frame_step", 1)))
    files: dict[str, dict[int, str]] = {}
    for path in tree.files:
        match = DISFA_AU_FILE.search(path)
        if match:
            files.setdefault(match.group(2).upper(), {})[int(match.group(3))] = path
    if not files:
        raise SourceError(f"no DISFA labels (ActionUnit_Labels/SN001/SN001_au1.txt) under {tree.root}")
    videos = {p.rsplit("/", 1)[1].lower(): p for p in tree.files if p.lower().endswith(VIDEO_SUFFIXES)}
    for subject in sorted(files):
        au_files = files[subject]
        intensities: dict[int, dict[int, int]] = {}
        bad_lines = []
        for au, rel in sorted(au_files.items()):
            for number, line in lines(tree, rel):
                fields = line.replace(" ", "").split(",")
                frame, value = (int_or_none(fields[0]), int_or_none(fields[1])) if len(fields) == 2 else (None, None)
                if frame is None or value is None or frame < 1:
                    bad_lines.append(f"{rel}:{number}")
                    continue
                intensities.setdefault(frame, {})[au] = value
        origin = au_files[min(au_files)].rsplit("/", 1)[0]
        video = videos.get(f"{camera}video{subject.lower()}_comp.avi") or next(
            (p for name, p in sorted(videos.items()) if name.startswith(f"{camera}video{subject.lower()}")), None)
        for where in bad_lines:
            yield ctx.reject(where.split(":")[0], RejectReason.UNKNOWN_LABEL, f"{where} is not `<frame>,<intensity>`",
                             origin=where)
        missing = video is None  # every labelled frame of it is rejected, so the counts stay per frame
        path = video or f"Videos_{camera.capitalize()}Camera/{camera.capitalize()}Video{subject}_comp.avi"
        for frame in sorted(intensities)[::step]:
            where = f"{origin}:frame {frame}"
            if missing:
                yield ctx.missing(path, where, frame=frame - 1)
                continue
            active = sorted(au for au, value in intensities[frame].items() if value >= DISFA_ACTIVE_INTENSITY)
            yield ctx.item(tree, video, {"aus": active}, origin=where, media_type="image", subject=subject,
                           frame=frame - 1)


BP4D_OCC_FILE = re.compile(r"(^|/)([FM]\d{3})_(T\d+)\.csv$", re.IGNORECASE)


def read_bp4d(tree: SourceTree, ctx: ReadContext) -> Iterator:
    """One item per coded frame: `BP4D-training/<subject>/<task>/<frame>.jpg` with the AUs
    whose AU_OCC value is 1 (0 absent, 9 not coded: never active)."""
    occ = [p for p in tree.files if "au_occ/" in p.lower() and BP4D_OCC_FILE.search(p)]
    if not occ:
        raise SourceError(f"no BP4D occurrence labels (AUCoding/AU_OCC/F001_T1.csv) under {tree.root}")
    step = max(1, int(ctx.options.get("frame_step", 1)))
    for rel in occ:
        match = BP4D_OCC_FILE.search(rel)
        subject, task = match.group(2).upper(), match.group(3).upper()
        frames_dir = next((d for d in sorted(tree.dirs) if d.lower().endswith(f"/{subject}/{task}".lower())
                           and "au_occ" not in d.lower()), None)
        frames = {}
        if frames_dir is not None:
            for p in tree.under(frames_dir, IMAGE_SUFFIXES):
                if (n := int_or_none(p.rsplit("/", 1)[1].rsplit(".", 1)[0])) is not None:
                    frames.setdefault(n, p)
        with open(tree.path(rel), encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if row]
        aus = [(i, int(h)) for i, h in enumerate(header) if i > 0 and h.isdigit()]
        for number, row in rows[::step]:
            origin = f"{rel}:{number}"
            frame = int_or_none(row[0]) if row else None
            expected = f"{frames_dir or f'BP4D-training/{subject}/{task}'}/{frame}.jpg"
            if frame is None or len(row) < len(header):
                yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} is not a frame number and "
                                 f"{len(header) - 1} AU values", origin=origin)
                continue
            path = frames.get(frame)
            if path is None:
                yield ctx.missing(expected, origin)
                continue
            active = sorted(au for i, au in aus if int_or_none(row[i]) == BP4D_PRESENT)
            yield ctx.item(tree, path, {"aus": active}, origin=origin, media_type="image", subject=subject)



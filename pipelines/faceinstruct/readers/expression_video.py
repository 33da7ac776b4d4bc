"""Expression readers, video: DFEW, MAFW, FERV39k and CREMA-D
(`../shared/references/faceinstruct_sources.md`, "Expression: video")."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

from pipelines.faceinstruct.labels import CREMA_D_CLASSES, DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES
from pipelines.faceinstruct.readers.base import (
    ReadContext,
    SourceError,
    SourceTree,
    int_or_none,
    lines,
)
from pipelines.vision.video import VIDEO_SUFFIXES
from schemas.common import RejectReason

# DFEW and MAFW ship five folds; every clip is in the test list of exactly one fold and in
# the train lists of the other four.  The split is fold `--fold` (1 by default).


def _fold_file(tree: SourceTree, fold: int, part: str, names: tuple[str, ...]) -> str | None:
    """DFEW's `train(single-labeled)/set_1.csv` (or a renamed `train/set_1.csv`)."""
    for folder in names:
        found = tree.ending(f"{folder}/set_{fold}.csv")
        if found:
            return found[0]
    return None


def _media_by_number(tree: SourceTree, folders: tuple[str, ...]) -> tuple[dict[int, str], str]:
    """Clip number -> its media under the first of `folders` that holds any: `<n>.mp4`
    files at any depth (DFEW's `part_N/`), else frame folders named by the number; and
    how a missing clip is named there (a format with `{n}`)."""
    for folder in folders:
        inside = [p for p in tree.files if f"/{folder.lower()}/" in "/" + p.lower()]
        videos = [p for p in inside if p.lower().endswith(VIDEO_SUFFIXES)]
        if videos:
            found = {n: p for p in reversed(videos)
                     if (n := int_or_none(p.rsplit("/", 1)[1].split(".")[0])) is not None}
            prefix = videos[0][:videos[0].lower().index(folder.lower()) + len(folder)]
            return found, prefix + "/{n}.mp4"
        frame_dirs: dict[int, str] = {}
        for p in inside:
            parent = p.rsplit("/", 1)[0]
            n = int_or_none(parent.rsplit("/", 1)[-1])
            if n is not None:
                frame_dirs.setdefault(n, parent)
        if frame_dirs:
            some = next(iter(frame_dirs.values()))
            return frame_dirs, some.rsplit("/", 1)[0] + "/{n:05d}"
    return {}, "Clip/original/{n}.mp4"


def read_dfew(tree: SourceTree, ctx: ReadContext) -> Iterator:
    fold = int(ctx.options.get("fold", 1))
    media, missing_as = _media_by_number(tree, ("Clip/original", "original", "clip_224x224", "clip_224x224_16f"))
    seen: set[int] = set()
    found_any = False
    for split, names in (("train", ("train(single-labeled)", "train(single_labeled)", "train")),
                         ("test", ("test(single-labeled)", "test(single_labeled)", "test"))):
        rel = _fold_file(tree, fold, split, names)
        if rel is None:
            continue
        found_any = True
        for number, line in lines(tree, rel):
            row = next(csv.reader([line]))
            if number == 1 and row and row[0].strip() == "video_name":
                continue  # the header
            origin = f"{rel}:{number}"
            clip = int_or_none(row[0]) if row else None
            if clip is None or len(row) < 2:
                yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} is not `video_name,label`: "
                                 f"{line[:60]!r}", origin=origin)
                continue
            if clip in seen:
                continue
            seen.add(clip)
            name = DFEW_CLASSES.get(int_or_none(row[1]) or -1)
            path = media.get(clip)
            if path is None:
                yield ctx.missing(missing_as.format(n=clip), origin)
            elif name is None:
                yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"label {row[1].strip()!r} is not one of "
                                 f"DFEW's 1..7", origin=origin)
            else:
                yield ctx.item(tree, path, {"expression": name}, origin=origin, media_type="video", split=split)
    if not found_any:
        raise SourceError(f"no DFEW split CSVs (EmoLabel_DataSplit/train(single-labeled)/set_{fold}.csv) under {tree.root}")


def read_mafw(tree: SourceTree, ctx: ReadContext) -> Iterator:
    fold = int(ctx.options.get("fold", 1))
    by_name = {p.rsplit("/", 1)[1]: p for p in reversed(tree.files)
               if re.fullmatch(r"\d{5}\.mp4", p.rsplit("/", 1)[1], re.IGNORECASE)}
    words = {w: w for w in MAFW_CLASSES.values()}
    found_any = False
    seen: set[str] = set()
    for split in ("train", "test"):
        candidates = tree.ending(f"single/no_caption/set_{fold}/{split}.txt")
        if not candidates:
            continue
        found_any = True
        rel = candidates[0]
        for number, line in lines(tree, rel):
            origin = f"{rel}:{number}"
            fields = line.split()
            if len(fields) != 2:
                yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} is not `<clip> <label>`: "
                                 f"{line[:60]!r}", origin=origin)
                continue
            clip, word = fields
            clip = clip if clip.lower().endswith(".mp4") else clip + ".mp4"
            if clip in seen:
                continue
            seen.add(clip)
            path = by_name.get(clip)
            if path is None:
                yield ctx.missing(f"data/clips/{clip}", origin)
            elif word.lower() not in words:
                yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"label {word!r} is not one of MAFW's 11 "
                                 f"classes", origin=origin)
            else:
                yield ctx.item(tree, path, {"expression": word.lower()}, origin=origin, media_type="video",
                               split=split)
    if not found_any:
        raise SourceError(f"no MAFW split files (Train & Test Set/single/no_caption/set_{fold}/train.txt) under {tree.root}")


def read_ferv39k(tree: SourceTree, ctx: ReadContext) -> Iterator:
    # Clips as videos (0_7_LabelClips/<rel>.mp4) when present, else face-crop frame folders.
    videos = {p.split("0_7_LabelClips/", 1)[1].rsplit(".", 1)[0]: p for p in tree.files
              if "0_7_LabelClips/" in p and p.lower().endswith(VIDEO_SUFFIXES)}
    crop_root = next((d for d in sorted(tree.dirs) if d.rsplit("/", 1)[-1] == "2_ClipsforFaceCrop"), None)
    found_any = False
    seen: set[str] = set()
    for split, name in (("train", "train_All.csv"), ("test", "test_All.csv")):
        candidates = tree.ending(f"All_scenes/{name}") or tree.named(name)
        if not candidates:
            continue
        found_any = True
        rel = candidates[0]
        for number, line in lines(tree, rel):
            origin = f"{rel}:{number}"
            row = next(csv.reader(io.StringIO(line), delimiter=" "))
            row = [f for f in row if f]
            if len(row) < 2:
                yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} is not `<clip path> <label>`: "
                                 f"{line[:60]!r}", origin=origin)
                continue
            clip, word = row[-2].strip("/"), row[-1]
            if clip in seen:
                continue
            seen.add(clip)
            path = videos.get(clip)
            if path is None and crop_root is not None and f"{crop_root}/{clip}" in tree.dirs:
                path = f"{crop_root}/{clip}"
            if path is None:
                yield ctx.missing(f"2_ClipsforFaceCrop/{clip}", origin)
            elif word not in FERV39K_CLASSES:
                yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"label {word!r} is not one of FERV39k's 7 "
                                 f"classes", origin=origin)
            else:
                yield ctx.item(tree, path, {"expression": word}, origin=origin, media_type="video", split=split)
    if not found_any:
        raise SourceError(f"no FERV39k split files (4_setups/All_scenes/train_All.csv, test_All.csv) under {tree.root}")


CREMA_D_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def read_crema_d(tree: SourceTree, ctx: ReadContext) -> Iterator:
    # The label is the file name: <ActorID>_<Sentence>_<EMO>_<LEVEL>.flv; no official split.
    clips = [p for p in tree.files if "/videoflash/" in "/" + p.lower() and p.lower().endswith(VIDEO_SUFFIXES)]
    if not clips:
        raise SourceError(f"no CREMA-D clips (VideoFlash/<ActorID>_<Sentence>_<EMO>_<LEVEL>.flv) under {tree.root}")
    for path in clips:
        stem = path.rsplit("/", 1)[1].rsplit(".", 1)[0]
        match = CREMA_D_NAME.match(stem)
        if match is None:
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"{stem!r} is not <Actor>_<Sentence>_<EMO>_<LEVEL>",
                             origin=path)
        elif match.group(3) not in CREMA_D_CLASSES:
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"emotion code {match.group(3)!r} is not one of "
                             f"{', '.join(CREMA_D_CLASSES)}", origin=path)
        else:
            yield ctx.item(tree, path, {"expression": CREMA_D_CLASSES[match.group(3)]}, origin=path,
                           media_type="video", subject=match.group(1))

"""Deepfake readers: FaceForensics++ and FakeAVCeleb (`../shared/references/faceinstruct_sources.md`,
"Deepfake")."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

from pipelines.faceinstruct.labels import FAKEAVCELEB_FAKE_VIDEO, FFPP_COMPRESSIONS
from pipelines.faceinstruct.readers.base import ReadContext, SourceError, SourceTree
from pipelines.vision.video import VIDEO_SUFFIXES
from schemas.common import RejectReason


def _ffpp_splits(tree: SourceTree) -> dict[str, str]:
    """Video id (`000`) or fake pair (`000_003`) -> split, from splits/{train,val,test}.json
    (val and test are FaceInstruct's test)."""
    out: dict[str, str] = {}
    for name, split in (("train.json", "train"), ("val.json", "test"), ("test.json", "test")):
        found = tree.ending(f"splits/{name}")
        if not found:
            continue
        with open(tree.path(found[0]), encoding="utf-8") as f:
            for a, b in json.load(f):
                for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                    out.setdefault(key, split)
    return out


def read_ffpp(tree: SourceTree, ctx: ReadContext) -> Iterator:
    """Reals from original_sequences/youtube, fakes from manipulated_sequences/<Method>, at
    one compression (`compression`, c40 by default as FaceInstruct uses the low-quality
    videos).  The label is the folder, so every video found is an item; a video the split
    files name but the tree lacks is not an error (downloads commonly take some methods
    or compressions only).  Splits from splits/*.json; a video in none of them splits by
    identity."""
    compression = ctx.options.get("compression", "c40")
    if compression not in FFPP_COMPRESSIONS:
        raise SourceError(f"FF++ compression {compression!r} is not one of {', '.join(FFPP_COMPRESSIONS)}")
    videos = [p for p in tree.files if f"/{compression}/videos/" in p and p.lower().endswith(VIDEO_SUFFIXES)
              and "/masks/" not in p]
    if not videos:
        present = sorted({c for c in FFPP_COMPRESSIONS for p in tree.files if f"/{c}/videos/" in p})
        hint = f" (this tree has {', '.join(present)}: pass --ffpp_compression)" if present else ""
        raise SourceError(f"no FF++ videos at compression {compression} "
                          f"(original_sequences/youtube/{compression}/videos/000.mp4) under {tree.root}{hint}")
    splits = _ffpp_splits(tree)
    for path in videos:
        parts = path.split("/")
        stem = parts[-1].rsplit(".", 1)[0]
        if "original_sequences" in parts:
            method, subject = None, stem
        elif "manipulated_sequences" in parts:
            method = parts[parts.index("manipulated_sequences") + 1]
            subject = stem.split("_")[0]
        else:
            continue
        label = {"fake": method is not None, "method": method}
        yield ctx.item(tree, path, label, origin=path, media_type="video", split=splits.get(stem), subject=subject)


def read_fakeavceleb(tree: SourceTree, ctx: ReadContext) -> Iterator:
    """meta_data.csv rows; the video is `<FakeAVCeleb_v1.2>/<the unnamed 10th column>/<path>`.
    The face is fake in FakeVideo-* rows; RealVideo-FakeAudio rows show a real face (only
    the voice is cloned) and are labelled real."""
    rel = tree.one("FakeAVCeleb meta_data.csv", tree.named("meta_data.csv"))
    videos = [p for p in tree.files if p.lower().endswith(VIDEO_SUFFIXES)]
    with open(tree.path(rel), encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader if row]
    columns = {name: i for i, name in enumerate(header) if name}
    folder_col = next((i for i, name in enumerate(header) if not name), None)
    if "path" not in columns or folder_col is None or "type" not in columns:
        raise SourceError(f"{rel}: expected the columns source, ..., type, ..., path and an unnamed folder column")
    for number, row in rows:
        origin = f"{rel}:{number}"
        cell = _cells(row, columns)
        folder = row[folder_col].strip().strip("/") if folder_col < len(row) else ""
        want = f"{folder}/{cell('path')}".strip("/")
        # The folder column is relative to FakeAVCeleb_v1.2/, which may be the root or above it.
        path = next((p for p in videos if p == want or p.endswith("/" + want)), None)
        kind = cell("type")
        if kind not in FAKEAVCELEB_FAKE_VIDEO:
            yield ctx.reject(path or want, RejectReason.UNKNOWN_LABEL, f"type {kind!r} is not one of "
                             f"{', '.join(FAKEAVCELEB_FAKE_VIDEO)}", origin=origin)
        elif path is None:
            yield ctx.missing(want, origin)
        else:
            fake = FAKEAVCELEB_FAKE_VIDEO[kind]
            label = {"fake": fake, "method": cell("method") if fake else None}
            yield ctx.item(tree, path, label, origin=origin, media_type="video", subject=cell("source") or None)


def _cells(row: list[str], columns: dict[str, int]):
    """`cell(name)`: the row's stripped value in that column, "" when absent."""
    def cell(name: str) -> str:
        i = columns.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    return cell

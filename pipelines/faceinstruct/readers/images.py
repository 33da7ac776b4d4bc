"""Image readers: AffectNet and RAF-DB (expression), CelebA (attributes), MORPH II and
UTKFace (age) (`../shared/references/faceinstruct_sources.md`)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

from pipelines.faceinstruct.labels import (
    AFFECTNET_CLASSES,
    AFFECTNET_NO_EXPRESSION,
    CELEBA_SPLITS,
    RAFDB_CLASSES,
)
from pipelines.faceinstruct.readers.base import (
    IMAGE_SUFFIXES,
    ReadContext,
    SourceError,
    SourceTree,
    int_or_none,
    lines,
)
from schemas.common import RejectReason
from schemas.faceinstruct import CELEBA_ATTRIBUTES


def _csv_rows(tree: SourceTree, rel: str, delimiter: str = ","):
    """(line number, row dict) of a CSV file with a header, read by column name."""
    with open(tree.path(rel), encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, skipinitialspace=True)
        for row in reader:
            yield reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}


def read_affectnet(tree: SourceTree, ctx: ReadContext) -> Iterator:
    # Manually_Annotated_file_lists/{training,validation}.csv; paths relative to
    # Manually_Annotated_Images/ (which may sit beside the lists or one level up).
    image_root = next((d for d in sorted(tree.dirs, key=len) if d.rsplit("/", 1)[-1] == "Manually_Annotated_Images"),
                      None)
    found_any = False
    for split, name in (("train", "training.csv"), ("test", "validation.csv")):
        candidates = tree.ending(f"Manually_Annotated_file_lists/{name}") or tree.named(name)
        if not candidates:
            continue
        found_any = True
        rel = candidates[0]
        for number, row in _csv_rows(tree, rel):
            origin = f"{rel}:{number}"
            sub = row.get("subDirectory_filePath", "")
            path = f"{image_root}/{sub}" if image_root else f"Manually_Annotated_Images/{sub}"
            code = int_or_none(row.get("expression", ""))
            if not sub:
                yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} has no subDirectory_filePath",
                                 origin=origin)
            elif not tree.exists(path):
                yield ctx.missing(path, origin)
            elif code in AFFECTNET_NO_EXPRESSION:
                yield ctx.reject(path, RejectReason.UNUSABLE_LABEL, f"expression {code} "
                                 f"({AFFECTNET_NO_EXPRESSION[code]}) labels no expression", origin=origin)
            elif code not in AFFECTNET_CLASSES:
                yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"expression {row.get('expression')!r} is not "
                                 f"one of AffectNet's codes 0..10", origin=origin)
            else:
                yield ctx.item(tree, path, {"expression": AFFECTNET_CLASSES[code]}, origin=origin,
                               media_type="image", split=split)
    if not found_any:
        raise SourceError(f"no AffectNet label lists (Manually_Annotated_file_lists/training.csv, validation.csv) "
                          f"under {tree.root}")


def read_rafdb(tree: SourceTree, ctx: ReadContext) -> Iterator:
    rel = tree.one("RAF-DB label file (basic/EmoLabel/list_patition_label.txt)",
                   tree.ending("EmoLabel/list_patition_label.txt") or tree.named("list_patition_label.txt"))
    base = rel.rsplit("EmoLabel/", 1)[0] if "EmoLabel/" in rel else ""
    for number, line in lines(tree, rel):
        origin = f"{rel}:{number}"
        fields = line.split()
        if len(fields) != 2:
            yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} is not `<image> <label>`: "
                             f"{line[:60]!r}", origin=origin)
            continue
        name, label = fields
        original = f"{base}Image/original/{name}"
        stem, _, ext = name.rpartition(".")
        aligned = f"{base}Image/aligned/{stem}_aligned.{ext}"
        path = original if tree.exists(original) else aligned if tree.exists(aligned) else None
        split = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        expression = RAFDB_CLASSES.get(int_or_none(label) or -1)
        if path is None:
            yield ctx.missing(original, origin)
        elif expression is None:
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"label {label!r} is not one of RAF-DB's 1..7",
                             origin=origin)
        else:
            yield ctx.item(tree, path, {"expression": expression}, origin=origin, media_type="image", split=split)


def _celeba_table(tree: SourceTree, txt: str, csv_name: str):
    """CelebA's text list, or the Kaggle CSV with the same content."""
    found = tree.named(txt)
    if found:
        return found[0], "txt"
    found = tree.named(csv_name)
    return (found[0], "csv") if found else (None, None)


def read_celeba(tree: SourceTree, ctx: ReadContext) -> Iterator:
    attr_rel, attr_kind = _celeba_table(tree, "list_attr_celeba.txt", "list_attr_celeba.csv")
    if attr_rel is None:
        raise SourceError(f"no CelebA attribute list (Anno/list_attr_celeba.txt) under {tree.root}")
    part_rel, _ = _celeba_table(tree, "list_eval_partition.txt", "list_eval_partition.csv")
    partitions: dict[str, int] = {}
    if part_rel is not None:
        for _, line in lines(tree, part_rel):
            fields = line.replace(",", " ").split()
            if len(fields) == 2 and (value := int_or_none(fields[1])) is not None:
                partitions[fields[0]] = value
    images: dict[str, str] = {}
    for p in tree.files:
        if "img_align_celeba/" in p and p.lower().endswith(IMAGE_SUFFIXES):
            images.setdefault(p.rsplit("/", 1)[1], p)
    # Where a missing image would be: the folder the others are in.
    folder = next(iter(images.values())).rsplit("/", 1)[0] if images else "Img/img_align_celeba"
    with open(tree.path(attr_rel), encoding="utf-8", errors="replace") as f:
        text = f.read().splitlines()
    if attr_kind == "txt":
        names, body, first = text[1].split(), text[2:], 3  # line 1: count; line 2: names
    else:
        names, body, first = next(csv.reader([text[0]]))[1:], text[1:], 2
    if tuple(names) != CELEBA_ATTRIBUTES:
        raise SourceError(f"{attr_rel}: the attribute names are not CelebA's 40 in order")
    for number, line in enumerate(body, first):
        if not line.strip():
            continue
        origin = f"{attr_rel}:{number}"
        fields = line.replace(",", " ").split()
        name, values = fields[0], [int_or_none(v) for v in fields[1:]]
        path = images.get(name, f"{folder}/{name}")
        if len(values) != len(CELEBA_ATTRIBUTES) or any(v not in (-1, 1) for v in values):
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"line {number}: expected 40 values of -1/1",
                             origin=origin)
        elif name not in images:
            yield ctx.missing(path, origin)
        else:
            positive = [a for a, v in zip(CELEBA_ATTRIBUTES, values, strict=True) if v == 1]
            split = CELEBA_SPLITS.get(partitions.get(name, -1))
            yield ctx.item(tree, path, {"attributes": positive}, origin=origin, media_type="image", split=split)


def read_morph(tree: SourceTree, ctx: ReadContext) -> Iterator:
    rel = tree.one("MORPH II table (MORPH_nonCommercial/morph_2008_nonCommercial.csv)",
                   tree.named("morph_2008_nonCommercial.csv") or tree.matching(r"(^|/)morph[^/]*\.csv$"))
    base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    for number, row in _csv_rows(tree, rel):
        origin = f"{rel}:{number}"
        photo = row.get("photo", "").replace("\\", "/").lstrip("./")
        path = base + photo
        age = int_or_none(row.get("age", ""))
        subject = row.get("id_num") or None
        if not photo:
            yield ctx.reject(rel, RejectReason.UNKNOWN_LABEL, f"line {number} has no photo", origin=origin)
        elif not tree.exists(path):
            yield ctx.missing(path, origin)
        elif age is None or not 0 <= age <= 130:
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"age {row.get('age')!r} is not a whole number of "
                             f"years", origin=origin)
        else:
            yield ctx.item(tree, path, {"age": age}, origin=origin, media_type="image", subject=subject)


UTK_NAME = re.compile(r"^(\d+)_")


def read_utkface(tree: SourceTree, ctx: ReadContext) -> Iterator:
    # The label is the file name, <age>_<gender>_<race>_<date>.jpg.chip.jpg (a few lack the
    # race field: only the age is required); no label file, no official split.
    found = [p for p in tree.files if p.lower().endswith(IMAGE_SUFFIXES) and "_" in p.rsplit("/", 1)[1]]
    if not found:
        raise SourceError(f"no UTKFace images (<age>_<gender>_<race>_<date>.jpg.chip.jpg) under {tree.root}")
    for path in found:
        name = path.rsplit("/", 1)[1]
        match = UTK_NAME.match(name)
        age = int(match.group(1)) if match else None
        if age is None or age > 130:
            yield ctx.reject(path, RejectReason.UNKNOWN_LABEL, f"{name!r} does not start with an age", origin=path)
        else:
            yield ctx.item(tree, path, {"age": age}, origin=path, media_type="image")



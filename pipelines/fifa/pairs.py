"""Manifest rows as real/fake pairs (FiFa-Instruct's manifests).

A row names `real` and `fake` (required) and optionally `pair_id`, `method`, `category`,
`subject_id`, `source_dataset`.  Image paths are resolved against the manifest's folder
(`pipelines.common.manifest.resolve`).  A row that cannot become a pair becomes a
rejected row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from typing import Any

from pipelines.common.manifest import manifest_name, read_records, resolve
from pipelines.fifa.categories import category_of
from schemas.common import RejectReason, Stage
from schemas.fifa import PairInput, RejectedRow

OPTIONAL = ("method", "category", "subject_id", "source_dataset")


def pair_id_of(row: dict[str, Any]) -> str:
    """The row's own id, else a stable hash of its two image references."""
    given = row.get("pair_id")
    if given not in (None, ""):
        return str(given)
    digest = hashlib.sha256(f"{row.get('real')}\x1f{row.get('fake')}".encode()).hexdigest()
    return f"p{digest[:16]}"


def parse_row(manifest: str, index: int, row: dict[str, Any] | str,
              allow_absolute: bool) -> PairInput | RejectedRow:
    """One manifest row as a pair, or as a rejected row saying what is wrong with it."""
    if isinstance(row, str):
        return RejectedRow(pair_id=f"{manifest_name(manifest)}:{index}", stage=Stage.MANIFEST.value,
                           reason=RejectReason.BAD_MANIFEST_ROW.value, detail=row,
                           manifest=manifest_name(manifest), row=index)
    name = manifest_name(manifest)
    pair_id = pair_id_of(row)
    extra = {k: (None if row.get(k) in (None, "") else str(row[k])) for k in OPTIONAL}

    def reject(reason: RejectReason, detail: str) -> RejectedRow:
        return RejectedRow(pair_id=pair_id, stage=Stage.MANIFEST.value, reason=reason.value, detail=detail,
                           real=_str(row.get("real")), fake=_str(row.get("fake")),
                           method=extra["method"], category=extra["category"],
                           subject_id=extra["subject_id"], manifest=name, row=index)

    problem = _image_columns_problem(row)
    if problem:
        return reject(RejectReason.BAD_MANIFEST_ROW, problem)
    try:
        real = resolve(manifest, row["real"], allow_absolute)
        fake = resolve(manifest, row["fake"], allow_absolute)
    except ValueError as exc:
        return reject(RejectReason.PATH_OUTSIDE_MANIFEST, str(exc))
    # The row's category as FiFa names it (read from its method when it gives none); a
    # value facext does not know is kept as written, and counted (`MakeSamples`).
    category = category_of(extra["category"], extra["method"]) or extra["category"] or ""
    return PairInput(pair_id=pair_id, real=real, fake=fake, method=extra["method"] or "",
                     category=category, subject_id=extra["subject_id"],
                     source_dataset=extra["source_dataset"], manifest=name, row=index,
                     real_ref=row["real"], fake_ref=row["fake"])


def _image_columns_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with the row's `real` and `fake`, naming the columns it does have (a
    misspelt header is then plain to see); None when both are paths."""
    missing = [k for k in ("real", "fake") if row.get(k) in (None, "")]
    not_paths = [k for k in ("real", "fake") if k not in missing and not isinstance(row[k], str)]
    problems = []
    if missing:
        columns = ", ".join(sorted(str(k) for k, v in row.items() if v not in (None, ""))) or "none"
        problems.append(f"missing {' and '.join(missing)} (the row has columns: {columns})")
    problems += [f"{k} is not a path: {row[k]!r}" for k in not_paths]
    return "; ".join(problems) or None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def pair_parser(allow_absolute: bool):
    """`parse_row` with the path rule fixed: the row parser `ReadManifest` takes."""
    return partial(parse_row, allow_absolute=allow_absolute)


def read_manifest(path: str, allow_absolute: bool = False) -> Iterator[PairInput | RejectedRow]:
    """The pairs (and rejected rows) of one manifest, in file order."""
    return read_records(path, pair_parser(allow_absolute))

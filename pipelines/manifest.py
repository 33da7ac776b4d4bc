"""Manifests of real/fake pairs: JSONL, CSV or Parquet, local or on any Beam filesystem.

A row names `real` and `fake` (required) and optionally `pair_id`, `method`, `category`,
`subject_id`, `source_dataset`.  Image paths are relative to the manifest's folder and
may not leave it (no `..`, no absolute paths or URLs) unless absolute paths are allowed.
A row that cannot become a pair becomes a rejected row; reading never stops on one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any

from schemas.analysis import RejectReason
from schemas.fifa import PairInput, RejectedRow

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}
OPTIONAL = ("method", "category", "subject_id", "source_dataset")


def manifest_format(path: str) -> str:
    name = path.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith((suffix, suffix + ".gz")):
            return fmt
    raise ValueError(f"{path}: unknown manifest format (use .jsonl, .csv or .parquet)")


def match_manifests(pattern: str) -> list[str]:
    """The manifest files a path, glob or URL names, sorted; an error if there are none."""
    from apache_beam.io.filesystems import FileSystems

    paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    if not paths:
        raise FileNotFoundError(f"no manifest matches {pattern!r}")
    for path in paths:
        manifest_format(path)
    return paths


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems

    f = FileSystems.open(path)  # compression (.gz) detected from the name
    # Beam's CompressedFile is not an io object (no iteration, no TextIOWrapper); wrap it.
    return f if isinstance(f, io.IOBase) else io.BufferedReader(_RawReader(f))


class _RawReader(io.RawIOBase):
    """A file-like object with read(n) as a raw binary stream."""

    def __init__(self, f) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def raw_rows(path: str) -> Iterator[dict[str, Any] | str]:
    """The rows of one manifest as dicts, in file order; a string for a row that could
    not be parsed (its error)."""
    fmt = manifest_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path) as f:
            table = pq.ParquetFile(io.BytesIO(f.read()))
            for batch in table.iter_batches(batch_size=4096):
                yield from batch.to_pylist()
        return
    with _open(path) as f:
        if fmt == "csv":
            # Undecodable bytes become U+FFFD: that row's paths then fail to read and the
            # pair is rejected with its reason, instead of the whole manifest stopping.
            yield from csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline=""))
            return
        for line in f:  # bytes: a line that is not UTF-8 is one bad row, not a bad file
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError
                yield f"not JSON: {exc}"
                continue
            text = line.decode("utf-8", errors="replace").strip()
            yield row if isinstance(row, dict) else f"not a JSON object: {text[:80]}"


def count_rows(path: str) -> int:
    """Rows of a manifest without parsing them (Parquet: from its metadata)."""
    if manifest_format(path) == "parquet":
        import pyarrow.parquet as pq

        with _open(path) as f:
            return pq.ParquetFile(io.BytesIO(f.read())).metadata.num_rows
    with _open(path) as f:
        if manifest_format(path) == "csv":
            return sum(1 for _ in csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""))) - 1
        return sum(1 for line in f if line.strip())


def resolve(manifest: str, ref: str, allow_absolute: bool) -> str:
    """An image reference of a manifest as a path or URL; ValueError if it escapes."""
    folder = posixpath.dirname(manifest) if "://" in manifest else _local_dir(manifest)
    if "://" in ref or ref.startswith(("/", "\\")) or (len(ref) > 1 and ref[1] == ":"):
        if not allow_absolute:
            raise ValueError(f"absolute path {ref!r} (allow with --allow_absolute_paths)")
        return ref
    norm = posixpath.normpath(ref.replace("\\", "/"))
    if (norm == ".." or norm.startswith("../")) and not allow_absolute:
        raise ValueError(f"{ref!r} leaves the manifest's folder (allow with --allow_absolute_paths)")
    if "://" in folder:
        return posixpath.join(folder, norm)
    return os.path.normpath(os.path.join(folder, norm))


def _local_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def manifest_name(path: str) -> str:
    """How samples name their manifest: the URL for remote files, the file name for local
    ones (so the same data gives the same shards on any machine)."""
    return path if "://" in path else os.path.basename(path)


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
        return RejectedRow(pair_id=f"{manifest_name(manifest)}:{index}", stage="manifest",
                           reason=RejectReason.BAD_MANIFEST_ROW.value, detail=row,
                           manifest=manifest_name(manifest), row=index)
    name = manifest_name(manifest)
    pair_id = pair_id_of(row)
    extra = {k: (None if row.get(k) in (None, "") else str(row[k])) for k in OPTIONAL}

    def reject(reason: RejectReason, detail: str) -> RejectedRow:
        return RejectedRow(pair_id=pair_id, stage="manifest", reason=reason.value, detail=detail,
                           real=_str(row.get("real")), fake=_str(row.get("fake")),
                           method=extra["method"], category=extra["category"],
                           subject_id=extra["subject_id"], manifest=name, row=index)

    missing = [k for k in ("real", "fake") if not isinstance(row.get(k), str) or not row[k]]
    if missing:
        return reject(RejectReason.BAD_MANIFEST_ROW, f"missing {' and '.join(missing)}")
    try:
        real = resolve(manifest, row["real"], allow_absolute)
        fake = resolve(manifest, row["fake"], allow_absolute)
    except ValueError as exc:
        return reject(RejectReason.PATH_OUTSIDE_MANIFEST, str(exc))
    return PairInput(pair_id=pair_id, real=real, fake=fake, method=extra["method"] or "",
                     category=extra["category"] or "", subject_id=extra["subject_id"],
                     source_dataset=extra["source_dataset"], manifest=name, row=index)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def read_manifest(path: str, allow_absolute: bool = False) -> Iterator[PairInput | RejectedRow]:
    for index, row in enumerate(raw_rows(path)):
        yield parse_row(path, index, row, allow_absolute)

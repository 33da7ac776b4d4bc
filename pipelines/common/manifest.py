"""Manifests: JSONL, CSV or Parquet, local or on any Beam filesystem.

Formats, rows as dicts, row counts, and path safety: a path in a manifest is relative to
the manifest's folder and may not leave it (no `..`, no absolute paths or URLs) unless
absolute paths are allowed.  What a row means is the pipeline's own (`pipelines.fifa.pairs`
parses pairs): `read_records` hands each raw row to the pipeline's row parser, which
returns a record or a rejected row; reading never stops on one bad row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}


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


def read_records(path: str, parse_row, limit: int | None = None) -> Iterator:
    """Each row of one manifest through `parse_row(manifest, index, row)` (a row is a dict,
    or the string of its parse error), in file order; only the first `limit` rows when given
    (rows as `count_rows` counts them)."""
    for index, row in enumerate(raw_rows(path)):
        if limit is not None and index >= limit:
            return
        yield parse_row(path, index, row)

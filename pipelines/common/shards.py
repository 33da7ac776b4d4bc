"""Arrow shards in the `datasets` save format, written by Beam, finished by the driver.

Rows never travel through the shuffles: they are spilled to files (`pipelines.common.spill`)
and the shuffles carry only (key, sort key or position, where the row lies), a few bytes
per row however large the images are; a writer holds one record batch
(`WRITER_BATCH_ROWS` rows) at a time.

Placement.  A split's rows are ordered by bucket (a hash of the row's id), then by the
sort fields, and cut into `ceil(rows / max_rows)` files whose sizes differ by at most
one row (`shard_sizes`).  Inside the pipeline, without side inputs (the Dask runner
computes side inputs wrongly behind a reshuffle): the rows are grouped by bucket and
sorted; the buckets' sizes, grouped by split, give each bucket the position of its
first row and the split's total; a join hands both back to the bucket, which sends each
row to its file; each file's rows are grouped, read back in order and written under the
file's final name.  The placement is a pure function of the rows and the bucket counts,
so the same rows give byte-identical files on any runner.  The bucket counts (only the
order and the parallelism depend on them) come from the driver, an estimate from the
manifest's row count.  The driver then moves the files into
`SPLIT/data-{i:05d}-of-{n:05d}.arrow` and writes `state.json`, `dataset_info.json` and
`dataset_dict.json`, so `datasets.load_from_disk` opens the folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common.spill import Spill, SpillReader

WRITER_BATCH_ROWS = 100  # record batches of image rows, as `datasets` writes them


def stable_bucket(key: str, buckets: int) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def join(*parts: str) -> str:
    """Path join that works for local paths and filesystem URLs."""
    return FileSystems.join(*parts) if parts else ""


def write_arrow(path: str, rows: Iterable[dict[str, Any]], features) -> tuple[int, int]:
    """Rows (in `to_row` form) as one Arrow IPC stream file, written batch by batch so
    only `WRITER_BATCH_ROWS` rows are encoded at a time; returns (rows, bytes)."""
    import pyarrow as pa

    schema = features.arrow_schema
    sink = _CountingWriter(FileSystems.create(path))
    count = 0
    with sink, pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
        for batch in _batches(rows, WRITER_BATCH_ROWS):
            encoded = [features.encode_example(r) for r in batch]
            writer.write_batch(pa.RecordBatch.from_pylist(encoded, schema=schema))
            count += len(batch)
    return count, sink.written


def _batches(rows: Iterable, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _CountingWriter:
    """A write-only file that counts its bytes (Beam's GCS writer cannot `tell`)."""

    def __init__(self, f):
        self.f, self.written, self.closed = f, 0, False

    def write(self, data) -> int:
        self.f.write(data)
        self.written += len(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if not self.closed:
            self.f.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_sizes(rows: int, max_rows: int) -> list[int]:
    """Rows per file of a split: as few files as `max_rows` allows, sizes differing by at
    most one (the larger first); no file for no rows."""
    if rows <= 0:
        return []
    files = math.ceil(rows / max_rows)
    size, larger = divmod(rows, files)
    return [size + 1] * larger + [size] * (files - larger)


def file_of(position: int, rows: int, max_rows: int) -> tuple[int, int]:
    """(file index, number of files) of the row at `position` (0-based) of a split of
    `rows` rows cut by `shard_sizes`."""
    files = math.ceil(rows / max_rows)
    size, larger = divmod(rows, files)
    head = larger * (size + 1)  # rows in the larger files
    index = position // (size + 1) if position < head else larger + (position - head) // size
    return index, files


def _sorted_bucket(key: tuple, keyed_refs) -> tuple[tuple, list]:
    """((split, bucket), [(sort key, ref)]) -> ((split, bucket), refs in row order)."""
    return key, [ref for _, ref in sorted(keyed_refs)]


def _bucket_starts(split: str, sizes) -> Iterator[tuple[tuple, tuple[int, int]]]:
    """A split's (bucket, rows) -> ((split, bucket), (position of its first row, rows of the split))."""
    sizes = sorted(sizes)
    total, start = sum(n for _, n in sizes), 0
    for bucket, n in sizes:
        yield (split, bucket), (start, total)
        start += n


class _RowsToFiles:
    """A bucket's refs joined with its start -> ((split, file, files), (position, ref)) per row."""

    def __init__(self, max_rows: int):
        self.max_rows = max_rows

    def __call__(self, element):
        (split, _), joined = element
        (refs,), ((start, total),) = joined["refs"], joined["start"]
        for i, ref in enumerate(refs):
            index, files = file_of(start + i, total, self.max_rows)
            yield (split, index, files), (start + i, ref)


class _WriteFile(beam.DoFn):
    """One file's rows, read back from the spill files in order, as
    `SPLIT/data-{i:05d}-of-{n:05d}.arrow` under the temporary folder."""

    def __init__(self, tmp_dir: str, record_type):
        self.tmp_dir, self.record_type = tmp_dir, record_type
        self.features = None

    def setup(self) -> None:
        from schemas.features import hf_features

        self.features = hf_features(self.record_type)

    def process(self, element):
        (split, index, files), placed = element
        refs = [ref for _, ref in sorted(placed)]
        reader = SpillReader()
        try:
            name = f"data-{index:05d}-of-{files:05d}.arrow"
            rows, size = write_arrow(join(self.tmp_dir, split, name), (reader.read(r) for r in refs),
                                     self.features)
            yield (("part_rows", split, name), rows)
            yield (("part_bytes", split, name), size)
        finally:
            reader.close()


class _BucketKey:
    """(row, ref) -> ((split, bucket), (sort key, ref)): what the shuffle carries per row."""

    def __init__(self, sort_fields: tuple[str, ...], split_field: str | None, buckets: dict[str, int]):
        self.sort_fields, self.split_field, self.buckets = sort_fields, split_field, buckets

    def __call__(self, row: dict, ref):
        split = row[self.split_field] if self.split_field else "all"
        bucket = stable_bucket(row[self.sort_fields[0]], max(1, self.buckets.get(split, 1)))
        return (split, bucket), (tuple(_sortable(row[f]) for f in self.sort_fields), ref)


def _sortable(value) -> tuple:
    return (value is not None, value if value is not None else 0)


class WriteShards(beam.PTransform):
    """Rows -> temporary shard files; outputs (key, number) events describing them.

    A row's split is its `split_field` (one split "all" without one); split s has
    `buckets[s]` buckets (1 if not named), chosen by a hash of the row's
    `sort_fields[0]` (its id); a bucket's rows are ordered by `sort_fields`, which must
    tell every two rows apart.  Each split is cut into files by `shard_sizes`.
    """

    def __init__(self, tmp_dir: str, record_type, sort_fields: tuple[str, ...], max_rows: int,
                 split_field: str | None, buckets: dict[str, int] | None = None):
        super().__init__()
        self.tmp_dir, self.record_type, self.sort_fields = tmp_dir, record_type, sort_fields
        self.max_rows, self.split_field = max_rows, split_field
        self.buckets = dict(buckets or {})

    def expand(self, rows):
        keyed = _BucketKey(self.sort_fields, self.split_field, self.buckets)
        buckets = (rows
                   | "Spill rows, bucket by id hash" >> beam.ParDo(Spill(join(self.tmp_dir, "spill"), keyed))
                   | "Group buckets" >> beam.GroupByKey()
                   | "Sort each bucket" >> beam.MapTuple(_sorted_bucket))
        starts = (buckets
                  | "Bucket sizes" >> beam.MapTuple(lambda key, refs: (key[0], (key[1], len(refs))))
                  | "Sizes per split" >> beam.GroupByKey()
                  | "Where buckets start" >> beam.FlatMapTuple(_bucket_starts))
        return ({"refs": buckets, "start": starts}
                | "Buckets with their starts" >> beam.CoGroupByKey()
                | "Rows to files" >> beam.FlatMap(_RowsToFiles(self.max_rows))
                | "Group files" >> beam.GroupByKey()
                | "Write files" >> beam.ParDo(_WriteFile(self.tmp_dir, self.record_type)))


# --- the driver's part -------------------------------------------------------------------------


def estimated_buckets(expected_rows: float, max_rows: int) -> int:
    """Buckets for a split expected to hold `expected_rows` rows."""
    return max(1, math.ceil(expected_rows / max_rows))


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode())


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def finalize_split(out_dir: str, tmp_dir: str, parts: dict[str, tuple[int, int]], features,
                   split: str | None) -> dict[str, Any]:
    """Rename one split's parts (name -> (rows, bytes)) into the save_to_disk layout.

    Returns the split's numbers: files, rows, bytes.
    """
    if not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    names = sorted(parts)
    n = len(names)
    files = [f"data-{i:05d}-of-{n:05d}.arrow" for i in range(n)]
    for name, final in zip(names, files, strict=True):
        FileSystems.rename([join(tmp_dir, name)], [join(out_dir, final)])
    if not names:
        # `datasets` cannot load a split without files, so an empty split gets one file
        # holding the schema and no rows.
        files = ["data-00000-of-00001.arrow"]
        _, size = write_arrow(join(out_dir, files[0]), [], features)
        names, parts = ["(empty)"], {"(empty)": (0, size)}
    rows = sum(parts[k][0] for k in names)
    size = sum(parts[k][1] for k in names)
    fingerprint = hashlib.sha256(json.dumps(
        [split, [(f, parts[k]) for f, k in zip(files, names, strict=True)]]).encode()).hexdigest()[:16]
    state = {
        "_data_files": [{"filename": f} for f in files],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    info = {"citation": "", "description": "", "features": features.to_dict(), "homepage": "",
            "license": ""}
    _write_text(join(out_dir, "state.json"), _json(state))
    _write_text(join(out_dir, "dataset_info.json"), _json(info))
    return {"files": len(files), "rows": rows, "bytes": size}


def parts_by_split(events: dict[tuple, float]) -> dict[str, dict[str, tuple[int, int]]]:
    """(key, number) events of `WriteShards` -> split -> part name -> (rows, bytes)."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, value in events.items():
        if key[0] in ("part_rows", "part_bytes"):
            slot = out.setdefault(key[1], {}).setdefault(key[2], [0, 0])
            slot[0 if key[0] == "part_rows" else 1] = int(value)
    return {s: {k: (v[0], v[1]) for k, v in parts.items()} for s, parts in out.items()}


def files_under(path: str) -> list[str]:
    """Every file below a folder (on an object store: every object under the prefix `path/`)."""
    return [m.path for r in FileSystems.match([path.rstrip("/") + "/**"]) for m in r.metadata_list]


def tree_exists(path: str) -> bool:
    """A file or folder at `path`.  An object store has no folders, only objects whose names
    start with `path/` (and its `exists` is false for such a prefix)."""
    if FileSystems.exists(path):
        return True
    return "://" in path and bool(files_under(path))


def remove_tree(path: str) -> None:
    """Remove a file, or a folder and everything in it (on an object store, every object
    under the prefix: deleting the bare prefix there would delete nothing)."""
    if "://" not in path:
        if FileSystems.exists(path):
            FileSystems.delete([path])
        return
    doomed = files_under(path) + ([path] if FileSystems.exists(path) else [])
    if doomed:
        FileSystems.delete(doomed)

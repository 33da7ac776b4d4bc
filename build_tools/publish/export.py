"""A finished pipeline output as the file tree of a Hugging Face Hub dataset (described
here for FiFa-Instruct; FaceInstruct's rows are samples, one config per task: see
`build_tools.publish.layouts`).

`export_for_hub` turns OUTPUT (the pipeline's Arrow shards and run report) into the
tree a Hub dataset repo holds:

    README.md                                   dataset card: YAML metadata + the run
    data/default/{split}-{i:05d}-of-{n:05d}.parquet    every image row (each crop once)
    data/{family}/{split}-{i:05d}-of-{n:05d}.parquet   the image rows with that family's samples only
    rejected/rejected-{i:05d}-of-{n:05d}.parquet       the rejected table

A row is one aligned crop with the samples about it (`schemas.fifa.FifaImage`).
Configs: `default` (every sample, splits train and test), one per family (`det`, `cls`,
`image`, `region`, `box`: the rows holding samples of its tasks, with those samples
only) and `rejected`.  A family config repeats the crops its samples are about, so the
Hub holds six copies of a fake crop (default and five families) against seventeen, one
per sample, in the flat layout.  A split without rows is left out of its config
and a config without rows altogether is left out (`datasets` cannot load an empty split:
"Instruction 'test' corresponds to no data").

The export streams: it reads the Arrow IPC files record batch by record batch, routes
each batch's rows to their family, and writes row groups of `row_group_rows` rows (what
`datasets` uses for image data; the viewer refuses row groups over ~300 MB) with a page
index and the `huggingface` schema metadata, so `datasets` keeps the `Image` feature.
A file ends before the row group that would take it past `max_shard_bytes` (Arrow
bytes, like `datasets`' `max_shard_size`).  Files are written under temporary names and
renamed once their count is known; a file whose bytes did not change is left as it was
(same mtime), so re-exporting into an upload's staging folder does not restart the upload.
The same OUTPUT gives byte-identical files.

The card is written by `build_tools.publish.card`; `build_tools.publish.command.publish`
exports and uploads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from build_tools.publish.card import REJECTED, dataset_card
from build_tools.publish.layouts import LAYOUTS, HubLayout, layout_of

STAGING = "_publish"  # under OUTPUT: what an upload sends, kept so an upload can resume
UPLOAD_STATE = ".facext_upload"  # the uploader's state inside the staging folder
EXPORTED = ("data", REJECTED, "README.md")  # what an export owns in its folder
_PARTIAL = ".partial"
DEFAULT = "default"  # the config (and data/ folder) of every sample


class PublishError(ValueError):
    """A publish request that cannot be carried out; the message says what to do."""


# --- the pipeline's output --------------------------------------------------------------------


def read_finished_output(output: str | os.PathLike) -> dict[str, Any]:
    """The run report of a finished pipeline output folder (fifa_annotate or
    faceinstruct_build); PublishError otherwise."""
    root = Path(output)
    if "://" in str(output):
        raise PublishError(f"{output}: publish reads a local folder; copy the output here first "
                           f"(e.g. gcloud storage cp -r {output} .)")
    if not root.is_dir():
        raise PublishError(f"{output} is not a folder")
    report_path = root / "run_report.json"
    if not report_path.is_file():
        raise PublishError(f"{output} is not a finished pipeline output: it has no run_report.json "
                           f"(run `beam run pipelines/fifa_annotate.py --output {output}` or "
                           f"`beam run pipelines/faceinstruct_build.py --output {output}` to make one)")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PublishError(f"{report_path} cannot be read: {exc}") from None
    layout = layout_of(report)
    if layout is None:
        raise PublishError(f"{report_path} is not the run report of a facext pipeline ({', '.join(LAYOUTS)})")
    if report.get("status") == "awaiting_batch":
        raise PublishError(f"{output} still waits for LLM batch answers and holds no shards yet: run the "
                           f"pipeline with --llm_batch collect until it completes, then publish")
    if report.get("status") != "complete":
        raise PublishError(f"{output}: the run report's status is {report.get('status')!r}, not 'complete'")
    for folder in (*layout.splits, REJECTED):
        for name in ("state.json", "dataset_info.json"):
            if not (root / folder / name).is_file():
                raise PublishError(f"{output} is incomplete: {folder}/{name} is missing")
    return report


def _features(folder: Path):
    """The `datasets.Features` the pipeline wrote next to a split's shards."""
    from datasets import Features

    return Features.from_dict(json.loads((folder / "dataset_info.json").read_text())["features"])


def _record_batches(folder: Path) -> Iterator:
    """The record batches of a split's Arrow files, in file order; memory-mapped, so a
    batch costs no memory until its rows are copied."""
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text())
    for entry in state["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as source:
            yield from pa.ipc.open_stream(source)


# --- Parquet ----------------------------------------------------------------------------------


class _ParquetShards:
    """One config's split as Parquet files: row groups of `row_group_rows` rows, a new
    file before the row group that would take a file past `max_shard_bytes`."""

    def __init__(self, folder: Path, split: str, features, *, row_group_rows: int, max_shard_bytes: int):
        self.folder, self.split, self.features = folder, split, features
        self.row_group_rows, self.max_shard_bytes = row_group_rows, max_shard_bytes
        self.schema = features.arrow_schema  # carries the `huggingface` metadata key
        self.pending: list = []
        self.pending_rows = 0
        self.temps: list[Path] = []
        self.writer = None
        self.file_bytes = 0
        self.rows = 0
        self.samples = 0
        self.num_bytes = 0

    def add(self, batch, samples: int) -> None:
        """Add a batch of rows that hold `samples` samples (the rejected table: one a row)."""
        self.samples += samples
        if not batch.num_rows:
            return
        if not batch.schema.equals(self.schema, check_metadata=False):
            raise PublishError(f"{self.folder.name}/{self.split}: the shards' columns differ from their "
                               f"dataset_info.json features")
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        while self.pending_rows >= self.row_group_rows:
            self._write_group(self.row_group_rows)

    def _write_group(self, rows: int) -> None:
        import pyarrow as pa

        table = pa.Table.from_batches(self.pending, schema=self.schema)
        group, rest = table.slice(0, rows), table.slice(rows)
        self.pending, self.pending_rows = rest.to_batches(), rest.num_rows
        size = group.nbytes
        if self.writer is not None and self.file_bytes and self.file_bytes + size > self.max_shard_bytes:
            self._close_file()
        if self.writer is None:
            self._open_file()
        self.writer.write_table(group, row_group_size=rows)
        self.file_bytes += size
        self.rows += group.num_rows
        self.num_bytes += size

    def _open_file(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.split}-{len(self.temps):05d}{_PARTIAL}"
        self.temps.append(path)
        self.writer = parquet_writer(path, self.schema, self.features)
        self.file_bytes = 0

    def _close_file(self) -> None:
        self.writer.close()
        self.writer = None

    def finish(self) -> dict[str, Any]:
        """Write what is left and close; returns rows, num_bytes and the temporary files
        (none without rows), which `name_files` renames once the export is checked."""
        if self.pending_rows:
            self._write_group(self.pending_rows)
        if self.writer is not None:
            self._close_file()
        return {"rows": self.rows, "samples": self.samples, "num_bytes": self.num_bytes, "temps": self.temps}


def name_files(split: str, written: dict[str, Any]) -> None:
    """A finished split's temporary files -> `{split}-{i:05d}-of-{n:05d}.parquet` (in `files`)."""
    temps = written.pop("temps")
    written["files"] = []
    for i, temp in enumerate(temps):
        final = temp.with_name(f"{split}-{i:05d}-of-{len(temps):05d}.parquet")
        _place(temp, final)
        written["files"].append(final)


def parquet_writer(path: Path, schema, features):
    """A `pyarrow.parquet.ParquetWriter` set up as `datasets` writes Hub Parquet: encoded
    media (images) stored plain and uncompressed (PNG does not compress further), other
    columns snappy with dictionaries, content-defined chunking (Xet deduplicates
    re-uploads), a page index (random access from the viewer).  Options are given per
    leaf column: Parquet names nested columns by path (`conversations.list.element.value`)."""
    import pyarrow.parquet as pq
    from datasets import config
    from datasets.features.features import require_storage_embed

    media = {name for name, feature in features.items() if require_storage_embed(feature)}
    leaves = {name: list(_leaf_paths(schema.field(name).type, name)) for name in schema.names}
    plain = [p for name in media for p in leaves[name]]
    other = [p for name, paths in leaves.items() if name not in media for p in paths]
    writer = pq.ParquetWriter(
        str(path), schema,
        compression={**dict.fromkeys(other, "snappy"), **dict.fromkeys(plain, "none")},
        use_dictionary=other,
        column_encoding=dict.fromkeys(plain, "PLAIN"),
        write_page_index=True,
        use_content_defined_chunking=config.DEFAULT_CDC_OPTIONS,
    )
    writer.add_key_value_metadata({"content_defined_chunking": json.dumps(config.DEFAULT_CDC_OPTIONS)})
    return writer


def _leaf_paths(arrow_type, prefix: str) -> Iterator[str]:
    """Parquet's dotted paths of the leaf columns under an Arrow type (lists written in
    the compliant `list.element` form, pyarrow's default)."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        for i in range(arrow_type.num_fields):
            yield from _leaf_paths(arrow_type.field(i).type, f"{prefix}.{arrow_type.field(i).name}")
    elif pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        yield from _leaf_paths(arrow_type.value_type, f"{prefix}.list.element")
    else:
        yield prefix


def _place(temp: Path, final: Path) -> None:
    """Move `temp` to `final`, or drop it when `final` already holds the same bytes (so an
    unchanged file keeps its mtime and an interrupted upload need not hash it again)."""
    if final.is_file() and final.stat().st_size == temp.stat().st_size and _same_bytes(final, temp):
        temp.unlink()
    else:
        os.replace(temp, final)


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(path.name + _PARTIAL)
    temp.write_text(text, encoding="utf-8")
    _place(temp, path)


# --- the destination folder -------------------------------------------------------------------


def _prepare_dest(dest: Path, layout: HubLayout) -> None:
    """Refuse a folder holding what an export did not write; drop temporary files an
    interrupted export left.  Hidden entries (.git, the uploader's state) are kept."""
    if dest.exists() and not dest.is_dir():
        raise PublishError(f"{dest} is a file, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in dest.iterdir() if not p.name.startswith(".") and p.name not in EXPORTED)
    data = dest / "data"
    if data.is_dir():
        foreign += sorted(f"data/{p.name}" for p in data.iterdir() if p.name not in (DEFAULT, *layout.families))
    if foreign:
        raise PublishError(f"{dest} holds {', '.join(foreign)}, which facext publish did not write; "
                           f"choose an empty or new folder")
    partials = [*dest.glob(f"*{_PARTIAL}"), *dest.glob(f"data/*/*{_PARTIAL}"), *dest.glob(f"{REJECTED}/*{_PARTIAL}")]
    for partial in partials:
        partial.unlink()


def _remove_stale(dest: Path, keep: set[Path]) -> None:
    """Remove exported files of an earlier export that this one did not write."""
    for folder in (dest / "data", dest / REJECTED):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file() and path not in keep:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


# --- export -----------------------------------------------------------------------------------


def export_for_hub(output: str | os.PathLike, dest: str | os.PathLike, *, max_shard_bytes: int = 500_000_000,
                   row_group_rows: int = 100, license: str = "unknown", pretty_name: str | None = None,
                   repo_id: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write OUTPUT's samples and rejected table as Hub Parquet with a dataset card into
    `dest`; returns what was written: configs (splits with rows, bytes and files;
    download_size, dataset_size), splits (rows), files, rows, bytes, seconds.

    Raises PublishError when OUTPUT is not a finished pipeline output, when `dest` holds
    files an export did not write, or when the rows on disk disagree with the run report.
    """
    if row_group_rows < 1 or max_shard_bytes < 1:
        raise PublishError("row_group_rows and max_shard_bytes must be positive")
    started = time.perf_counter()
    root, dest = Path(output), Path(dest)
    report = read_finished_output(root)
    layout = layout_of(report)
    unit = layout.unit
    if not report["samples"]["total"]:
        raise PublishError(f"{output}: the run wrote no samples ({report[f'{unit}_rejected']} {unit} rejected); "
                           f"there is no dataset to publish")
    inside = root.resolve() == dest.resolve() or root.resolve() in dest.resolve().parents
    if inside and dest.resolve() != (root / STAGING).resolve():
        raise PublishError(f"{dest} lies inside OUTPUT: export into a folder of its own (or OUTPUT/{STAGING})")
    _prepare_dest(dest, layout)
    try:
        written = _write_parquet(root, dest, report, layout, row_group_rows=row_group_rows,
                                 max_shard_bytes=max_shard_bytes, progress=progress)
        _check_against_report(written, report, layout)
    except BaseException:
        _prepare_dest(dest, layout)  # drops the temporary files; the files of an earlier export stay as they were
        raise
    for splits in written.values():
        for split, files in splits.items():
            name_files(split, files)
    configs = _configs(dest, written, layout)
    sample_features, rejected_features = _features(root / layout.splits[0]), _features(root / REJECTED)
    write_card = dataset_card
    if layout.pipeline == "faceinstruct_build":
        from build_tools.publish.card_faceinstruct import faceinstruct_card as write_card
    card = write_card(report, configs, sample_features, rejected_features, license=license,
                      pretty_name=pretty_name or f"{layout.title} (facext)", repo_id=repo_id)
    _write_text(dest / "README.md", card)
    files = {dest / f for c in configs.values() for s in c["splits"].values() for f in s["files"]}
    _remove_stale(dest, files)
    splits = {**{s: written[DEFAULT][s]["samples"] for s in layout.splits},
              REJECTED: written[REJECTED][REJECTED]["rows"]}
    return {
        "dest": str(dest),
        "configs": configs,
        "splits": splits,
        "files": len(files),
        "rows": sum(splits[s] for s in layout.splits),
        "title": layout.title,
        "rejected_rows": splits[REJECTED],
        "bytes": sum(f.stat().st_size for f in files) + (dest / "README.md").stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _write_parquet(root: Path, dest: Path, report: dict[str, Any], layout: HubLayout, *, row_group_rows: int,
                   max_shard_bytes: int, progress: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Each split's image rows (`default`), each family's part of them, and the rejected
    table, as Parquet files (under temporary names); returns config -> split -> rows,
    samples, num_bytes, temporary files.

    One pass over the memory-mapped Arrow files per split, holding at most one batch and
    one row group per config."""
    from pipelines.common.progress import Progress

    sizes = {"row_group_rows": row_group_rows, "max_shard_bytes": max_shard_bytes}
    image_features, rejected_features = _features(root / layout.splits[0]), _features(root / REJECTED)
    total = report["samples"]["total"] + report[f"{layout.unit}_rejected"]
    written: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in (DEFAULT, *layout.families)}
    with Progress(total=total, desc="export", unit="sample", enabled=None if progress else False) as bar:
        for split in layout.splits:
            sinks = {name: _ParquetShards(dest / "data" / name, split, image_features, **sizes)
                     for name in (DEFAULT, *layout.families)}
            for batch in _record_batches(root / split):
                everything, samples = layout.only_tasks(batch, layout.tasks)
                if everything.num_rows != batch.num_rows:
                    raise PublishError(f"{split}: {batch.num_rows - everything.num_rows} rows hold no sample "
                                       f"of the tasks {', '.join(layout.tasks)}")
                sinks[DEFAULT].add(batch, samples)
                for family, tasks in layout.families.items():
                    sinks[family].add(*layout.only_tasks(batch, tasks))
                bar.advance(samples, size=batch.nbytes)
            for name, sink in sinks.items():
                written[name][split] = sink.finish()
            routed = sum(written[family][split]["samples"] for family in layout.families)
            if routed != written[DEFAULT][split]["samples"]:
                raise PublishError(f"{split}: {written[DEFAULT][split]['samples'] - routed} samples have a task "
                                   f"of no config (tasks: {', '.join(layout.tasks)})")
        sink = _ParquetShards(dest / REJECTED, REJECTED, rejected_features, **sizes)
        for batch in _record_batches(root / REJECTED):
            sink.add(batch, batch.num_rows)
            bar.advance(batch.num_rows, size=batch.nbytes)
        written[REJECTED] = {REJECTED: sink.finish()}
    return written


def _configs(dest: Path, written: dict[str, dict[str, dict[str, Any]]], layout: HubLayout) -> dict[str, dict[str, Any]]:
    """Config -> {"tasks", "splits": {split: rows, samples, num_bytes, files (relative)},
    download_size, dataset_size, data_files, "empty": splits left out}.  Splits without
    rows and configs without any are left out."""
    def entry(tasks: tuple[str, ...], splits: dict[str, dict[str, Any]], patterns: dict[str, str]):
        kept = {s: {"rows": v["rows"], "samples": v["samples"], "num_bytes": v["num_bytes"],
                    "files": [f.relative_to(dest).as_posix() for f in v["files"]]}
                for s, v in splits.items() if v["rows"]}
        return {"tasks": list(tasks), "splits": kept, "empty": [s for s in splits if s not in kept],
                "download_size": sum((dest / f).stat().st_size for v in kept.values() for f in v["files"]),
                "dataset_size": sum(v["num_bytes"] for v in kept.values()),
                "data_files": [{"split": s, "path": patterns[s]} for s in kept]}

    configs = {DEFAULT: entry(layout.tasks, written[DEFAULT], {s: f"data/{DEFAULT}/{s}-*" for s in layout.splits})}
    for family, tasks in layout.families.items():
        configs[family] = entry(tasks, written[family], {s: f"data/{family}/{s}-*" for s in layout.splits})
    configs[REJECTED] = entry((), written[REJECTED], {REJECTED: f"{REJECTED}/{REJECTED}-*"})
    return {name: config for name, config in configs.items() if config["splits"]}


def _check_against_report(written: dict[str, dict[str, dict[str, Any]]], report: dict[str, Any],
                          layout: HubLayout) -> None:
    """The rows on disk must be the ones the run report counts (the card prints both)."""
    problems = []
    by_task_split = report["samples"]["by_task_and_split"]
    for family, tasks in layout.families.items():
        for split in layout.splits:
            expected = sum(by_task_split.get(t, {}).get(split, 0) for t in tasks)
            found = written[family][split]["samples"]
            if found != expected:
                problems.append(f"{family}/{split}: {found} samples, the report says {expected}")
    for split in layout.splits:
        images = (report.get("images") or {}).get("by_split", {}).get(split)
        if written[DEFAULT][split]["rows"] != images:
            problems.append(f"{split}: {written[DEFAULT][split]['rows']} image rows, the report says {images}")
    rejected = written[REJECTED][REJECTED]["rows"]
    if rejected != report[f"{layout.unit}_rejected"]:
        problems.append(f"rejected: {rejected} rows, the report says {report[f'{layout.unit}_rejected']}")
    if problems:
        raise PublishError("the output's shards disagree with its run_report.json (was it modified?): "
                           + "; ".join(problems))

"""`facext publish`: a finished FiFa-Instruct output as a Hugging Face Hub dataset.

`export_for_hub` turns OUTPUT (the pipeline's Arrow shards and run report) into the
tree a Hub dataset repo holds:

    README.md                                   dataset card: YAML metadata + the run
    data/{family}/{split}-{i:05d}-of-{n:05d}.parquet   samples, one folder per task family
    rejected/rejected-{i:05d}-of-{n:05d}.parquet       the rejected table

Configs: `default` (every family, splits train and test), one per family (`det`, `cls`,
`image`, `region`, `box`) and `rejected`.  A split without rows is left out of its config
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

`publish` exports into `--local-dir` (nothing is uploaded) or into OUTPUT/_publish and
uploads that folder with `build_tools.hub_upload.upload_dataset_folder` (resumable: its
state lives in the folder's `.facext_upload/`, which re-exporting keeps).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.fifa import SPLITS, TASKS, FifaSample

# Task families: each is a config and a folder under data/.
FAMILIES: dict[str, tuple[str, ...]] = {
    "det": ("det",),
    "cls": ("cls",),
    "image": ("i_toe", "i_age", "i_loc"),
    "region": ("r_toe", "r_age", "r_loc"),
    "box": ("b_toe", "b_age", "b_loc"),
}
REJECTED = "rejected"
STAGING = "_publish"  # under OUTPUT: what an upload sends, kept so an upload can resume
UPLOAD_STATE = ".facext_upload"  # the uploader's state inside the staging folder
EXPORTED = ("data", REJECTED, "README.md")  # what an export owns in its folder
DEFAULT_PRETTY_NAME = "FiFa-Instruct (facext)"
TASK_CATEGORIES = ["image-text-to-text", "visual-question-answering", "image-segmentation",
                   "image-classification"]
TAGS = ["deepfake-detection", "face-forgery", "explainable-ai", "face-manipulation", "instruction-tuning",
        "grounding", "segmentation-masks", "facext", "fifa-instruct"]
_PARTIAL = ".partial"

assert sorted(t for tasks in FAMILIES.values() for t in tasks) == sorted(TASKS), "every task in one family"


class PublishError(ValueError):
    """A publish request that cannot be carried out; the message says what to do."""


def family_of(task: str) -> str:
    return next(family for family, tasks in FAMILIES.items() if task in tasks)


# --- the pipeline's output --------------------------------------------------------------------


def read_finished_output(output: str | os.PathLike) -> dict[str, Any]:
    """The run report of a finished fifa_annotate output folder; PublishError otherwise."""
    root = Path(output)
    if "://" in str(output):
        raise PublishError(f"{output}: publish reads a local folder; copy the output here first "
                           f"(e.g. gcloud storage cp -r {output} .)")
    if not root.is_dir():
        raise PublishError(f"{output} is not a folder")
    report_path = root / "run_report.json"
    if not report_path.is_file():
        raise PublishError(f"{output} is not a finished fifa_annotate output: it has no run_report.json "
                           f"(run `beam run pipelines/fifa_annotate.py --output {output}` to make one)")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PublishError(f"{report_path} cannot be read: {exc}") from None
    if report.get("pipeline") != "fifa_annotate":
        raise PublishError(f"{report_path} is not a fifa_annotate run report")
    if report.get("status") == "awaiting_batch":
        raise PublishError(f"{output} still waits for LLM batch answers and holds no shards yet: run the "
                           f"pipeline with --llm_batch collect until it completes, then publish")
    if report.get("status") != "complete":
        raise PublishError(f"{output}: the run report's status is {report.get('status')!r}, not 'complete'")
    for folder in (*SPLITS, REJECTED):
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
        self.num_bytes = 0

    def add(self, batch) -> None:
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
        return {"rows": self.rows, "num_bytes": self.num_bytes, "temps": self.temps}


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


def _prepare_dest(dest: Path) -> None:
    """Refuse a folder holding what an export did not write; drop temporary files an
    interrupted export left.  Hidden entries (.git, the uploader's state) are kept."""
    if dest.exists() and not dest.is_dir():
        raise PublishError(f"{dest} is a file, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in dest.iterdir() if not p.name.startswith(".") and p.name not in EXPORTED)
    data = dest / "data"
    if data.is_dir():
        foreign += sorted(f"data/{p.name}" for p in data.iterdir() if p.name not in FAMILIES)
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
    if not report["samples"]["total"]:
        raise PublishError(f"{output}: the run wrote no samples ({report['pairs_rejected']} pairs rejected); "
                           f"there is no dataset to publish")
    inside = root.resolve() == dest.resolve() or root.resolve() in dest.resolve().parents
    if inside and dest.resolve() != (root / STAGING).resolve():
        raise PublishError(f"{dest} lies inside OUTPUT: export into a folder of its own (or OUTPUT/{STAGING})")
    _prepare_dest(dest)
    try:
        written = _write_parquet(root, dest, report, row_group_rows=row_group_rows,
                                 max_shard_bytes=max_shard_bytes, progress=progress)
        _check_against_report(written, report)
    except BaseException:
        _prepare_dest(dest)  # drops the temporary files; the files of an earlier export stay as they were
        raise
    for splits in written.values():
        for split, files in splits.items():
            name_files(split, files)
    configs = _configs(dest, written)
    sample_features, rejected_features = _features(root / SPLITS[0]), _features(root / REJECTED)
    card = dataset_card(report, configs, sample_features, rejected_features, license=license,
                        pretty_name=pretty_name or DEFAULT_PRETTY_NAME, repo_id=repo_id)
    _write_text(dest / "README.md", card)
    files = {dest / f for c in configs.values() for s in c["splits"].values() for f in s["files"]}
    _remove_stale(dest, files)
    splits = {**{s: sum(written[f][s]["rows"] for f in FAMILIES) for s in SPLITS},
              REJECTED: written[REJECTED][REJECTED]["rows"]}
    return {
        "dest": str(dest),
        "configs": configs,
        "splits": splits,
        "files": len(files),
        "rows": sum(splits[s] for s in SPLITS),
        "bytes": sum(f.stat().st_size for f in files) + (dest / "README.md").stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _write_parquet(root: Path, dest: Path, report: dict[str, Any], *, row_group_rows: int, max_shard_bytes: int,
                   progress: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Each family's rows of each split, and the rejected table, as Parquet files (under
    temporary names); returns config -> split -> rows, num_bytes, temporary files.

    One pass over the memory-mapped Arrow files per family: a pass touches the `task`
    column and its family's rows only, and holds at most one batch and one row group."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from build_tools.progress import Progress

    sizes = {"row_group_rows": row_group_rows, "max_shard_bytes": max_shard_bytes}
    sample_features, rejected_features = _features(root / SPLITS[0]), _features(root / REJECTED)
    total = report["samples"]["total"] + report["pairs_rejected"]
    written: dict[str, dict[str, dict[str, Any]]] = {family: {} for family in FAMILIES}
    with Progress(total=total, desc="export", unit="row", enabled=None if progress else False) as bar:
        for split in SPLITS:
            rows, routed = 0, 0
            for family, tasks in FAMILIES.items():
                sink = _ParquetShards(dest / "data" / family, split, sample_features, **sizes)
                wanted, rows = pa.array(tasks), 0
                for batch in _record_batches(root / split):
                    rows += batch.num_rows
                    mine = batch.filter(pc.is_in(batch.column("task"), value_set=wanted))
                    sink.add(mine)
                    bar.advance(mine.num_rows, size=mine.nbytes)
                written[family][split] = sink.finish()
                routed += written[family][split]["rows"]
            if routed != rows:
                raise PublishError(f"{split}: {rows - routed} rows have a task of no family "
                                   f"(tasks: {', '.join(TASKS)})")
        sink = _ParquetShards(dest / REJECTED, REJECTED, rejected_features, **sizes)
        for batch in _record_batches(root / REJECTED):
            sink.add(batch)
            bar.advance(batch.num_rows, size=batch.nbytes)
        written[REJECTED] = {REJECTED: sink.finish()}
    return written


def _configs(dest: Path, written: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Config -> {"tasks", "splits": {split: rows, num_bytes, files (relative)}, download_size,
    dataset_size, data_files, "empty": splits left out}; `default` adds the families up
    (its files are theirs).  Splits without rows and configs without any are left out."""
    def entry(tasks: tuple[str, ...], splits: dict[str, dict[str, Any]], patterns: dict[str, str]):
        kept = {s: {"rows": v["rows"], "num_bytes": v["num_bytes"],
                    "files": [f.relative_to(dest).as_posix() for f in v["files"]]}
                for s, v in splits.items() if v["rows"]}
        return {"tasks": list(tasks), "splits": kept, "empty": [s for s in splits if s not in kept],
                "download_size": sum((dest / f).stat().st_size for v in kept.values() for f in v["files"]),
                "dataset_size": sum(v["num_bytes"] for v in kept.values()),
                "data_files": [{"split": s, "path": patterns[s]} for s in kept]}

    default_splits = {s: {"rows": sum(written[f][s]["rows"] for f in FAMILIES),
                          "num_bytes": sum(written[f][s]["num_bytes"] for f in FAMILIES),
                          "files": [p for f in FAMILIES for p in written[f][s]["files"]]} for s in SPLITS}
    configs = {"default": entry(TASKS, default_splits, {s: f"data/*/{s}-*" for s in SPLITS})}
    for family, tasks in FAMILIES.items():
        configs[family] = entry(tasks, written[family], {s: f"data/{family}/{s}-*" for s in SPLITS})
    configs[REJECTED] = entry((), written[REJECTED], {REJECTED: f"{REJECTED}/{REJECTED}-*"})
    return {name: config for name, config in configs.items() if config["splits"]}


def _check_against_report(written: dict[str, dict[str, dict[str, Any]]], report: dict[str, Any]) -> None:
    """The rows on disk must be the ones the run report counts (the card prints both)."""
    problems = []
    by_task_split = report["samples"]["by_task_and_split"]
    for family, tasks in FAMILIES.items():
        for split in SPLITS:
            expected = sum(by_task_split.get(t, {}).get(split, 0) for t in tasks)
            found = written[family][split]["rows"]
            if found != expected:
                problems.append(f"{family}/{split}: {found} rows, the report says {expected}")
    rejected = written[REJECTED][REJECTED]["rows"]
    if rejected != report["pairs_rejected"]:
        problems.append(f"rejected: {rejected} rows, the report says {report['pairs_rejected']}")
    if problems:
        raise PublishError("the output's shards disagree with its run_report.json (was it modified?): "
                           + "; ".join(problems))


# --- the dataset card -------------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if n < bound), "n>1B")


def card_data(configs: dict[str, dict[str, Any]], sample_features, rejected_features, *, license: str,
              pretty_name: str):
    """The card's YAML metadata (`huggingface_hub.DatasetCardData`), filled with `datasets`'
    own writers so the Hub reads the configs and dataset_info as it reads push_to_hub's."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    samples = sum(v["rows"] for v in configs["default"]["splits"].values())
    data = DatasetCardData(
        language=["en"], license=license, pretty_name=pretty_name, size_categories=[size_category(samples)],
        task_categories=list(TASK_CATEGORIES), tags=list(TAGS), annotations_creators=["machine-generated"],
    )
    infos, metadata = {}, {}
    for name, config in configs.items():
        splits = SplitDict()
        for split, numbers in config["splits"].items():
            splits.add(SplitInfo(name=split, num_bytes=numbers["num_bytes"], num_examples=numbers["rows"]))
        features = rejected_features if name == REJECTED else sample_features
        infos[name] = DatasetInfo(features=features, splits=splits, download_size=config["download_size"],
                                  dataset_size=config["dataset_size"], config_name=name)
        metadata[name] = {"data_files": config["data_files"], **({"default": True} if name == "default" else {})}
    MetadataConfigs(metadata).to_dataset_card_data(data)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def dataset_card(report: dict[str, Any], configs: dict[str, dict[str, Any]], sample_features,
                 rejected_features, *, license: str = "unknown", pretty_name: str = DEFAULT_PRETTY_NAME,
                 repo_id: str | None = None) -> str:
    """README.md of the exported dataset: metadata, then sections written from the run."""
    data = card_data(configs, sample_features, rejected_features, license=license, pretty_name=pretty_name)
    sections = [
        f"# {pretty_name}",
        _intro(report, configs),
        _configs_section(configs),
        _loading_section(configs, repo_id),
        _columns_section(sample_features),
        _built_section(report),
        _report_section(report),
        _limits_section(report),
        _citation_section(),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _fmt(value: Any) -> str:
    """A number as the report holds it (shortest exact form), a bool as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "n/a"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _describer(report: dict[str, Any], role: str) -> str:
    options = report["options"]
    name, model = options.get(role), options.get(f"{role}_model")
    if name == "evidence":
        return "`evidence` (offline, no language model)"
    return f"`{name}` with model `{model}`" if model else f"`{name}`"


def _intro(report: dict[str, Any], configs: dict[str, dict[str, Any]]) -> str:
    samples = report["samples"]
    crop = report["options"].get("crop_size")
    crop_text = f"{crop}×{crop} " if crop else ""
    return (
        f"FiFa-Instruct samples for fine-grained explainable deepfake analysis, made by facext's "
        f"`fifa_annotate` pipeline (an implementation of the data side of *Fake-in-Facext*, FiFa) from "
        f"{_fmt(report['inputs'])} real/fake face pairs: {_fmt(report['pairs_written'])} pairs gave "
        f"{_fmt(samples['total'])} samples over {len(samples['by_task'])} tasks, "
        f"{_fmt(report['pairs_rejected'])} pairs were rejected (table `rejected`, with stage and reason).\n\n"
        f"Each sample is one question–answer conversation about an aligned {crop_text}face crop (`image`). "
        f"Answers name the altered parts of the face with concepts of the Facial Image Concept Tree (FICT); "
        f"grounded answers mark each concept with `[SEG]`, and `masks` holds one artifact mask per `[SEG]` "
        f"(COCO RLE). The artifact masks come from the per-pixel difference between the fake and its real "
        f"source, and each concept's region from the face's landmarks.\n\n"
        f"Samples split into `train` ({_fmt(samples['by_split'].get('train', 0))}) and `test` "
        f"({_fmt(samples['by_split'].get('test', 0))}) by identity (subject, else pair), so no face is in both."
    )


def _configs_section(configs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, config in configs.items():
        tasks = ", ".join(f"`{t}`" for t in config["tasks"]) if name != REJECTED else "rejected pairs"
        counts = [config["splits"][s]["rows"] if s in config["splits"] else "–" for s in (*SPLITS, REJECTED)]
        files = sum(len(v["files"]) for v in config["splits"].values())
        rows.append([f"`{name}`", tasks, *counts, files, config["download_size"]])
    empty = [f"`{name}` {split}" for name, config in configs.items() for split in config["empty"]]
    missing = [f"`{name}`" for name in ("default", *FAMILIES, REJECTED) if name not in configs]
    notes = []
    if empty:
        notes.append(f"Splits without rows are left out of their config ({', '.join(empty)}): `datasets` "
                     f"cannot load an empty split.")
    if missing:
        notes.append(f"Configs without rows are left out: {', '.join(missing)}.")
    intro = ("`default` holds every sample (its files are the task families' files); each task family is a "
             "config of its own; `rejected` lists the pairs that gave no samples.")
    return ("## Configurations\n\n" + " ".join([intro, *notes]) + "\n\n"
            + _table(["config", "tasks", *SPLITS, REJECTED, "files", "Parquet bytes"], rows))


def _loading_section(configs: dict[str, dict[str, Any]], repo_id: str | None) -> str:
    where = repo_id or "path/to/this/folder"
    families = [name for name in ("region", *FAMILIES) if name in configs]
    name = families[0]
    split = next(iter(configs[name]["splits"]))
    others = ", ".join(f'"{n}"' for n in ("default", *FAMILIES) if n in configs and n != name)
    return f"""## Loading

```python
from datasets import load_dataset

ds = load_dataset("{where}", "{name}", split="{split}")   # or {others}
row = ds[0]
row["image"]           # PIL image: the aligned face crop
row["conversations"]   # [{{"from": "human", "value": "<image>\\n..."}}, {{"from": "gpt", "value": "..."}}]
row["concepts"]        # FICT concept ids, in [SEG] order

from schemas import decode_mask          # facext; or pycocotools.mask.decode
masks = [decode_mask(m) for m in row["masks"]]   # one bool (height, width) array per [SEG]
```

Masks (`masks`, `region_masks`) are COCO compressed RLE: `size` is `[height, width]` and `counts` the
column-major run lengths, zeros first, in the ASCII encoding `pycocotools.mask.encode` writes. Without
facext: `pycocotools.mask.decode({{"size": m["size"], "counts": m["counts"].encode()}})`.
`load_dataset("{where}", "rejected", split="rejected")` gives the rejected pairs."""




def _type_name(feature) -> str:
    from datasets import Image, List, Value

    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, List):
        return f"list of {_type_name(feature.feature)}"
    if isinstance(feature, dict):
        return "{" + ", ".join(feature) + "}"
    return type(feature).__name__


def _columns_section(features) -> str:
    rows = []
    for name, field in FifaSample.model_fields.items():
        key = field.alias or name
        note = field.description or ""
        rows.append([f"`{key}`", f"`{_type_name(features[key])}`", note.replace("|", "/")])
    return "## Columns\n\n" + _table(["column", "type", "what it holds"], rows)


def _built_section(report: dict[str, Any]) -> str:
    from fict.tree import load_tree

    tree = load_tree()
    if tree.version == report.get("fict_version"):
        fict = (f"FICT version {report['fict_version']}: {len(tree)} concepts, {len(tree.atomic)} atomic and "
                f"{len(tree) - len(tree.atomic)} parents, {tree.depth} levels")
    else:
        fict = f"FICT version {_fmt(report.get('fict_version'))}"
    options = report["options"]
    templates = report.get("prompt_templates", [])
    lines = [
        "## How it was built",
        "",
        f"* facext version: `{report.get('facext_version')}`, pipeline `{report['pipeline']}`",
        f"* options hash: `{report.get('options_hash')}` (a hash of the options below that shape the samples)",
        f"* concept tree: {fict}",
        f"* describer: {_describer(report, 'describer')}",
        (f"* rater: {_describer(report, 'rater')}; pairs rated below {_fmt(options.get('min_rating'))} overall "
         f"or naming more than {_fmt(options.get('max_hallucinated'))} concepts without an artifact are rejected"),
        f"* manifests: {', '.join(f'`{Path(m).name}`' for m in report.get('manifests', [])) or 'n/a'}",
        "",
        "### Options",
        "",
        _table(["option", "value"], [[f"`{k}`", f"`{_fmt(v)}`"] for k, v in options.items()]),
        "",
        "### Prompt templates",
        "",
        "Templates the written pairs used; the version is a hash of the template file's content.",
        "",
        _table(["template", "version", "pairs"], [[f"`{t['id']}`", f"`{t['version']}`", t["pairs"]]
                                                   for t in templates]) if templates else "No template recorded.",
    ]
    return "\n".join(lines)


def _report_section(report: dict[str, Any]) -> str:
    samples, rejected = report["samples"], report["rejected"]
    parts = [
        "## Run report",
        "From the run's `run_report.json`.",
        "### Inputs",
        _table(["quantity", "value"], [
            ["inputs", report["inputs"]], ["pairs written", report["pairs_written"]],
            ["pairs rejected", report["pairs_rejected"]], ["samples", samples["total"]],
            ["adds up", report["adds_up"]]]),
        "### Stages",
        _table(["stage", "in", "rejected", "out"],
               [[s["stage"], s["in"], s["rejected"], s["out"]] for s in report.get("stages", [])]),
        "### Rejects by stage and reason",
        _table(["stage", "reason", "pairs"],
               [[stage, reason, n] for stage, reasons in rejected["by_stage_and_reason"].items()
                for reason, n in reasons.items()]) if rejected["by_reason"] else "No pair was rejected.",
        "### Samples by task and split",
        _table(["task", "config", *SPLITS, "total"],
               [[f"`{task}`", f"`{family_of(task)}`", *(by.get(s, 0) for s in SPLITS), samples["by_task"].get(task, 0)]
                for task, by in samples["by_task_and_split"].items()]
               + [["total", "", *(samples["by_split"].get(s, 0) for s in SPLITS), samples["total"]]]),
        _concepts(report.get("concepts") or {}, report["pairs_written"]),
        _ratings(report.get("ratings") or {}),
        _hallucination(report.get("hallucination") or {}),
        _llm(report.get("llm") or {}),
    ]
    return "\n\n".join(p for p in parts if p)


def _concepts(concepts: dict[str, Any], pairs: int, top: int = 15) -> str:
    """The most flagged FICT concepts and the coverage histogram (runs before these counts
    were kept have none)."""
    from fict.tree import load_tree

    flagged = concepts.get("flagged_pairs") or {}
    if not flagged:
        return ""
    tree = load_tree()
    ranked = sorted(((n, c) for c, n in flagged.items() if n), key=lambda x: (-x[0], x[1]))
    atomic = sum(1 for _, c in ranked if c in tree.by_id and tree[c].atomic)
    rows = [[f"`{c}`", tree[c].name if c in tree.by_id else c, "atomic" if tree.by_id.get(c) and tree[c].atomic
             else "parent", n, f"{n / pairs:.0%}" if pairs else "n/a"] for n, c in ranked[:top]]
    hist = concepts.get("coverage_histogram") or {}
    return (f"### Concepts\n\n{len(ranked)} of {len(tree)} FICT concepts ({atomic} atomic) were flagged in at "
            f"least one written pair. The most flagged:\n\n"
            + _table(["concept", "name", "kind", "pairs", "share of pairs"], rows)
            + "\n\nCoverage `|A∩R| / |R|` of the flagged atomic concepts:\n\n"
            + _table(["coverage", *hist], [["concepts", *hist.values()]]))


def _ratings(ratings: dict[str, Any]) -> str:
    histograms = ratings.get("histograms") or {}
    scores = list(next(iter(histograms.values()), {}))
    head = (f"### Ratings\n\nRater `{ratings.get('rater')}`, {_fmt(ratings.get('pairs_rated'))} pairs rated "
            f"(kept or not), minimum overall rating kept {_fmt(ratings.get('min_rating'))}. Scores per criterion:")
    if not ratings.get("pairs_rated"):
        return head.rsplit(" Scores", 1)[0] + " No pair was rated."
    rows = [[f"`{c}`", ratings["mean"].get(c), *(h.get(s, 0) for s in scores)] for c, h in histograms.items()]
    return head + "\n\n" + _table(["criterion", "mean", *scores], rows)


def _hallucination(h: dict[str, Any]) -> str:
    return ("### Hallucination check\n\nTexts that name a FICT concept in which no artifact was measured:\n\n"
            + _table(["measure", "checked", "hallucinating", "rate"], [
                ["texts", h.get("texts", 0), h.get("texts_hallucinating", 0), h.get("rate", 0.0)],
                ["concept mentions", h.get("mentions", 0), h.get("hallucinated_mentions", 0),
                 h.get("mention_rate", 0.0)]]))


_LLM_COLUMNS = ("calls", "cache_hits", "cache_misses", "retries", "failed", "invalid_answers", "input_tokens",
                "output_tokens", "cost_usd")
_LLM_HEADERS = ("calls", "cache hits", "cache misses", "retries", "failed", "invalid answers", "input tokens",
                "output tokens", "cost (USD)")


def _llm(llm: dict[str, Any]) -> str:
    by_model = llm.get("by_model") or {}
    if not by_model:
        return "### Language-model use\n\nNo language model was called: the describer and the rater ran offline."
    rows = [[f"`{name}`", *(entry.get(c) for c in _LLM_COLUMNS)] for name, entry in by_model.items()]
    rows.append(["total", *(llm.get(c) for c in _LLM_COLUMNS)])
    return (f"### Language-model use\n\nPrices as of {llm.get('prices_as_of')}; a cost of n/a means the model "
            f"has no price in facext's table (e.g. a self-hosted model).\n\n"
            + _table(["backend/model", *_LLM_HEADERS], rows))


def _limits_section(report: dict[str, Any]) -> str:
    options, reasons = report["options"], report["rejected"]["by_reason"]
    offline_describer = options.get("describer") == "evidence"
    offline_rater = options.get("rater") == "evidence"
    mask = (f"mode `{options.get('mask_mode')}`, threshold {_fmt(options.get('mask_threshold'))} grey levels"
            if options.get("mask_mode") == "absolute" else
            f"mode `{options.get('mask_mode')}`, percentile {_fmt(options.get('mask_percentile'))}")
    items = [
        (f"* **The artifact mask is an RGB difference** between the fake and its real source ({mask}). It "
         f"holds only where the fake is a localized manipulation of the real (attribute editing, local swaps). "
         f"For entire synthesis or global changes (colour, compression, re-rendering) the difference covers "
         f"the whole face or nothing; pairs where most of the face changed are rejected as `not_localized` "
         f"({_fmt(reasons.get('not_localized', 0))} in this run), fakes shifted against their real as "
         f"`misaligned` ({_fmt(reasons.get('misaligned', 0))}). The method needs the real source of every fake."),
        (f"* **Concept regions come from landmark geometry**: a face mesh maps each pixel to a region drawn on "
         f"a canonical face, so regions follow pose and shape but not individual anatomy; hair, ears, neck and "
         f"background come from a person segmentation and are coarse. An atomic concept counts as altered when "
         f"a fraction of at least {_fmt(options.get('coverage_threshold'))} of its region changed (or a large "
         f"share of the artifact lies in it)."),
    ]
    if offline_describer:
        items.append("* **Texts are templated**: the offline `evidence` describer writes deterministic sentences "
                     "from the measured evidence (which regions changed, how tone, edges and sharpness moved); "
                     "they are accurate about where, but repetitive and say nothing the measurements do not.")
    else:
        items.append(f"* **Texts are written by a language model** ({_describer(report, 'describer')}); they are "
                     f"checked for concepts without artifacts and rated, not verified by people.")
    if offline_rater:
        items.append("* **Ratings are not an independent judgement**: the offline `evidence` rater scores the "
                     "texts against the same measurements they were written from.")
    items.append("* Category and method labels are the manifest's; the pipeline does not check them.")
    return "## Known limits\n\n" + "\n".join(items)


CITATIONS = """\
@misc{fifa,
  title         = {Fake-in-Facext: Towards Fine-Grained Explainable DeepFake Analysis},
  eprint        = {2510.20531},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2510.20531},
}"""

RELATED = """\
@misc{facellava,
  title         = {Face-LLaVA: Facial Expression and Attribute Understanding through Instruction Tuning},
  author        = {Chaubey, Ashutosh and Guan, Xulang and Soleymani, Mohammad},
  year          = {2025},
  eprint        = {2504.07198},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2504.07198},
}"""


def _citation_section() -> str:
    return (f"## Citation\n\nThe method and the tasks are FiFa's:\n\n```bibtex\n{CITATIONS}\n```\n\n"
            f"Related work (face-specific instruction tuning):\n\n```bibtex\n{RELATED}\n```")


# --- publish ----------------------------------------------------------------------------------


def publish(output: str | os.PathLike, *, repo_id: str | None = None, local_dir: str | os.PathLike | None = None,
            token: str | None = None, private: bool = False, revision: str | None = None,
            endpoint: str | None = None, license: str = "unknown", progress: bool = True) -> dict[str, Any]:
    """Export OUTPUT for the Hub and upload it to `repo_id`, or, with `local_dir`, only
    write the tree there (nothing is uploaded).  Uploads stage in OUTPUT/_publish, kept
    so that an interrupted upload resumes.  Returns the export summary, plus `upload`
    (the uploader's result) when something was uploaded."""
    read_finished_output(output)
    if local_dir is None:
        if not repo_id:
            raise PublishError("name the Hub dataset repo to upload to (--repo-id user/name), or write the files "
                               "locally with --local-dir DIR")
        _check_repo_id(repo_id)
        token = token or _saved_token()
        if not token:
            raise PublishError("uploading needs a Hugging Face token with write access: set HF_TOKEN or log in "
                               "with `hf auth login` (tokens: https://huggingface.co/settings/tokens)")
    dest = Path(local_dir) if local_dir is not None else Path(output) / STAGING
    summary = export_for_hub(output, dest, license=license, repo_id=repo_id, progress=progress)
    summary["uploaded"] = False
    if local_dir is not None:
        return summary
    from build_tools.hub_upload import upload_dataset_folder

    samples = summary["rows"]
    summary["upload"] = upload_dataset_folder(
        dest, repo_id, token=token, private=private, revision=revision, endpoint=endpoint,
        commit_message=f"facext publish: {samples} FiFa-Instruct samples", progress=progress)
    summary["uploaded"] = True
    return summary


def _saved_token() -> str | None:
    """HF_TOKEN, else the saved login, as huggingface_hub finds them."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception as exc:  # noqa: BLE001 -- an OIDC exchange that failed, an unreadable token file
        raise PublishError(f"could not read a Hugging Face token: {exc}") from None


def _check_repo_id(repo_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id) or ".." in repo_id or "--" in repo_id:
        raise PublishError(f"{repo_id!r} is not a Hub repo id: expected user/name or org/name")

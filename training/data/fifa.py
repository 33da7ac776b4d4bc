"""FiFa-Instruct shards -> tensors: reading, the sample index, tokens and labels, batches.

**Reading.**  A shard row is one aligned crop (`schemas.fifa.FifaImage`) with the list of
task samples asked about it; a training example is one (row, sample) pair.  Shards are read
lazily: `open_shards` gives a `datasets.Dataset` over memory-mapped Arrow files, and
`open_table` gives the same rows as a `pyarrow.Table` without `datasets` (GPU images often
lack it).  Either one feeds `FifaSamples`, which builds its index from the `samples` column
alone (list lengths, read by pyarrow: no image is decoded and no row becomes Python objects)
and decodes one crop and one sample per `__getitem__`.

**Sources** (`--data`): a `load_from_disk` folder (the pipeline's output; a split of it is
taken), a folder of Hub Parquet files (`facext publish --local-dir`:
`data/{config}/{split}-*.parquet`, `default` holding every sample), or a Hub id.
`MixedSamples` mixes several sources with sampling weights.

**Tokens and labels**: `training.data.text` (the chat template, `<image>` expansion).

**[SEG] positions** (LISA's convention, ../shared/references/training.md §1.1): the hidden
state that becomes a mask query is the one at position p where `input_ids[p + 1]` is `[SEG]`
(the state that predicts `[SEG]`).  Positions count the expanded sequence, so no image
offset is added later.  `masks[k]` belongs to `seg_positions[k]`.

**Category** is the index in `schemas.fifa.CATEGORIES` of a fake crop's manipulation
category, and -1 (ignored by the loss) for a real crop: its pair's category does not describe
it.  **Masks** are the sample's COCO-RLE masks, one per `[SEG]` in its answer, decoded with
`schemas.masks.decode_mask` and resized (nearest) to `mask_size`; `region_masks` are the
concept regions R of the paper's dual masks, in the same order.

**Augmentation**: none yet (a flip would swap the "left"/"right" the answers name).
`worker_init_fn` still seeds each DataLoader worker's numpy and `random` RNGs apart (torch
seeds its own per worker), so random transforms added later differ between workers.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas.fifa import CATEGORIES
from schemas.masks import decode_mask
from training.data.text import IGNORE_INDEX, encode_conversation, pad_tokens, seg_positions
from training.data.tokenizer import SEG

__all__ = ["CLIP_MEAN", "CLIP_STD", "IGNORE_INDEX", "FifaSamples", "MixedSamples", "collate", "conversation_texts",
           "encode_conversation", "open_shards", "open_table", "seg_positions", "worker_init_fn"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # FaRL and OpenAI CLIP normalise with these
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CONFIG = "default"  # the Hub export's config that holds every sample
# The columns an example reads; the rest of a row (provenance, evidence) is never touched.
ROW_COLUMNS = ("image_id", "pair_id", "image", "is_fake", "category", "samples")


# --------------------------------------------------------------------------- reading
def _kind(spec: str | os.PathLike) -> str:
    """'disk' (a load_from_disk folder or one split of it), 'parquet' (a Hub export folder)
    or 'hub' (a Hub id)."""
    path = Path(spec)
    if not path.exists():
        if "://" in str(spec) or str(spec).startswith((".", "/", "~")):
            raise FileNotFoundError(f"{spec}: no such folder")
        return "hub"
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "disk"
    if (path / "data").is_dir():
        return "parquet"
    raise ValueError(f"{spec} is neither a load_from_disk folder (dataset_dict.json / state.json) "
                     f"nor a Hub export folder (data/{{config}}/{{split}}-*.parquet)")


def _parquet_files(folder: Path, split: str, config: str) -> list[str]:
    files = sorted((folder / "data" / config).glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no data/{config}/{split}-*.parquet")
    return [str(f) for f in files]


def open_shards(spec: str | os.PathLike, split: str = "train", *, config: str = DEFAULT_CONFIG,
                cache_dir: str | os.PathLike | None = None):
    """One split of FiFa-Instruct as a `datasets.Dataset` of `FifaImage` rows, memory-mapped.

    `spec`: a `load_from_disk` folder (the pipeline's output, or one split folder of it), a
    Hub export folder (`data/{config}/{split}-*.parquet`; `datasets` converts the Parquet to
    Arrow files under `cache_dir` once, then maps them), or a Hub id (`load_dataset`)."""
    import datasets

    kind = _kind(spec)
    if kind == "disk":
        loaded = datasets.load_from_disk(str(spec))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise KeyError(f"{spec} has no split {split!r} (it has {sorted(loaded)})")
            loaded = loaded[split]
        return loaded
    cache = None if cache_dir is None else str(cache_dir)
    if kind == "parquet":
        files = _parquet_files(Path(spec), split, config)
        return datasets.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache)
    return datasets.load_dataset(str(spec), config, split=split, cache_dir=cache)


def open_table(spec: str | os.PathLike, split: str = "train", *, config: str = DEFAULT_CONFIG):
    """One split as a `pyarrow.Table`, with pyarrow alone (no `datasets`).

    A `load_from_disk` folder is read from its Arrow stream files through memory maps (the
    table's buffers point into the files); Parquet is decoded into memory (Parquet cannot be
    mapped); a Hub id needs `datasets` (`open_shards`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = _kind(spec)
    path = Path(spec)
    if kind == "hub":
        return _table_of(open_shards(spec, split, config=config))
    if kind == "parquet":
        return pq.read_table(_parquet_files(path, split, config), memory_map=True)
    folder = path if (path / "state.json").is_file() else path / split
    if not (folder / "state.json").is_file():
        raise KeyError(f"{spec} has no split {split!r}")
    state = json.loads((folder / "state.json").read_text())
    tables = []
    for entry in state["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    if not tables:
        raise ValueError(f"{folder} lists no data files")
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def require_columns(source, columns, dataset_name: str) -> None:
    """A ValueError naming what is missing when `source` (a Dataset or Table) lacks any of
    `columns`: e.g. FaceInstruct shards given to a model that reads FiFa-Instruct."""
    names = source.column_names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"these shards are not {dataset_name} shards: no column {', '.join(missing)} "
                         f"(they have {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")


def _table_of(dataset) -> Any:
    """The pyarrow Table under a `datasets.Dataset` (rows in its order)."""
    if getattr(dataset, "_indices", None) is None:
        return dataset.data.table
    return dataset.with_format("arrow")[:]  # a selected/shuffled view: take its rows (a copy)


def _is_table(source) -> bool:
    import pyarrow as pa

    return isinstance(source, pa.Table)


def conversation_texts(source) -> Iterator[str]:
    """Every turn's text of a split (Dataset or pyarrow Table), read from the `samples` column
    alone: what `build_tokenizer` trains on."""
    import pyarrow.compute as pc

    column = source.column("samples") if _is_table(source) else _samples_column(source)
    samples = pc.list_flatten(column)
    for chunk in samples.chunks:  # struct_field, unlike .field(), respects a sliced chunk's offset
        turns = pc.list_flatten(pc.struct_field(chunk, "conversations"))
        yield from pc.struct_field(turns, "value").to_pylist()


def _samples_column(dataset):
    if getattr(dataset, "_indices", None) is None:
        return dataset.data.table.column("samples")
    return dataset.select_columns(["samples"]).with_format("arrow")["samples"]


# --------------------------------------------------------------------------- examples
def _resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) mask to (size, size): each output pixel takes the
    input pixel under its centre."""
    h, w = mask.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def _masks(rles: Sequence[Mapping[str, Any]], size: int) -> torch.Tensor:
    if not rles:
        return torch.zeros((0, size, size), dtype=torch.bool)
    return torch.from_numpy(np.stack([_resize_nearest(decode_mask(rle), size) for rle in rles]).astype(bool))


class FifaSamples(torch.utils.data.Dataset):
    """Every (row, sample) pair of a split as one example.

    `source`: a `datasets.Dataset`, a `pyarrow.Table` (`open_table`), or a spec that
    `open_shards` reads (falling back to `open_table` where `datasets` is missing).  `tasks`
    keeps only samples of those tasks.  With a `tokenizer` (and `num_image_tokens`, default
    (image_size/16)²), each example also holds `input_ids`, `labels` and `seg_positions`.

    An example: `pixel_values` float32 (3, S, S) CLIP-normalised; `masks` bool (n, M, M), one
    per [SEG]; `region_masks` bool (r, M, M); `is_fake` 0/1; `category` (-1 for real crops);
    `task`; `negative`; `concepts`; `bbox` float32 (4,) x0, y0, x1, y1 in S pixels, or None;
    `conversations`; `sample_id`; `image_id`; `pair_id`.
    """

    def __init__(self, source, *, split: str = "train", image_size: int = 224, mask_size: int = 64,
                 tokenizer=None, num_image_tokens: int | None = None, tasks: Iterable[str] | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        if isinstance(source, (str, os.PathLike)):
            source = (str(source), split)
        self._origin = source  # a spec, a Dataset (both pickle by reference) or a Table
        self._set_source(_open_any(*source) if isinstance(source, tuple) else source)
        self.image_size, self.mask_size = int(image_size), int(mask_size)
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens if num_image_tokens is not None else (self.image_size // 16) ** 2
        self.seg_id = None if tokenizer is None else tokenizer.convert_tokens_to_ids(SEG)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        self.rows, self.subs = self._index(None if tasks is None else set(tasks))

    def _set_source(self, source) -> None:
        require_columns(source, ROW_COLUMNS, "FiFa-Instruct")
        if _is_table(source):
            self._table, self._dataset = source.select(list(ROW_COLUMNS)), None
        elif getattr(source, "_indices", None) is None and hasattr(source, "data"):
            self._table, self._dataset = source.data.table.select(list(ROW_COLUMNS)), None
        else:  # a selected or shuffled Dataset view: read its rows through the view
            self._table, self._dataset = None, source.select_columns(list(ROW_COLUMNS)).with_format("arrow")

    def _index(self, tasks: set[str] | None) -> tuple[np.ndarray, np.ndarray]:
        """(row, sample-in-row) of every example, from the samples column's list lengths (and
        its task field when filtering)."""
        import pyarrow.compute as pc

        column = self._table.column("samples") if self._table is not None else self._dataset["samples"]
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
        rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        subs = np.arange(len(rows), dtype=np.int64) - starts
        if tasks is not None:
            task = pc.list_flatten(column)
            names = np.concatenate([pc.struct_field(chunk, "task").to_numpy(zero_copy_only=False)
                                    for chunk in task.chunks]) if task.num_chunks else np.zeros(0, dtype=object)
            keep = np.isin(names, sorted(tasks))
            rows, subs = rows[keep], subs[keep]
        return rows, subs

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):
        state = dict(self.__dict__)
        if not _is_table(self._origin):  # a spawned worker maps the files again instead of
            state["_table"] = state["_dataset"] = None  # receiving a copy of the table
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._table is None and self._dataset is None:
            origin = self._origin
            self._set_source(_open_any(*origin) if isinstance(origin, tuple) else origin)

    def _row(self, row: int) -> tuple[Any, int]:
        if self._table is not None:
            return self._table, row
        return self._dataset[row], 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        table, r = self._row(int(self.rows[index]))
        sample = table.column("samples")[r].values[int(self.subs[index])].as_py()
        image = table.column("image")[r]["bytes"].as_py()
        is_fake = bool(table.column("is_fake")[r].as_py())
        category = table.column("category")[r].as_py()
        pixels, (width, height) = self._pixels(image)
        bbox = None
        if sample.get("bbox"):
            x0, y0, x1, y1 = sample["bbox"]
            sx, sy = self.image_size / width, self.image_size / height
            bbox = torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy], dtype=torch.float32)
        item = {
            "pixel_values": pixels,
            "masks": _masks(sample["masks"], self.mask_size),
            "region_masks": _masks(sample.get("region_masks") or [], self.mask_size),
            "is_fake": int(is_fake),
            "category": CATEGORIES.index(category) if is_fake and category in CATEGORIES else -1,
            "task": sample["task"],
            "negative": bool(sample.get("negative", False)),
            "concepts": list(sample["concepts"]),
            "bbox": bbox,
            "conversations": [{"from": t["from"], "value": t["value"]} for t in sample["conversations"]],
            "sample_id": sample["sample_id"],
            "image_id": table.column("image_id")[r].as_py(),
            "pair_id": table.column("pair_id")[r].as_py(),
        }
        if self.tokenizer is not None:
            input_ids, labels = encode_conversation(self.tokenizer, item["conversations"], self.num_image_tokens)
            item.update(input_ids=input_ids, labels=labels, seg_positions=seg_positions(input_ids, self.seg_id))
        return item

    def _pixels(self, png: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            size = image.size
            image = image.convert("RGB")
            if image.size != (self.image_size, self.image_size):
                image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), size


def _open_any(spec, split: str):
    try:
        import datasets  # noqa: F401
    except ImportError:
        return open_table(spec, split)
    return open_shards(spec, split)


# --------------------------------------------------------------------------- mixing
class MixedSamples(torch.utils.data.Dataset):
    """Several sources drawn with sampling weights: draw i picks source k with probability
    weights[k] (independently per draw, from `seed`), and source k's n-th draw takes the n-th
    example of a permutation of that source (a new permutation, from `seed`, each time the
    source is used up).  So the sequence of examples depends on `seed` only: not on workers,
    batch size or restarts.  `length` draws make one epoch (default: the sources' total).
    Each example gets `source`, the index of its source."""

    def __init__(self, sources: Sequence[torch.utils.data.Dataset], weights: Sequence[float] | None = None,
                 *, seed: int = 0, length: int | None = None):
        if not sources:
            raise ValueError("MixedSamples needs at least one source")
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("one non-negative weight per source, not all zero")
        if any(len(s) == 0 and w > 0 for s, w in zip(sources, weights, strict=True)):
            raise ValueError("a source with a positive weight has no examples")
        self.sources, self.seed = list(sources), int(seed)
        self.weights = np.asarray(weights) / sum(weights)
        self.length = int(length) if length is not None else sum(len(s) for s in sources)
        rng = np.random.default_rng([self.seed, 0x5EED])
        self.choice = rng.choice(len(sources), size=self.length, p=self.weights).astype(np.int32)
        # the n-th draw of its source, for every draw
        self.nth = np.zeros(self.length, dtype=np.int64)
        for k in range(len(sources)):
            where = np.flatnonzero(self.choice == k)
            self.nth[where] = np.arange(len(where))
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def _permutation(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, k, epoch]).permutation(len(self.sources[k]))
        return self._perms[key]

    def locate(self, index: int) -> tuple[int, int]:
        """(source, index in that source) of draw `index`."""
        k, n = int(self.choice[index]), int(self.nth[index])
        size = len(self.sources[k])
        return k, int(self._permutation(k, n // size)[n % size])

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, i = self.locate(index)
        return {**self.sources[k][i], "source": k}


# --------------------------------------------------------------------------- batches
def collate(batch: Sequence[Mapping[str, Any]], pad_id: int, seg_id: int | None = None) -> dict[str, Any]:
    """Examples -> a batch.  Stacks `pixel_values`, `is_fake`, `category`; right-pads
    `input_ids` (`pad_id`), `labels` (-100) and builds `attention_mask`; keeps `masks` and
    `region_masks` as lists (a sample holds any number); `bbox` becomes float (B, 4) with
    `has_bbox` (B,); `seg_positions` is a list of 1-D LongTensors (recomputed from the padded
    ids when `seg_id` is given, else the examples'); text fields stay lists."""
    out: dict[str, Any] = {
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
        "is_fake": torch.tensor([int(b["is_fake"]) for b in batch], dtype=torch.long),
        "category": torch.tensor([int(b["category"]) for b in batch], dtype=torch.long),
        "masks": [b["masks"] for b in batch],
        "region_masks": [b.get("region_masks") for b in batch],
        "bbox": torch.stack([b["bbox"] if b.get("bbox") is not None else torch.zeros(4) for b in batch]),
        "has_bbox": torch.tensor([b.get("bbox") is not None for b in batch], dtype=torch.bool),
    }
    for key in ("task", "negative", "concepts", "conversations", "sample_id", "image_id", "pair_id", "source"):
        if all(key in b for b in batch):
            out[key] = [b[key] for b in batch]
    if all("input_ids" in b for b in batch):
        ids, labels, attention = pad_tokens([(b["input_ids"], b["labels"]) for b in batch], pad_id)
        out.update(input_ids=ids, labels=labels, attention_mask=attention)
        if seg_id is not None:
            out["seg_positions"] = [seg_positions(ids[i, : int(attention[i].sum())], seg_id) for i in range(len(batch))]
        elif all("seg_positions" in b for b in batch):
            out["seg_positions"] = [b["seg_positions"] for b in batch]
    return out


# --------------------------------------------------------------------------- workers
def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker's numpy and `random` RNGs from torch's initial seed,
    which the DataLoader already makes differ per worker (base seed + worker id, the base
    drawn from the main process's torch RNG).  Without it, forked workers share numpy's and
    `random`'s state and draw the same "random" augmentations."""
    seed = torch.initial_seed() % 2**32  # torch itself is already seeded with it in the worker
    np.random.seed(seed)
    random.seed(seed)

"""FaceInstruct shards -> Face-LLaVA examples and batches.

A shard row (`schemas.faceinstruct.FaceSample`) is one image or video with its 68 iBUG
landmarks per kept frame (normalised to the crop) and one conversation; an example is one
row.  Reading is lazy as for FiFa-Instruct (`training.data.fifa.open_shards`: a
`load_from_disk` folder, a Hub Parquet export or a Hub id).

**Frames.**  An image is one frame (`image`).  A video is `num_frames` frames taken
uniformly from its stored sampled frames (`frames`, the pipeline's `--frames`, 8 by default
as in Face-LLaVA), each with its landmarks (`landmarks[frame_indices[k]]`).  Every frame is
resized to `image_size` and CLIP-normalised.  The conversation's `<image>` becomes
`tokens_per_frame` image tokens and `<video>` `num_frames * tokens_per_frame`
(`training.data.text.encode_conversation`), so images and videos take the same path
through the model, frame by frame.

**Landmarks** stay in crop-normalised (x, y) = (column, row) order, 0..1: (T, 68, 2) per
example.  The `label` column (the task's JSON object) is kept as a dict for the metrics.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from training.data.fifa import CLIP_MEAN, CLIP_STD, open_shards, require_columns
from training.data.text import encode_conversation, pad_tokens

__all__ = ["FaceInstructSamples", "collate_faces", "face_texts", "uniform_indices"]

_COLUMNS = ("sample_id", "task", "media_type", "image", "frames", "frame_indices", "landmarks", "label",
            "conversations", "source_dataset")


def uniform_indices(available: int, wanted: int) -> list[int]:
    """`wanted` indices spread uniformly over `available` items (repeats when there are fewer)."""
    if available < 1:
        raise ValueError("no frames to sample from")
    return [min(available - 1, int((k + 0.5) * available / wanted)) for k in range(wanted)]


def face_texts(spec: str | os.PathLike, split: str = "train") -> Iterator[str]:
    """Every turn's text of a split: what a run's own tokenizer is built from."""
    import pyarrow.compute as pc

    dataset = open_shards(spec, split)
    require_columns(dataset, _COLUMNS, "FaceInstruct")
    column = dataset.select_columns(["conversations"]).with_format("arrow")["conversations"]
    for chunk in pc.list_flatten(column).chunks:
        yield from pc.struct_field(chunk, "value").to_pylist()


class FaceInstructSamples(torch.utils.data.Dataset):
    """Every row of a FaceInstruct split as one example: `pixel_values` float32 (T, 3, S, S),
    `landmarks` float32 (T, 68, 2), `is_video`, `task`, `label` (dict), `conversations`,
    `sample_id`, and with a tokenizer `input_ids` and `labels`.  `tasks` keeps those tasks."""

    def __init__(self, source, *, split: str = "train", image_size: int = 224, tokens_per_frame: int = 256,
                 num_frames: int = 8, tokenizer=None, tasks: Iterable[str] | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        dataset = open_shards(source, split) if isinstance(source, (str, os.PathLike)) else source
        require_columns(dataset, _COLUMNS, "FaceInstruct")
        import datasets

        # The crops stay encoded until __getitem__ picks the ones it uses (a video row reads
        # its frames, never the middle-frame `image`).
        self.dataset = dataset.select_columns(list(_COLUMNS)).cast_column("image", datasets.Image(decode=False))
        if tasks is not None:
            keep = set(tasks)
            task_column = self.dataset.select_columns(["task"]).with_format("arrow")["task"].to_pylist()
            self.dataset = self.dataset.select([i for i, t in enumerate(task_column) if t in keep])
        self.image_size, self.tokens_per_frame, self.num_frames = int(image_size), int(tokens_per_frame), int(num_frames)
        self.tokenizer = tokenizer
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)

    def __len__(self) -> int:
        return len(self.dataset)

    def _pixels(self, frame) -> torch.Tensor:
        """One frame (encoded bytes, a `datasets` Image dict, or a decoded PIL image) as
        CLIP-normalised float32 (3, S, S)."""
        from PIL import Image

        if isinstance(frame, Mapping):
            frame = frame["bytes"]
        opened = Image.open(io.BytesIO(frame)) if isinstance(frame, (bytes, bytearray)) else frame
        with opened as image:
            image = image.convert("RGB")
            if image.size != (self.image_size, self.image_size):
                image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(((array - self.mean) / self.std).transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.dataset[int(index)]
        is_video = row["media_type"] == "video"
        points = row["landmarks"]
        if is_video:
            if not row["frames"]:
                raise ValueError(f"{row['sample_id']}: a video row without frames")
            picks = uniform_indices(len(row["frames"]), self.num_frames)
            frames = [row["frames"][k] for k in picks]
            track = row["frame_indices"]
            marks = [points[track[k]] if track else points[min(k, len(points) - 1)] for k in picks]
        else:
            frames = [row["image"]]
            marks = [points[0]]
        item = {
            "pixel_values": torch.stack([self._pixels(f) for f in frames]),
            "landmarks": torch.tensor(np.asarray(marks, dtype=np.float32)),
            "is_video": is_video,
            "task": row["task"],
            "label": json.loads(row["label"]),
            "conversations": [{"from": t["from"], "value": t["value"]} for t in row["conversations"]],
            "sample_id": row["sample_id"],
            "source_dataset": row["source_dataset"],
        }
        if item["landmarks"].shape[1:] != (68, 2):
            raise ValueError(f"{row['sample_id']}: landmarks of shape {tuple(item['landmarks'].shape)}, not (T, 68, 2)")
        if self.tokenizer is not None:
            item["input_ids"], item["labels"] = encode_conversation(
                self.tokenizer, item["conversations"], self.tokens_per_frame, self.num_frames * self.tokens_per_frame)
        return item


def collate_faces(batch: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Examples -> a batch: every frame of every example in one tensor (ΣT, 3, S, S) with its
    landmarks (ΣT, 68, 2) and `frame_counts` (B,), so the vision tower sees one flat batch of
    frames; tokens right-padded; text fields as lists."""
    out: dict[str, Any] = {
        "pixel_values": torch.cat([b["pixel_values"] for b in batch]),
        "landmarks": torch.cat([b["landmarks"] for b in batch]),
        "frame_counts": torch.tensor([len(b["pixel_values"]) for b in batch], dtype=torch.long),
        "is_video": torch.tensor([bool(b["is_video"]) for b in batch]),
    }
    for key in ("task", "label", "conversations", "sample_id", "source_dataset", "source"):
        if all(key in b for b in batch):
            out[key] = [b[key] for b in batch]
    if all("input_ids" in b for b in batch):
        out["input_ids"], out["labels"], out["attention_mask"] = pad_tokens(
            [(b["input_ids"], b["labels"]) for b in batch], pad_id)
    return out

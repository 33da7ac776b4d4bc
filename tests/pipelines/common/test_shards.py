"""Shard placement: as few files as --max_rows_per_shard allows, of near-equal size, the
same bytes whatever the bucket estimate and however often the writer runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipelines.common.shards import file_of, finalize_split, parts_by_split, shard_sizes


class Row(BaseModel):
    row_id: str
    split: str
    payload: bytes


@pytest.mark.parametrize("rows, max_rows, sizes", [
    (54, 10, [9] * 6), (50, 10, [10] * 5),
    (51, 10, [9, 9, 9, 8, 8, 8]), (7, 10, [7]), (1, 1000, [1]), (0, 10, []), (10, 10, [10]), (11, 10, [6, 5]),
])
def test_sizes_are_as_few_as_allowed_and_near_equal(rows, max_rows, sizes):
    assert shard_sizes(rows, max_rows) == sizes


@pytest.mark.parametrize("rows", [1, 9, 10, 11, 54, 99, 100, 101, 997, 2500])
@pytest.mark.parametrize("max_rows", [1, 3, 10, 1000])
def test_each_position_lies_in_the_file_the_sizes_say(rows, max_rows):
    sizes = shard_sizes(rows, max_rows)
    assert len(sizes) == math.ceil(rows / max_rows) and sum(sizes) == rows
    assert max(sizes) <= max_rows and max(sizes) - min(sizes) <= 1
    expected = [i for i, n in enumerate(sizes) for _ in range(n)]
    assert [file_of(p, rows, max_rows) for p in range(rows)] == [(i, len(sizes)) for i in expected]


def _write(tmp: Path, rows: list[dict], max_rows: int, buckets: dict[str, int]) -> dict[str, dict]:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.common.shards import WriteShards

    events = tmp / "events.json"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (p | beam.Create(rows)
             | WriteShards(str(tmp / "parts"), Row, ("row_id",), max_rows, "split", buckets)
             | beam.combiners.ToList()
             | beam.Map(lambda kv: events.write_text(json.dumps([[list(k), v] for k, v in kv]))))
    return parts_by_split({tuple(k): v for k, v in json.loads(events.read_text())})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_shards_balances_each_split_and_is_byte_identical(tmp_path):
    """54 rows at most 10 a file: 6 files of 9 (the rule once gave up to 22 files of 1-6),
    whatever the bucket estimate; the rows of a file in a fixed order; a re-run gives the
    same bytes; `datasets` loads the result."""
    import datasets

    from schemas.features import hf_features

    rows = [{"row_id": f"r{i:03d}", "split": "train" if i < 54 else "test", "payload": bytes([i]) * 3000}
            for i in range(61)]
    outputs = []
    for run, buckets in enumerate(({"train": 6, "test": 1}, {"train": 6, "test": 1}, {"train": 23, "test": 4})):
        tmp = tmp_path / f"run{run}"
        parts = _write(tmp, rows, 10, buckets)
        assert [parts["train"][k][0] for k in sorted(parts["train"])] == [9] * 6
        assert [parts["test"][k][0] for k in sorted(parts["test"])] == [7]
        for split in ("train", "test"):
            finalize_split(str(tmp / "out" / split), str(tmp / "parts" / split), parts[split],
                           hf_features(Row), split)
        outputs.append(_files(tmp / "out"))
        train = datasets.load_from_disk(str(tmp / "out" / "train"))
        assert sorted(train["row_id"]) == [f"r{i:03d}" for i in range(54)]
    assert outputs[0] == outputs[1]  # a re-run: the same bytes
    # another bucket estimate orders rows otherwise, but cuts the files alike
    assert [k for k in outputs[2] if k.endswith(".arrow")] == [k for k in outputs[0] if k.endswith(".arrow")]

"""`ReadManifest` knows no pipeline: it takes the row parser, and the records it gets back
make their own rejected rows (a duplicate id is refused by the record itself)."""

from __future__ import annotations

import json
from functools import partial

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from pydantic import BaseModel

from pipelines.common.manifest import manifest_name
from pipelines.common.manifest_io import ReadManifest
from schemas.common import Rejected, RejectReason, Stage


class MediaRejected(Rejected):
    """A rejected row of another shape than FiFa's (as FaceInstruct's will be)."""

    source_path: str | None = None
    stage: str
    reason: str
    detail: str
    row: int | None = None


class MediaItem(BaseModel):
    pair_id: str  # the id ReadManifest groups by
    media: str
    manifest: str
    row: int

    def rejected(self, stage: str, reason: str, detail: str) -> MediaRejected:
        return MediaRejected(source_path=self.media, stage=stage, reason=reason, detail=detail, row=self.row)


def parse_media(manifest: str, index: int, row, *, column: str) -> MediaItem | MediaRejected:
    if isinstance(row, str) or column not in row:
        return MediaRejected(stage=Stage.MANIFEST.value, reason=RejectReason.BAD_MANIFEST_ROW.value,
                             detail=f"no {column}", row=index)
    return MediaItem(pair_id=row[column], media=row[column], manifest=manifest_name(manifest), row=index)


def test_read_manifest_with_another_pipelines_rows(tmp_path):
    rows = [{"media": "a.mp4"}, {"media": "b.jpg"}, {"label": 3}, {"media": "a.mp4"}, {"media": "c.png"}]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")

    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | ReadManifest((str(path),), partial(parse_media, column="media"))
        items = out["pairs"] | "ids" >> beam.Map(lambda item: (item.media, item.row))
        rejected = out["rejected"] | "reasons" >> beam.Map(lambda r: (r.source_path, r.stage, r.reason, r.row))
        inputs = out["events"] | "count" >> beam.combiners.Count.Globally()
        assert_that(items, equal_to([("a.mp4", 0), ("b.jpg", 1), ("c.png", 4)]), label="items")
        assert_that(rejected, equal_to([
            (None, "manifest", "bad_manifest_row", 2),
            ("a.mp4", "manifest", "duplicate_pair_id", 3),  # the record made its own row
            (None, "manifest", "bad_manifest_row", 5),
        ]), label="rejected")
        assert_that(inputs, equal_to([6]), label="inputs")  # 3 items + 3 rejected: every row counted

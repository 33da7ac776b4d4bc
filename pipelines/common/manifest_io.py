"""Beam side of manifest reading: rows -> records, rejected rows and input counts."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.common.beam_tags import EVENTS, OK, REJECTED, event, split_outputs
from pipelines.common.manifest import read_records
from pipelines.common.stages import NAMESPACE
from schemas.common import Rejected, RejectReason, Stage


class _ParseManifest(beam.DoFn):
    def __init__(self, parse_row, limits: dict[str, int] | None):
        self.parse_row, self.limits = parse_row, limits or {}
        self.rows = Metrics.counter(NAMESPACE, "manifest_rows")
        self.bad = Metrics.counter(NAMESPACE, "manifest_rejected")

    def process(self, path: str):
        for record in read_records(path, self.parse_row, self.limits.get(path)):
            self.rows.inc()
            yield event(("inputs",))
            if isinstance(record, Rejected):
                self.bad.inc()
                yield REJECTED, record
            else:
                yield OK, (record.pair_id, record)


def _first_of_each_id(element, reason: RejectReason = RejectReason.DUPLICATE_PAIR_ID, what: str = "pair_id"):
    """One record per id: the first by (manifest, row); the others are rejected."""
    _, records = element
    records = sorted(records, key=lambda r: (r.manifest, r.row))
    first = records[0]
    yield OK, first
    for dup in records[1:]:
        yield REJECTED, dup.rejected(Stage.MANIFEST.value, reason.value,
                                     f"{what} also used by {first.manifest} row {first.row}")


class ReadManifest(beam.PTransform):
    """Manifest files -> {"pairs": records (one per id, spread over workers),
    "rejected": rejected rows, "events": one (("inputs",), 1) per row}.

    `parse_row(manifest, index, row)` is the pipeline's row parser (picklable): it returns
    a record with `pair_id`, `manifest`, `row` and `rejected(stage, reason, detail)`, or a
    `schemas.common.Rejected` row.  `limits` caps the rows read from each manifest
    (`--limit`); a second record with an id is rejected with `duplicate` (`what` names
    the id in its detail)."""

    def __init__(self, manifests: tuple[str, ...], parse_row, limits: tuple[int, ...] | None = None,
                 duplicate: RejectReason = RejectReason.DUPLICATE_PAIR_ID, what: str = "pair_id"):
        super().__init__()
        self.manifests, self.parse_row = manifests, parse_row
        self.duplicate, self.what = duplicate, what
        self.limits = dict(zip(manifests, limits, strict=True)) if limits else None

    def expand(self, p):
        rows = split_outputs(p
                             | "Manifest files" >> beam.Create(list(self.manifests))
                             | "Parse rows" >> beam.ParDo(_ParseManifest(self.parse_row, self.limits)),
                             "Parse rows", (OK, REJECTED, EVENTS))
        # Grouping by id both drops duplicates and spreads the pairs over workers.
        unique = split_outputs(rows[OK]
                               | "Group by pair id" >> beam.GroupByKey()
                               | "One pair per id" >> beam.FlatMap(_first_of_each_id, self.duplicate, self.what),
                               "One pair per id")
        rejected = (rows[REJECTED], unique[REJECTED]) | "Manifest rejects" >> beam.Flatten()
        return {"pairs": unique[OK], "rejected": rejected, "events": rows[EVENTS]}

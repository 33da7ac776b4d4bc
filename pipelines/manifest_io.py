"""Beam side of manifest reading: rows -> pairs, rejected rows and input counts."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam_tags import EVENTS, OK, REJECTED, event, split_outputs
from pipelines.fifa_stages import NAMESPACE
from pipelines.manifest import read_manifest
from schemas.analysis import RejectReason
from schemas.fifa import RejectedRow


class _ParseManifest(beam.DoFn):
    def __init__(self, allow_absolute: bool):
        self.allow_absolute = allow_absolute
        self.rows = Metrics.counter(NAMESPACE, "manifest_rows")
        self.bad = Metrics.counter(NAMESPACE, "manifest_rejected")

    def process(self, path: str):
        for record in read_manifest(path, self.allow_absolute):
            self.rows.inc()
            yield event(("inputs",))
            if isinstance(record, RejectedRow):
                self.bad.inc()
                yield REJECTED, record
            else:
                yield OK, (record.pair_id, record)


def _first_of_each_id(element):
    """One pair per id: the first by (manifest, row); the others are rejected."""
    _, records = element
    records = sorted(records, key=lambda r: (r.manifest, r.row))
    yield OK, records[0]
    for dup in records[1:]:
        first = records[0]
        yield REJECTED, RejectedRow(
            pair_id=dup.pair_id, stage="manifest", reason=RejectReason.DUPLICATE_PAIR_ID.value,
            detail=f"pair_id also used by {first.manifest} row {first.row}",
            real=dup.real, fake=dup.fake, method=dup.method or None, category=dup.category or None,
            subject_id=dup.subject_id, manifest=dup.manifest, row=dup.row)


class ReadManifest(beam.PTransform):
    """Manifest files -> {"pairs": PairInput (one per pair id, spread over workers),
    "rejected": RejectedRow, "events": one (("inputs",), 1) per row}."""

    def __init__(self, manifests: tuple[str, ...], allow_absolute: bool):
        super().__init__()
        self.manifests, self.allow_absolute = manifests, allow_absolute

    def expand(self, p):
        rows = split_outputs(p
                             | "Manifest files" >> beam.Create(list(self.manifests))
                             | "Parse rows" >> beam.ParDo(_ParseManifest(self.allow_absolute)),
                             "Parse rows", (OK, REJECTED, EVENTS))
        # Grouping by id both drops duplicates and spreads the pairs over workers.
        unique = split_outputs(rows[OK]
                               | "Group by pair id" >> beam.GroupByKey()
                               | "One pair per id" >> beam.FlatMap(_first_of_each_id), "One pair per id")
        rejected = (rows[REJECTED], unique[REJECTED]) | "Manifest rejects" >> beam.Flatten()
        return {"pairs": unique[OK], "rejected": rejected, "events": rows[EVENTS]}

"""Beam side of manifest reading: rows -> pairs, rejected rows and input counts."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.fifa_stages import EVENTS, NAMESPACE, REJECTED
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
            yield beam.pvalue.TaggedOutput(EVENTS, (("inputs",), 1))
            if isinstance(record, RejectedRow):
                self.bad.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, record)
            else:
                yield record.pair_id, record


def _first_of_each_id(element):
    """One pair per id: the first by (manifest, row); the others are rejected."""
    pair_id, records = element
    records = sorted(records, key=lambda r: (r.manifest, r.row))
    yield records[0]
    for dup in records[1:]:
        first = records[0]
        yield beam.pvalue.TaggedOutput(REJECTED, RejectedRow(
            pair_id=dup.pair_id, stage="manifest", reason=RejectReason.DUPLICATE_PAIR_ID.value,
            detail=f"pair_id also used by {first.manifest} row {first.row}",
            real=dup.real, fake=dup.fake, method=dup.method or None, category=dup.category or None,
            subject_id=dup.subject_id, manifest=dup.manifest, row=dup.row))


class ReadManifest(beam.PTransform):
    """Manifest files -> {"pairs": PairInput (one per pair id, spread over workers),
    "rejected": RejectedRow, "events": one (("inputs",), 1) per row}."""

    def __init__(self, manifests: tuple[str, ...], allow_absolute: bool):
        super().__init__()
        self.manifests, self.allow_absolute = manifests, allow_absolute

    def expand(self, p):
        rows = (p
                | "Manifest files" >> beam.Create(list(self.manifests))
                | "Parse rows" >> beam.ParDo(_ParseManifest(self.allow_absolute))
                .with_outputs(REJECTED, EVENTS, main="pairs"))
        # Grouping by id both drops duplicates and spreads the pairs over workers.
        unique = (rows.pairs
                  | "Group by pair id" >> beam.GroupByKey()
                  | "One pair per id" >> beam.FlatMap(_first_of_each_id).with_outputs(REJECTED, main="pairs"))
        rejected = (rows[REJECTED], unique[REJECTED]) | "Manifest rejects" >> beam.Flatten()
        return {"pairs": unique.pairs, "rejected": rejected, "events": rows[EVENTS]}

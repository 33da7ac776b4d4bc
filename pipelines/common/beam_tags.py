"""Several outputs from one Beam step, in a form every runner executes correctly.

A step yields `(tag, value)` pairs and `split_outputs` separates them with one cheap
step per tag.  (Beam's own `with_outputs` is mishandled by the Dask runner, which hands
every tagged output all elements; plain tuples work everywhere.)
"""

from __future__ import annotations

import apache_beam as beam

OK = "ok"
REJECTED = "rejected"
EVENTS = "events"
PENDING = "pending"  # requests deferred to a batch job (--llm_batch submit)
CACHED = "cached"  # results a stage found in a cache of finished work (they skip the stages that made them)
TAGS = (OK, REJECTED, EVENTS, PENDING, CACHED)


def _only(element, tag: str):
    if element[0] == tag:
        yield element[1]


def split_outputs(pcoll, label: str, tags: tuple[str, ...] = (OK, REJECTED)) -> dict:
    """{tag: PCollection of that tag's values}."""
    return {tag: pcoll | f"{label} [{tag}]" >> beam.FlatMap(_only, tag) for tag in tags}


def event(key: tuple, value: float = 1) -> tuple:
    """A count for the run report: summed per key over the whole run."""
    return EVENTS, (key, value)

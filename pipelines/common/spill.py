"""Large elements kept out of Beam's shuffles: spilled to files, referenced by position.

A shuffle (GroupByKey, Reshuffle) on the local FnApiRunner holds everything it carries in
memory until the next stage runs, and on Dataflow every byte it carries is paid for.
Pair crops and sample rows are hundreds of kilobytes; `Spill` writes each element once
to a file of its bundle (under a folder every worker can reach, e.g. OUTPUT/_tmp) and
passes on a `SpillRef` of a few dozen bytes; `SpillReader` brings the element back
where it is needed (`SpilledBatches` regroups pairs into batches this way).  The files go when the run's _tmp folder is removed.
"""

from __future__ import annotations

import pickle
import uuid
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


class SpillRef(NamedTuple):
    path: str
    offset: int
    length: int


class Spill(beam.DoFn):
    """element -> `SpillRef`, or `keyed(element, ref)` when a key function is given."""

    def __init__(self, spill_dir: str, keyed=None):
        self.spill_dir, self.keyed = spill_dir, keyed
        self._file = self._path = None
        self._offset = 0

    def start_bundle(self) -> None:
        self._file = self._path = None
        self._offset = 0

    def process(self, element):
        if self._file is None:
            self._path = FileSystems.join(self.spill_dir, f"{uuid.uuid4().hex}.spill")
            self._file = FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED)
        data = pickle.dumps(element, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.write(data)
        ref = SpillRef(self._path, self._offset, len(data))
        self._offset += len(data)
        yield self.keyed(element, ref) if self.keyed else ref

    def finish_bundle(self) -> None:
        if self._file is not None:
            self._file.close()  # the bundle's refs are only used after it commits
            self._file = None


class SpillReader:
    """Reads spilled elements, keeping each file open while it is in use."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}

    def read(self, ref: SpillRef):
        handle = self._handles.get(ref.path)
        if handle is None:
            handle = FileSystems.open(ref.path, compression_type=CompressionTypes.UNCOMPRESSED)
            self._handles[ref.path] = handle
        handle.seek(ref.offset)
        return pickle.loads(handle.read(ref.length))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


class _UnspillBatch(beam.DoFn):
    def process(self, keyed: tuple):
        reader = SpillReader()
        try:
            yield [reader.read(ref) for ref in sorted(keyed[1])]
        finally:
            reader.close()


class SpilledBatches(beam.PTransform):
    """Elements regrouped into batches of about `batch_size` (lists), spread over workers;
    the shuffle carries references.  An element's batch is a stable hash of `key_fn(element)`
    over `n_batches` buckets, so batches are the same on every run.

    Takes one PCollection or several (a tuple): each is spilled where it is made, before
    they meet, since a Flatten of collections made in another stage is where the local
    runner would hold every element in memory."""

    def __init__(self, spill_dir: str, key_fn, n_batches: int):
        super().__init__()
        self.spill_dir, self.key_fn, self.n_batches = spill_dir, key_fn, max(1, n_batches)

    def _keyed(self, element, ref: SpillRef):
        import hashlib

        digest = hashlib.sha256(str(self.key_fn(element)).encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.n_batches, ref

    def expand(self, pcolls):
        if not isinstance(pcolls, tuple):
            pcolls = (pcolls,)
        refs = [pcoll | f"Spill {i}" >> beam.ParDo(Spill(self.spill_dir, self._keyed))
                for i, pcoll in enumerate(pcolls)]
        return (tuple(refs)
                | "References" >> beam.Flatten()
                | "Group references" >> beam.GroupByKey()
                | "Read back batches" >> beam.ParDo(_UnspillBatch()))

"""Readers of the 13 source datasets in their public layouts, and of generic manifests.

`read_source(name, root, options)` yields a dataset's items and the rows it could not use,
in a fixed order; `READERS` names the reader of each `--source NAME`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pipelines.faceinstruct.readers.action_units import read_bp4d, read_disfa
from pipelines.faceinstruct.readers.base import ReadContext, SourceError, SourceTree
from pipelines.faceinstruct.readers.deepfake import read_fakeavceleb, read_ffpp
from pipelines.faceinstruct.readers.expression_video import read_crema_d, read_dfew, read_ferv39k, read_mafw
from pipelines.faceinstruct.readers.images import (
    read_affectnet,
    read_celeba,
    read_morph,
    read_rafdb,
    read_utkface,
)
from schemas.faceinstruct import SOURCES, FaceItem, RejectedItem

READERS: dict[str, Callable[[SourceTree, ReadContext], Iterator]] = {
    "dfew": read_dfew, "mafw": read_mafw, "ferv39k": read_ferv39k, "crema_d": read_crema_d,
    "affectnet": read_affectnet, "rafdb": read_rafdb,
    "disfa": read_disfa, "bp4d": read_bp4d,
    "celeba": read_celeba,
    "morph": read_morph, "utkface": read_utkface,
    "ffpp": read_ffpp, "fakeavceleb": read_fakeavceleb,
}
assert tuple(READERS) == tuple(SOURCES)

__all__ = ["READERS", "SourceError", "read_source"]


def read_source(name: str, root: str, options: dict | None = None) -> Iterator[FaceItem | RejectedItem]:
    """Every item (and rejected row) of dataset `name` unpacked at `root`; `SourceError`
    when the root holds nothing the reader can use."""
    if name not in READERS:
        raise SourceError(f"unknown source {name!r}; one of {', '.join(READERS)}")
    tree = SourceTree(root)
    yield from READERS[name](tree, ReadContext(name=name, task=SOURCES[name], options=dict(options or {})))

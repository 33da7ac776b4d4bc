"""What every dataset reader stands on: the dataset's tree, indexed once, and the items and
rejected rows a reader yields.

A reader is a function `read(tree, ctx)` that yields `FaceItem`s and `RejectedItem`s (stage
`read`) in a fixed order.  It finds its label files and media by searching the tree,
because the same dataset unpacks to different depths (DFEW's `part_N/`, FakeAVCeleb's
wrapper folder, CelebA's two layouts); it never demands one fixed path.  A dataset root
without the label files a reader needs is a `SourceError`: the run stops before any work
and says what was looked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.vision.video import natural_key
from schemas.common import RejectReason, Stage
from schemas.faceinstruct import FaceItem, RejectedItem

READ = Stage.READ.value
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class SourceError(ValueError):
    """A dataset root a reader cannot use at all (no label file, nothing it recognises)."""


class SourceTree:
    """A dataset root and every file under it, as paths relative to the root (`/`-separated)."""

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise SourceError(f"{root} is not a folder")
        self.root = os.path.abspath(root)
        files = []
        for folder, dirs, names in os.walk(self.root, followlinks=True):
            dirs.sort()
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            prefix = "" if rel == "." else rel + "/"
            files.extend(prefix + name for name in sorted(names) if not name.startswith("."))
        self.files: tuple[str, ...] = tuple(files)
        self._set = frozenset(files)
        self._by_name: dict[str, list[str]] = {}
        for path in files:
            self._by_name.setdefault(path.rsplit("/", 1)[-1].lower(), []).append(path)
        self.dirs = frozenset(path.rsplit("/", i)[0] for path in files for i in range(1, path.count("/") + 1))

    def path(self, rel: str) -> str:
        """The absolute path of a relative one."""
        return os.path.join(self.root, *rel.split("/"))

    def exists(self, rel: str) -> bool:
        return rel in self._set or rel in self.dirs

    def named(self, name: str) -> list[str]:
        """Files whose name is `name` (case-insensitive), in tree order."""
        return list(self._by_name.get(name.lower(), ()))

    def ending(self, *tails: str) -> list[str]:
        """Files whose relative path ends with one of `tails` (whole path components,
        case-insensitive), in tree order."""
        tails_l = [t.lower().strip("/") for t in tails]
        out = []
        for tail in tails_l:
            for path in self._by_name.get(tail.rsplit("/", 1)[-1], ()):
                low = path.lower()
                if (low == tail or low.endswith("/" + tail)) and path not in out:
                    out.append(path)
        return out

    def matching(self, pattern: str) -> list[str]:
        """Files whose relative path matches the regular expression (searched, not anchored
        at the start; anchor with `(^|/)`)."""
        regex = re.compile(pattern, re.IGNORECASE)
        return [path for path in self.files if regex.search(path)]

    def under(self, folder: str, suffixes: tuple[str, ...] = ()) -> list[str]:
        """Files below `folder` (relative), optionally with one of `suffixes`, in natural order."""
        prefix = folder.rstrip("/") + "/" if folder else ""
        found = [p for p in self.files if p.startswith(prefix) and (not suffixes or p.lower().endswith(suffixes))]
        return sorted(found, key=natural_key)

    def one(self, what: str, candidates: list[str]) -> str:
        """The first of `candidates`, or a `SourceError` saying `what` was looked for."""
        if not candidates:
            raise SourceError(f"no {what} under {self.root}")
        return candidates[0]


@dataclass
class ReadContext:
    """The source a reader reads (its --source NAME and task) and the reader options."""

    name: str
    task: str
    options: dict[str, Any] = field(default_factory=dict)

    def item(self, tree: SourceTree, rel: str, label: dict[str, Any], *, origin: str, media_type: str,
             split: str | None = None, subject: str | None = None, frame: int | None = None) -> FaceItem:
        return FaceItem(source_dataset=self.name, source_path=rel, source_frame=frame, media=tree.path(rel),
                        media_type=media_type, task=self.task, label=label, split=split,
                        subject_id=subject, origin=origin)

    def reject(self, rel: str, reason: RejectReason, detail: str, *, origin: str,
               frame: int | None = None) -> RejectedItem:
        return RejectedItem(source_dataset=self.name, source_path=rel, source_frame=frame, task=self.task,
                            stage=READ, reason=reason.value, detail=detail, origin=origin)

    def missing(self, rel: str, origin: str, frame: int | None = None) -> RejectedItem:
        return self.reject(rel, RejectReason.MISSING_FILE, f"{rel} does not exist under the --source {self.name} "
                           f"root", origin=origin, frame=frame)


def lines(tree: SourceTree, rel: str, encoding: str = "utf-8") -> Iterable[tuple[int, str]]:
    """(1-based line number, line without its end) of a text file; blank lines skipped;
    bytes that are not `encoding` become U+FFFD instead of stopping the source."""
    with open(tree.path(rel), encoding=encoding, errors="replace", newline="") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def int_or_none(text: str) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None

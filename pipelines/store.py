"""Immutable entries by key, on any Beam filesystem: what the LLM answer cache and the
analysis cache are built on.

    ROOT/ab/abcdef....SUFFIX

An entry is written whole or not at all (a local file is written to a temporary name and
renamed; object stores publish a file on close), so a reader sees a complete entry or
none, many workers may share one store, and two writers of one key write the same bytes.
"""

from __future__ import annotations

import os
import tempfile

from apache_beam.io.filesystems import FileSystems


class ContentStore:
    def __init__(self, root: str, suffix: str):
        self.root, self.suffix = root.rstrip("/"), suffix

    def path(self, key: str) -> str:
        return FileSystems.join(self.root, key[:2], f"{key}{self.suffix}")

    def get(self, key: str) -> bytes | None:
        """The entry's bytes; None when it is missing or cannot be read."""
        try:
            with FileSystems.open(self.path(key)) as f:
                return f.read()
        except Exception:  # noqa: BLE001 - missing or unreadable: a miss, replaced by the next put
            return None

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if "://" not in path:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=self.suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            with FileSystems.create(path) as f:
                f.write(data)

    def written_since(self, seconds: float) -> int:
        """Entries of a local store written at or after `seconds` (epoch time)."""
        count = 0
        for folder in (os.scandir(self.root) if os.path.isdir(self.root) else ()):
            if folder.is_dir():
                count += sum(1 for entry in os.scandir(folder.path)
                             if entry.name.endswith(self.suffix) and not entry.name.startswith(".tmp-")
                             and entry.stat().st_mtime >= seconds)
        return count

    def __len__(self) -> int:
        """Entries stored (walks the folder; for tests and reports)."""
        pattern = FileSystems.join(self.root, "*", f"*{self.suffix}")
        return sum(len(m.metadata_list) for m in FileSystems.match([pattern]))

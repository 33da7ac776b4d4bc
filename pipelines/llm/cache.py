"""A content-addressed store of model answers, on any Beam filesystem.

    CACHE/ab/abcdef....json   {"key", "backend", "model", "template", "text", "usage"}

The key is `LlmRequest.key(backend, model)`: a re-run that asks the same thing gets the
stored answer and pays nothing.  Every raw answer is stored, valid or not (validation
runs again on read, and an invalid answer's retry is a request of its own), so a re-run
makes no call at all.  Failures (timeouts, 5xx) are not stored: a re-run tries again.

Many workers may share one cache: entries are immutable and written whole (a local file
is written to a temporary name and renamed; object stores publish a file on close), so a
reader sees a complete entry or none, and two writers of one key write the same bytes.
"""

from __future__ import annotations

import json
import os
import tempfile

from apache_beam.io.filesystems import FileSystems

from pipelines.llm.backends import RawAnswer
from schemas.common import TemplateRef
from schemas.llm import Usage


def _is_local(path: str) -> bool:
    return "://" not in path


class LlmCache:
    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def path(self, key: str) -> str:
        return FileSystems.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> RawAnswer | None:
        path = self.path(key)
        try:
            with FileSystems.open(path) as f:
                entry = json.loads(f.read().decode("utf-8"))
            if entry.get("key") != key:
                return None
            return RawAnswer(text=str(entry["text"]), usage=Usage(**entry.get("usage", {})))
        except Exception:  # noqa: BLE001 - missing, unreadable or corrupt: a miss, replaced by the next answer
            return None

    def put(self, key: str, backend: str, model: str, template: TemplateRef | None, answer: RawAnswer) -> None:
        entry = {"key": key, "backend": backend, "model": model,
                 "template": template.model_dump() if template else None,
                 "text": answer.text, "usage": answer.usage.model_dump()}
        data = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        path = self.path(key)
        if _is_local(path):
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            with FileSystems.create(path) as f:
                f.write(data)

    def __len__(self) -> int:
        """Entries stored (walks the folder; for tests and reports)."""
        pattern = FileSystems.join(self.root, "*", "*.json")
        return sum(len(m.metadata_list) for m in FileSystems.match([pattern]))

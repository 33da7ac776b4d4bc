"""A content-addressed store of model answers, on any Beam filesystem.

    CACHE/ab/abcdef....json   {"key", "backend", "model", "template", "text", "usage"}

The key is `LlmRequest.key(backend, model)`: a re-run that asks the same thing gets the
stored answer and pays nothing.  Every raw answer is stored, valid or not (validation
runs again on read, and an invalid answer's retry is a request of its own), so a re-run
makes no call at all.  Failures (timeouts, 5xx) are not stored: a re-run tries again.

Many workers may share one cache: entries are immutable and written whole
(`pipelines.store.ContentStore`), so a reader sees a complete entry or none.
"""

from __future__ import annotations

import json

from pipelines.llm.backends import RawAnswer
from pipelines.store import ContentStore
from schemas.common import TemplateRef
from schemas.llm import Usage


class LlmCache:
    def __init__(self, root: str):
        self.store = ContentStore(root, ".json")
        self.root = self.store.root

    def path(self, key: str) -> str:
        return self.store.path(key)

    def get(self, key: str) -> RawAnswer | None:
        data = self.store.get(key)
        if data is None:
            return None
        try:
            entry = json.loads(data.decode("utf-8"))
            if entry.get("key") != key:
                return None
            return RawAnswer(text=str(entry["text"]), usage=Usage(**entry.get("usage", {})))
        except Exception:  # noqa: BLE001 - missing, unreadable or corrupt: a miss, replaced by the next answer
            return None

    def put(self, key: str, backend: str, model: str, template: TemplateRef | None, answer: RawAnswer) -> None:
        entry = {"key": key, "backend": backend, "model": model,
                 "template": template.model_dump() if template else None,
                 "text": answer.text, "usage": answer.usage.model_dump()}
        self.store.put(key, (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))

    def __len__(self) -> int:
        """Entries stored (walks the folder; for tests and reports)."""
        return len(self.store)

"""Cache keys of LLM requests and the answer cache: what changes a key, stability across
processes, corrupt entries, concurrent writers, a non-local Beam filesystem, no secrets."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from pipelines.llm.backends import RawAnswer
from pipelines.llm.cache import LlmCache
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.common import TemplateRef
from schemas.llm import Explanation, Rating, Usage
from tests import REPO

# Servers check an image's first bytes against its type, so both start as PNGs do.
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
OTHER = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4
TEMPLATE = TemplateRef(id="fifa_concept_explanation@v1", version="0123456789ab")


def _request(**changes) -> LlmRequest:
    base = LlmRequest(template=TEMPLATE, system="You are an analyst.", user="Explain the nose.",
                      schema=Explanation, images=(ImagePart(IMAGE), ImagePart(OTHER)))
    return replace(base, **changes)


BASE_KEY = ("gemini", "gemini-2.5-flash")


# --------------------------------------------------------------------------------------------
# Keys


def _flipped_image() -> tuple[ImagePart, ...]:
    data = bytearray(IMAGE)
    data[517] ^= 0x01
    return (ImagePart(bytes(data)), ImagePart(OTHER))


VARIANTS = {
    "backend": (_request(), ("openai", "gemini-2.5-flash")),
    "model": (_request(), ("gemini", "gemini-2.5-pro")),
    "system": (_request(system="You are an analyst!"), BASE_KEY),
    "user": (_request(user="Explain the nose. "), BASE_KEY),
    "image byte": (_request(images=_flipped_image()), BASE_KEY),
    "image order": (_request(images=(ImagePart(OTHER), ImagePart(IMAGE))), BASE_KEY),
    "image dropped": (_request(images=(ImagePart(IMAGE),)), BASE_KEY),
    "temperature": (_request(temperature=0.2), BASE_KEY),
    "max_output_tokens": (_request(max_output_tokens=1025), BASE_KEY),
    "schema": (_request(schema=Rating), BASE_KEY),
    "template version": (_request(template=TemplateRef(id=TEMPLATE.id, version="0123456789ac")), BASE_KEY),
    "template id": (_request(template=TemplateRef(id="other@v1", version=TEMPLATE.version)), BASE_KEY),
    "correction": (_request(correction=("{}", "explanation: field required")), BASE_KEY),
}


@pytest.mark.parametrize("what", list(VARIANTS))
def test_key_changes_with_each_input(what):
    request, (backend, model) = VARIANTS[what]
    assert request.key(backend, model) != _request().key(*BASE_KEY)


def test_every_variant_has_its_own_key():
    keys = {r.key(*k) for r, k in VARIANTS.values()} | {_request().key(*BASE_KEY)}
    assert len(keys) == len(VARIANTS) + 1
    # And the correction's two parts each count.
    a = _request().corrected("{}", "explanation: field required")
    assert a.key(*BASE_KEY) != _request().corrected("{ }", "explanation: field required").key(*BASE_KEY)
    assert a.key(*BASE_KEY) != _request().corrected("{}", "explanation: missing").key(*BASE_KEY)
    assert a.key(*BASE_KEY) == _request(correction=("{}", "explanation: field required")).key(*BASE_KEY)


def test_key_is_stable_otherwise():
    key = _request().key(*BASE_KEY)
    assert len(key) == 64 and int(key, 16) >= 0
    # A new but equal request (new image objects, copied bytes) has the same key.
    again = LlmRequest(template=TemplateRef(id=TEMPLATE.id, version=TEMPLATE.version),
                       system="You are an analyst.", user="Explain the nose.", schema=Explanation,
                       images=(ImagePart(bytes(bytearray(IMAGE))), ImagePart(OTHER)))
    assert again.key(*BASE_KEY) == key
    assert _request().key(*BASE_KEY) == key  # and asking twice gives the same answer


_SUBPROCESS = r"""
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.common import TemplateRef
from schemas.llm import Explanation, Rating

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
OTHER = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4
base = LlmRequest(template=TemplateRef(id="fifa_concept_explanation@v1", version="0123456789ab"),
                  system="You are an analyst.", user="Explain the nose.", schema=Explanation,
                  images=(ImagePart(IMAGE), ImagePart(OTHER)))
print(base.key("gemini", "gemini-2.5-flash"))
print(base.key("openai", "gpt-4o-mini"))
print(base.corrected("{}", "explanation: field required").key("gemini", "gemini-2.5-flash"))
print(LlmRequest(template=base.template, system=base.system, user=base.user, schema=Rating).key("gemini", "m"))
"""


def test_key_is_the_same_in_another_process():
    # Another interpreter, with another string-hash seed: nothing in the key may depend on it.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS], cwd=REPO, capture_output=True, text=True,
                         check=True, env=env, timeout=120)
    base = _request()
    here = [base.key(*BASE_KEY), base.key("openai", "gpt-4o-mini"),
            base.corrected("{}", "explanation: field required").key(*BASE_KEY),
            _request(images=(), schema=Rating).key("gemini", "m")]
    assert out.stdout.split() == here


# --------------------------------------------------------------------------------------------
# The cache on the local filesystem


def _answer(text: str = "{\"explanation\": \"Le nez est flou — ça se voit.\"}") -> RawAnswer:
    return RawAnswer(text=text, usage=Usage(input_tokens=812, output_tokens=37))


def test_put_get_round_trip(tmp_path):
    cache = LlmCache(str(tmp_path / "cache") + "/")
    key = _request().key(*BASE_KEY)
    assert cache.get(key) is None and len(cache) == 0
    cache.put(key, "gemini", "gemini-2.5-flash", TEMPLATE, _answer())
    assert cache.get(key) == _answer()
    assert len(cache) == 1
    path = Path(cache.path(key))
    assert path == tmp_path / "cache" / key[:2] / f"{key}.json"
    entry = json.loads(path.read_text(encoding="utf-8"))
    assert entry["key"] == key and entry["template"] == TEMPLATE.model_dump()
    assert (entry["backend"], entry["model"]) == ("gemini", "gemini-2.5-flash")
    # Rewriting an entry (another worker asked the same) changes nothing.
    before = path.read_bytes()
    cache.put(key, "gemini", "gemini-2.5-flash", TEMPLATE, _answer())
    assert path.read_bytes() == before


def test_corrupt_entries_are_misses(tmp_path):
    cache = LlmCache(str(tmp_path))
    key, other = _request().key(*BASE_KEY), _request(user="x").key(*BASE_KEY)
    cache.put(key, "gemini", "m", TEMPLATE, _answer())
    path = Path(cache.path(key))
    whole = path.read_bytes()
    for cut in (1, len(whole) // 2, len(whole) - 3):
        path.write_bytes(whole[:cut])  # truncated JSON
        assert cache.get(key) is None
    path.write_bytes(b"\xff\xfe not utf-8")
    assert cache.get(key) is None
    # An entry stored under the wrong name (its "key" is another request's) is a miss too.
    cache.put(other, "gemini", "m", TEMPLATE, _answer("{}"))
    path.write_bytes(Path(cache.path(other)).read_bytes())
    assert cache.get(key) is None and cache.get(other) == _answer("{}")
    # The next answer replaces the corrupt entry.
    cache.put(key, "gemini", "m", TEMPLATE, _answer())
    assert cache.get(key) == _answer()


def test_concurrent_puts_of_one_key_leave_one_valid_file(tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    keys = [_request(user=f"q{i}").key(*BASE_KEY) for i in range(5)]
    for key in keys:
        barrier = threading.Barrier(8)
        errors = []

        def put(key=key, barrier=barrier, errors=errors):
            try:
                barrier.wait()
                for _ in range(20):
                    cache.put(key, "gemini", "m", TEMPLATE, _answer())
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=put) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        folder = Path(cache.path(key)).parent
        assert [p.name for p in folder.iterdir() if key in p.name or p.name.startswith(".tmp-")] == [f"{key}.json"]
        assert cache.get(key) == _answer()
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(f"{k}.json" for k in keys)
    assert len(cache) == len(keys)


# --------------------------------------------------------------------------------------------
# The cache on a non-local Beam filesystem: an in-memory one standing in for GCS
# (Beam's Python SDK has no memory:// filesystem of its own, so the test registers one).


class _Published(io.BytesIO):
    """A write channel that publishes the object whole on close, as GCS does."""

    def __init__(self, store: dict, lock: threading.Lock, path: str):
        super().__init__()
        self._store, self._lock, self._path = store, lock, path

    def close(self) -> None:
        if not self.closed:
            with self._lock:
                self._store[self._path] = self.getvalue()
        super().close()


def _memory_filesystem():
    existing = [fs for fs in FileSystem.get_all_subclasses() if _scheme(fs) == "memory"]
    if existing:
        return existing[0]

    class MemoryFileSystem(FileSystem):
        """Objects in a dict, no directories; `memory://bucket/name` paths."""

        files: ClassVar[dict[str, bytes]] = {}
        lock: ClassVar[threading.Lock] = threading.Lock()

        @classmethod
        def scheme(cls):
            return "memory"

        def join(self, basepath, *paths):
            return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

        def split(self, path):
            head, _, tail = path.rstrip("/").rpartition("/")
            return head, tail

        def mkdirs(self, path):
            pass

        def has_dirs(self):
            return False

        def _list(self, dir_or_prefix):
            with self.lock:
                items = [(p, len(d)) for p, d in self.files.items() if p.startswith(dir_or_prefix)]
            for path, size in items:
                yield FileMetadata(path, size)

        def create(self, path, mime_type="application/octet-stream", compression_type=None):
            return _Published(self.files, self.lock, path)

        def open(self, path, mime_type="application/octet-stream", compression_type=None):
            with self.lock:
                if path not in self.files:
                    raise FileNotFoundError(path)
                return io.BytesIO(self.files[path])

        def copy(self, source_file_names, destination_file_names):
            with self.lock:
                for s, d in zip(source_file_names, destination_file_names, strict=True):
                    self.files[d] = self.files[s]

        def rename(self, source_file_names, destination_file_names):
            with self.lock:
                for s, d in zip(source_file_names, destination_file_names, strict=True):
                    self.files[d] = self.files.pop(s)

        def exists(self, path):
            with self.lock:
                return path in self.files

        def size(self, path):
            with self.lock:
                return len(self.files[path])

        def last_updated(self, path):
            return 0.0

        def checksum(self, path):
            return str(self.size(path))

        def metadata(self, path):
            return FileMetadata(path, self.size(path))

        def delete(self, paths):
            with self.lock:
                for path in paths:
                    self.files.pop(path, None)

    return MemoryFileSystem


def _scheme(fs) -> str | None:
    try:
        return fs.scheme()
    except NotImplementedError:
        return None


# Beam finds filesystems among FileSystem's live subclasses: keep a reference.
MEMORY_FILESYSTEM = _memory_filesystem()


@pytest.fixture
def memory_root():
    return f"memory://facext-test-{uuid.uuid4().hex[:8]}/llm_cache"


def test_cache_on_a_memory_filesystem(memory_root):
    cache = LlmCache(memory_root)
    key, other = _request().key(*BASE_KEY), _request(user="x").key(*BASE_KEY)
    assert cache.path(key) == f"{memory_root}/{key[:2]}/{key}.json"
    assert cache.get(key) is None and len(cache) == 0
    cache.put(key, "gemini", "m", TEMPLATE, _answer())
    cache.put(other, "gemini", "m", TEMPLATE, _answer("{}"))
    assert cache.get(key) == _answer() and cache.get(other) == _answer("{}")
    assert len(cache) == 2
    with FileSystems.open(cache.path(key)) as f:
        assert json.loads(f.read())["key"] == key
    # Corrupt objects are misses here too.
    with FileSystems.create(cache.path(key)) as f:
        f.write(b'{"key": "')
    assert cache.get(key) is None
    # Another cache on another prefix of the same store sees none of it.
    assert len(LlmCache(memory_root + "-other")) == 0


def test_client_with_a_memory_cache_makes_no_second_call(memory_root, monkeypatch):
    pytest.importorskip("openai")
    from build_tools.fakes.llm_server import LocalLlmServer
    from pipelines.llm.backends import BackendConfig, OpenAIBackend
    from pipelines.llm.client import LlmClient

    monkeypatch.setenv("OPENAI_API_KEY", "sk-memory-test")
    with LocalLlmServer() as server:
        backend = OpenAIBackend(BackendConfig("openai-compatible", "m", base_url=server.openai_base_url))
        first = LlmClient(backend, cache=LlmCache(memory_root)).ask(_request())
        again = LlmClient(backend, cache=LlmCache(memory_root))
        assert again.ask(_request()) == first
        assert len(server.generation_calls()) == 1 and again.stats.cache_hits == 1


# --------------------------------------------------------------------------------------------
# No secrets in the cache


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_no_cache_file_contains_the_api_key(provider, tmp_path, monkeypatch):
    pytest.importorskip("openai")
    pytest.importorskip("google.genai")
    from build_tools.fakes.llm_server import Fault, LocalLlmServer
    from pipelines.llm.backends import BackendConfig, GeminiBackend, OpenAIBackend
    from pipelines.llm.client import LlmClient
    from pipelines.retry import RetryPolicy

    secret = f"secret-{provider}-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    seen = []

    def faults(call):  # a retry and an invalid answer (so a correction is stored too)
        seen.append(call.index)
        if len(seen) == 1:
            return Fault.status(429, retry_after=0.01)
        return Fault.invalid({"explanation": ""}) if len(seen) == 2 else None

    with LocalLlmServer(faults=faults) as server:
        if provider == "openai":
            backend = OpenAIBackend(BackendConfig("openai", "gpt-4o-mini", base_url=server.openai_base_url))
        else:
            backend = GeminiBackend(BackendConfig("gemini", "gemini-2.5-flash", base_url=server.url))
        client = LlmClient(backend, cache=LlmCache(str(tmp_path / "cache")), retry=RetryPolicy(3, 0.001, 0.01))
        client.ask(_request())
        client.ask(_request(user="Explain the chin.", schema=Rating))
        assert server.api_keys_seen == {secret}  # the key was really used
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 3
    for path in files:
        assert secret.encode() not in path.read_bytes()

"""The LLM options of a run as one picklable record, and the one client per worker process.

Every stage of a process that talks to a model shares one `LlmClient`, so the rate limits
and the in-flight bound hold for the process as a whole (the describer and the rater do
not each get the full quota).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace

from apache_beam.io.filesystems import FileSystems

from pipelines.llm.backends import BACKENDS, DEFAULT_MODELS, Backend, BackendConfig, make_backend
from pipelines.llm.cache import LlmCache
from pipelines.llm.client import LLM_RETRY, LlmClient
from pipelines.llm.limits import RateLimiter


@dataclass(frozen=True)
class LlmConfig:
    backend: str
    model: str
    cache: str | None
    base_url: str | None = None
    max_attempts: int = 5
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    vertex: bool = False
    project: str | None = None
    location: str | None = None
    mode: str = "live"  # live | submit (batch) | dry_run
    failed_keys: str | None = None  # batch: file of requests whose batch answers failed for good

    @classmethod
    def model_for(cls, backend: str, model: str | None) -> str:
        if model:
            return model
        default = DEFAULT_MODELS.get(backend)
        if default is None:
            raise ValueError(f"--llm_model is required with {backend}")
        return default

    @property
    def slug(self) -> str:
        """A folder name for this backend and model (batch files)."""
        import re

        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.backend}-{self.model}")

    def backend_config(self) -> BackendConfig:
        return BackendConfig(backend=self.backend, model=self.model, base_url=self.base_url,
                             timeout_s=self.timeout_s, vertex=self.vertex, project=self.project,
                             location=self.location)

    def client(self) -> LlmClient:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown LLM backend {self.backend!r}; choose one of {BACKENDS}")
        # A dry run renders prompts only: it needs no key and no SDK client.
        backend = PromptOnlyBackend(self.backend_config()) if self.mode == "dry_run" else \
            make_backend(self.backend_config())
        return LlmClient(
            backend,
            cache=LlmCache(self.cache) if self.cache else None,
            limiter=RateLimiter(self.rpm, self.tpm), concurrency=self.concurrency,
            retry=replace(LLM_RETRY, max_attempts=self.max_attempts, backoff_base_s=self.backoff_base_s),
            mode=self.mode,
            failed_keys=load_failed_keys(self.failed_keys) if self.failed_keys and self.mode == "submit" else None,
        )


def load_failed_keys(path: str) -> dict[str, str]:
    """{key: detail} of the requests whose batch answers failed; empty before any collect."""
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as f:
        return {str(k): str(v) for k, v in json.loads(f.read().decode("utf-8")).items()}


class PromptOnlyBackend(Backend):
    """The backend of a dry run: names the provider and model, never calls."""

    def generate(self, request):
        raise RuntimeError("a dry run never calls the model")


_clients: dict[LlmConfig, LlmClient] = {}
_clients_lock = threading.Lock()


def shared_client(config: LlmConfig) -> LlmClient:
    """This process's client for `config` (created on first use)."""
    with _clients_lock:
        if config not in _clients:
            _clients[config] = config.client()
        return _clients[config]

"""Batch mode: the providers' batch APIs answer deferred requests at half the price.

    run in mode "submit"  -> cache misses are written as batch lines (`Backend.batch_line`)
    submit(config, files, state)   upload them (deduplicated, split into jobs), create the jobs
    collect(config, state, cache)  poll; store the answers of finished jobs in the cache
    run again                      every answered request is a cache hit; a request whose batch
                                   answer failed raises LlmFailed (`failed_path(state)`)

The state file (JSON, any Beam filesystem) records the jobs of every round: our id, the
provider's job and input file, the keys it carries, its last state and whether its results
were stored.  It holds no API key: the SDK clients read those from the environment.  Run
`collect` as often as you like (it only touches unfinished jobs); run one `submit` or
`collect` at a time per state file.

OpenAI: Files API (purpose "batch") and the Batch API on /v1/chat/completions.  Gemini
Developer API: a JSONL file uploaded with the Files API and `batches.create(src=file)`.
Vertex AI batch prediction reads from and writes to GCS/BigQuery and is not supported.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from apache_beam.io.filesystems import FileSystems
from pydantic import BaseModel, Field

from pipelines.llm.backends import Backend, GeminiBackend, OpenAIBackend, make_backend
from pipelines.llm.cache import LlmCache
from pipelines.llm.config import LlmConfig
from pipelines.llm.prices import PriceTable, load_prices
from schemas.llm import Usage

log = logging.getLogger(__name__)

# What one input file may hold: OpenAI takes 50,000 requests and 200 MB, the Gemini Files
# API 2 GB; images make lines large, so bytes usually bind first.
MAX_BYTES = {"openai": 190 * 2**20, "openai-compatible": 190 * 2**20, "gemini": 1900 * 2**20}
MISSING = "missing from the batch output"


class BatchError(RuntimeError):
    """Batch mode cannot go on: wrong configuration, a state file of another model, no input."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BatchJob(BaseModel):
    id: str = Field(description="ours, unique in the state: r<round>-<n>")
    provider_id: str = Field(description="the OpenAI batch id or the Gemini batch name (batches/...)")
    input_file_id: str = Field(description="the uploaded input file (OpenAI file id, Gemini files/...)")
    round: int
    requests: int
    keys: list[str] = Field(description="the cache keys of its requests, in input order")
    state: str = Field("submitted", description="the provider's last reported state")
    stored: bool = Field(False, description="finished and collected: nothing more to do")
    answers: int = 0
    errors: int = Field(0, description="requests without an answer (error or missing line)")
    usage: Usage = Field(default_factory=Usage)
    detail: str | None = Field(None, description="why the job as a whole failed")
    submitted_at: str = Field(default_factory=_now)
    finished_at: str | None = None


class BatchState(BaseModel):
    backend: str
    model: str
    rounds: int = 0
    jobs: list[BatchJob] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict, description="key -> why its batch answer failed")
    usage: Usage = Field(default_factory=Usage, description="tokens of the collected answers (batch-priced)")
    created_at: str = Field(default_factory=_now)
    updated_at: str = Field(default_factory=_now)

    @property
    def pending_jobs(self) -> list[BatchJob]:
        return [job for job in self.jobs if not job.stored]

    @property
    def done(self) -> bool:
        """Every job submitted so far is finished and collected."""
        return not self.pending_jobs

    @property
    def answers(self) -> int:
        return sum(job.answers for job in self.jobs)

    def cost(self, prices: PriceTable | None = None) -> float | None:
        """US dollars for the collected answers at the batch discount (None: unknown model)."""
        prices = prices or load_prices()
        return prices.cost(self.model, self.usage.input_tokens, self.usage.output_tokens, batch=True)

    def summary(self) -> str:
        stored = len(self.jobs) - len(self.pending_jobs)
        return (f"{self.backend}/{self.model}: {stored}/{len(self.jobs)} jobs done, {self.answers} answers stored, "
                f"{len(self.failed)} failed; {self.usage.input_tokens} input + {self.usage.output_tokens} "
                "output tokens")

    def report(self) -> dict:
        """For the run report (price `input_tokens`/`output_tokens` at the batch discount)."""
        return {"backend": self.backend, "model": self.model, "rounds": self.rounds, "jobs": len(self.jobs),
                "jobs_done": len(self.jobs) - len(self.pending_jobs), "requests": sum(j.requests for j in self.jobs),
                "answers": self.answers, "failed": len(self.failed), "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens}

    @classmethod
    def load(cls, path: str) -> BatchState | None:
        """The state at `path`; None when there is none yet."""
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return cls.model_validate_json(f.read())

    def save(self, path: str) -> None:
        """The state at `path` and its failed keys at `failed_path(path)`."""
        self.updated_at = _now()
        _write(path, self.model_dump_json(indent=1).encode())
        _write(failed_path(path), json.dumps(self.failed, indent=1, sort_keys=True).encode())


def load_state(path: str) -> BatchState:
    state = BatchState.load(path)
    if state is None:
        raise BatchError(f"no batch state at {path}: run submit first")
    return state


def failed_path(state_path: str) -> str:
    """Where the failed keys of a state go (what `LlmConfig.failed_keys` points to)."""
    return state_path.removesuffix(".json") + ".failed.json"


def _write(path: str, data: bytes) -> None:
    if "://" in path:
        with FileSystems.create(path) as f:
            f.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- the providers' batch APIs ------------------------------------------------------------------

@dataclass(frozen=True)
class JobStatus:
    state: str  # the provider's own word
    outcome: str  # running | succeeded | failed
    outputs: tuple[str, ...] = ()  # files holding result lines (may be partial for a failed job)
    detail: str | None = None


class _OpenAIBatches:
    def __init__(self, backend: OpenAIBackend):
        self.client = backend.client

    def create(self, data: bytes, job_id: str) -> tuple[str, str]:
        uploaded = self.client.files.create(file=(f"facext-{job_id}.jsonl", data), purpose="batch")
        batch = self.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                           completion_window="24h", metadata={"facext_job": job_id})
        return batch.id, uploaded.id

    def status(self, job: BatchJob) -> JobStatus:
        batch = self.client.batches.retrieve(job.provider_id)
        # An expired or cancelled batch may still have answered part of its requests.
        outputs = tuple(f for f in (batch.output_file_id, batch.error_file_id) if f)
        if batch.status == "completed":
            return JobStatus(batch.status, "succeeded", outputs)
        if batch.status in ("failed", "expired", "cancelled"):
            errors = [e.message for e in ((batch.errors.data or []) if batch.errors else []) if e.message]
            detail = f"batch job {batch.status}" + (f": {'; '.join(errors)[:300]}" if errors else "")
            return JobStatus(batch.status, "failed", outputs, detail)
        return JobStatus(batch.status, "running")

    def download(self, file_id: str) -> bytes:
        return self.client.files.content(file_id).content

    def delete(self, file_id: str) -> None:
        self.client.files.delete(file_id)


_GEMINI_SUCCEEDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
_GEMINI_FAILED = {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


class _GeminiBatches:
    def __init__(self, backend: GeminiBackend):
        self.client, self.model = backend.client, backend.model

    def create(self, data: bytes, job_id: str) -> tuple[str, str]:
        from google.genai import types

        uploaded = self.client.files.upload(file=io.BytesIO(data), config=types.UploadFileConfig(
            mime_type="jsonl", display_name=f"facext-{job_id}.jsonl"))
        job = self.client.batches.create(model=self.model, src=uploaded.name,
                                         config=types.CreateBatchJobConfig(display_name=f"facext-{job_id}"))
        return job.name, uploaded.name

    def status(self, job: BatchJob) -> JobStatus:
        batch = self.client.batches.get(name=job.provider_id)
        state = getattr(batch.state, "value", None) or str(batch.state or "JOB_STATE_UNSPECIFIED")
        outputs = (batch.dest.file_name,) if batch.dest is not None and batch.dest.file_name else ()
        if state in _GEMINI_SUCCEEDED:
            return JobStatus(state, "succeeded", outputs)
        if state in _GEMINI_FAILED:
            message = batch.error.message if batch.error is not None and batch.error.message else ""
            detail = f"batch job {state}" + (f": {message[:300]}" if message else "")
            return JobStatus(state, "failed", outputs, detail)
        return JobStatus(state, "running")

    def download(self, file_id: str) -> bytes:
        return self.client.files.download(file=file_id)

    def delete(self, file_id: str) -> None:
        self.client.files.delete(name=file_id)


def _backend_and_api(config: LlmConfig) -> tuple[Backend, _OpenAIBatches | _GeminiBatches]:
    if config.vertex:
        raise BatchError("batch mode does not support Vertex AI (its batch prediction reads and writes "
                         "GCS/BigQuery); use the Gemini Developer API with GEMINI_API_KEY, or live mode")
    backend = make_backend(config.backend_config())
    if isinstance(backend, OpenAIBackend):
        return backend, _OpenAIBatches(backend)
    if isinstance(backend, GeminiBackend):
        return backend, _GeminiBatches(backend)
    raise BatchError(f"{config.backend} has no batch API")


def _check(state: BatchState, backend: Backend, state_path: str) -> None:
    if (state.backend, state.model) != (backend.name, backend.model):
        raise BatchError(f"{state_path} holds batches of {state.backend}/{state.model}, "
                         f"not {backend.name}/{backend.model}")


# --- submit --------------------------------------------------------------------------------------

def _request_lines(request_files: Iterable[str], backend: Backend) -> Iterator[tuple[str, bytes]]:
    """(key, the line as written) of every request file (globs allowed; .gz read as such)."""
    for pattern in request_files:
        matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        if not matched:
            raise BatchError(f"no request file matches {pattern}")
        for path in matched:
            with FileSystems.open(path) as f:
                number = 0
                while raw := f.readline():
                    number += 1
                    if not raw.strip():
                        continue
                    yield _key_of(raw, backend, f"{path}:{number}"), raw.rstrip(b"\r\n")


def _key_of(raw: bytes, backend: Backend, where: str) -> str:
    try:
        line = json.loads(raw)
    except ValueError as exc:
        raise BatchError(f"{where}: not JSON ({exc})") from None
    if isinstance(backend, OpenAIBackend):
        if not isinstance(line, dict) or "custom_id" not in line or not isinstance(line.get("body"), dict):
            raise BatchError(f"{where}: not an OpenAI batch line (custom_id, body)")
        if line["body"].get("model") != backend.model:
            raise BatchError(f"{where}: written for model {line['body'].get('model')!r}, not {backend.model!r}")
        return str(line["custom_id"])
    if not isinstance(line, dict) or "key" not in line or not isinstance(line.get("request"), dict):
        raise BatchError(f"{where}: not a Gemini batch line (key, request)")
    return str(line["key"])


def _new_lines(lines: Iterator[tuple[str, bytes]], skip: set[str], cache: LlmCache | None,
               pool: ThreadPoolExecutor, chunk: int = 64) -> Iterator[tuple[str, bytes]]:
    """The lines whose keys were not seen, are not in `skip` and have no cached answer."""
    buffer: list[tuple[str, bytes]] = []

    def uncached() -> Iterator[tuple[str, bytes]]:
        if cache is None:
            yield from buffer
            return
        hits = pool.map(lambda item: cache.get(item[0]) is not None, buffer)
        yield from (item for item, hit in zip(buffer, hits, strict=True) if not hit)

    for key, raw in lines:
        if key in skip:
            continue
        skip.add(key)
        buffer.append((key, raw))
        if len(buffer) >= chunk:
            yield from uncached()
            buffer = []
    yield from uncached()


def submit(config: LlmConfig, request_files: list[str], state_path: str, max_requests_per_job: int = 10_000,
           max_bytes_per_job: int | None = None, retry_failed: bool = False) -> BatchState:
    """Upload the requests of `request_files` (JSONL of `Backend.batch_line`) as batch jobs and
    record them in the state at `state_path` (created or extended).

    Skipped: a key seen before in these files, one with an answer in the cache, one carried by
    a job not collected yet, and (unless `retry_failed`) one whose batch answer failed.  Each
    job holds at most `max_requests_per_job` lines and `max_bytes_per_job` bytes (default: what
    the provider takes).  The state is written after every job created.
    """
    if max_requests_per_job < 1:
        raise ValueError("max_requests_per_job must be at least 1")
    backend, api = _backend_and_api(config)
    max_bytes = max_bytes_per_job or MAX_BYTES.get(backend.name, MAX_BYTES["openai"])
    state = BatchState.load(state_path) or BatchState(backend=backend.name, model=backend.model)
    _check(state, backend, state_path)
    cache = LlmCache(config.cache) if config.cache else None

    skip = {key for job in state.pending_jobs for key in job.keys}
    if not retry_failed:
        skip |= set(state.failed)
    round_ = state.rounds + 1
    chunk: list[tuple[str, bytes]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if not chunk:
            return
        job_id = f"r{round_}-{sum(j.round == round_ for j in state.jobs):03d}"
        data = b"".join(raw + b"\n" for _, raw in chunk)
        provider_id, input_file_id = api.create(data, job_id)
        keys = [key for key, _ in chunk]
        state.jobs.append(BatchJob(id=job_id, provider_id=provider_id, input_file_id=input_file_id,
                                   round=round_, requests=len(keys), keys=keys))
        for key in keys:
            state.failed.pop(key, None)  # retried
        state.rounds = round_
        state.save(state_path)
        log.info("batch job %s (%s): %d requests, %d bytes", job_id, provider_id, len(keys), len(data))
        chunk.clear()
        size = 0

    with ThreadPoolExecutor(16) as pool:
        for key, raw in _new_lines(_request_lines(request_files, backend), skip, cache, pool):
            if chunk and (len(chunk) >= max_requests_per_job or size + len(raw) + 1 > max_bytes):
                flush()
            chunk.append((key, raw))
            size += len(raw) + 1
        flush()
    if not FileSystems.exists(state_path):
        state.save(state_path)  # nothing to submit: an empty state, so collect and the failed file work
    return state


# --- collect -------------------------------------------------------------------------------------

def collect(config: LlmConfig, state_path: str, cache: LlmCache, cleanup: bool = True) -> BatchState:
    """Poll every job not yet stored; store the answers of the finished ones in `cache`.

    A request whose line is an error, or is missing from the output, or whose job failed,
    expired or was cancelled, is recorded in `state.failed` with the provider's reason (and
    in `failed_path(state_path)`).  With `cleanup`, the input and output files of a stored
    job are deleted from the provider (Gemini keeps at most 20 GB of files per project).
    """
    backend, api = _backend_and_api(config)
    state = load_state(state_path)
    _check(state, backend, state_path)
    for job in state.pending_jobs:
        status = api.status(job)
        job.state = status.state
        if status.outcome == "running":
            continue
        expected = set(job.keys)
        seen: set[str] = set()
        for file_id in status.outputs:
            for raw in api.download(file_id).splitlines():
                if not raw.strip():
                    continue
                try:
                    key, answer, error = backend.parse_batch_result(json.loads(raw))
                except (ValueError, AttributeError) as exc:
                    log.warning("batch job %s: unreadable output line (%s)", job.id, exc)
                    continue
                if key not in expected or key in seen:
                    log.warning("batch job %s: unexpected key %s in the output", job.id, key)
                    continue
                seen.add(key)
                if answer is None:
                    state.failed[key] = error or "failed"
                    job.errors += 1
                    continue
                cache.put(key, backend.name, backend.model, None, answer)
                state.failed.pop(key, None)
                job.answers += 1
                job.usage = _plus(job.usage, answer.usage)
                state.usage = _plus(state.usage, answer.usage)
        for key in job.keys:
            if key not in seen:
                state.failed[key] = status.detail or MISSING
                job.errors += 1
        job.stored, job.detail, job.finished_at = True, status.detail, _now()
        state.save(state_path)  # the answers are in the cache: a crash from here loses nothing
        log.info("batch job %s %s: %d answers, %d failed", job.id, status.state, job.answers, job.errors)
        if cleanup:
            for file_id in (job.input_file_id, *status.outputs):
                try:
                    api.delete(file_id)
                except Exception as exc:  # noqa: BLE001 - cleanup is a courtesy; the answers are stored
                    log.warning("could not delete %s: %s", file_id, type(exc).__name__)
    state.save(state_path)
    return state


def _plus(a: Usage, b: Usage) -> Usage:
    return Usage(input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens)

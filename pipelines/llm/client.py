"""`LlmClient.ask(request)`: a validated answer, from the cache or from the provider.

    cache hit -> validate
    miss -> rate limit -> (at most `concurrency` in flight) call, retrying transient
            failures with exponential backoff and jitter, honouring Retry-After
            (`pipelines.retry.RetryPolicy`, `LLM_RETRY` by default)
         -> store the raw answer -> validate
    invalid -> ask once more with the validation error -> still invalid: LlmInvalid

In `submit` mode (batch) a miss is not called but deferred: `LlmDeferred` carries the
request so the batch submitter can send it, and the collected answers land in the cache,
where the next run finds them; a request whose batch answer failed for good (listed in
`failed_keys`, written by `pipelines.llm.batch.collect`) raises `LlmFailed` instead of
being deferred again.  In `dry_run` mode a miss is recorded and answered with a
placeholder, so every prompt of a pair can be rendered without a call.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field, fields

from pydantic import BaseModel, ValidationError

from pipelines.llm.backends import Backend, PermanentError, RawAnswer, TransientError, strip_fences
from pipelines.llm.cache import LlmCache
from pipelines.llm.limits import InFlight, RateLimiter
from pipelines.llm.request import LlmRequest
from pipelines.retry import RetryPolicy
from schemas.llm import Usage

log = logging.getLogger(__name__)
MODES = ("live", "submit", "dry_run")
# The LLM client's retries: a provider asking to wait longer than 5 minutes costs an attempt
# instead (see RetryPolicy.retry_after_max_s).
LLM_RETRY = RetryPolicy(max_attempts=5, backoff_base_s=1.0, backoff_max_s=60.0, retry_after_max_s=300.0)


class LlmFailed(Exception):
    """The provider did not answer (after every attempt, or permanently)."""


class LlmInvalid(Exception):
    """The answer did not validate, twice."""


class LlmDeferred(Exception):
    """Answers are awaited from a batch job; carries the requests to submit."""

    def __init__(self, requests: list[LlmRequest]):
        super().__init__(f"{len(requests)} request(s) deferred to a batch job")
        self.requests = requests


@dataclass
class LlmStats:
    """What a client did since the last `drain`; thread-safe."""

    calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    retries: int = 0
    failed: int = 0
    invalid_answers: int = 0
    deferred: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def drain(self) -> dict[str, float]:
        with self._lock:
            out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
            for name, value in out.items():
                setattr(self, name, type(value)(0))
        return {k: v for k, v in out.items() if v}


class LlmClient:
    def __init__(self, backend: Backend, cache: LlmCache | None = None, limiter: RateLimiter | None = None,
                 concurrency: int = 4, retry: RetryPolicy = LLM_RETRY, mode: str = "live",
                 seed: int | None = None, failed_keys: dict[str, str] | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.backend, self.cache, self.mode = backend, cache, mode
        self.limiter = limiter or RateLimiter()
        self.in_flight = InFlight(concurrency)
        self.retry = retry
        self.stats = LlmStats()
        self.recorded: list[LlmRequest] = []  # dry_run: every request, in order
        self.failed_keys = failed_keys or {}  # submit: key -> why its batch answer failed
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    def ask(self, request: LlmRequest) -> BaseModel:
        """The validated answer; raises LlmFailed, LlmInvalid or LlmDeferred."""
        raw = self.answer(request)
        try:
            return parse(raw.text, request.schema)
        except ValueError as first:
            self.stats.add(invalid_answers=1)
            retry = request.corrected(raw.text, str(first))
            raw = self.answer(retry)
            try:
                return parse(raw.text, request.schema)
            except ValueError as second:
                self.stats.add(invalid_answers=1)
                raise LlmInvalid(f"{request.template.id}: {second}") from None

    def answer(self, request: LlmRequest) -> RawAnswer:
        """The raw answer, from the cache or the provider (stored on the way back)."""
        key = request.key(self.backend.name, self.backend.model)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.add(cache_hits=1)
                return cached
        self.stats.add(cache_misses=1)
        if self.mode == "submit":
            if key in self.failed_keys:
                self.stats.add(failed=1)
                raise LlmFailed(f"{request.template.id}: batch answer failed: {self.failed_keys[key]}")
            self.stats.add(deferred=1)
            raise LlmDeferred([request])
        if self.mode == "dry_run":
            self.recorded.append(request)
            return RawAnswer(text=placeholder(request.schema), usage=Usage())
        raw = self.call(request)
        if self.cache is not None:
            self.cache.put(key, self.backend.name, self.backend.model, request.template, raw)
        return raw

    def call(self, request: LlmRequest) -> RawAnswer:
        estimate = request.estimated_input_tokens(self.backend.name) + request.max_output_tokens // 4
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                with self.in_flight:
                    # The rate slot is taken once a call may start, so calls that queued
                    # for a free slot still start spaced out, never back to back.
                    waited = self.limiter.acquire(estimate)
                    self.stats.add(calls=1, wait_s=waited)
                    raw = self.backend.generate(request)
            except TransientError as exc:
                if attempt == self.retry.max_attempts:
                    self.stats.add(failed=1)
                    raise LlmFailed(f"{request.template.id}: gave up after {attempt} attempts: {exc}") from None
                with self._rng_lock:
                    delay = self.retry.delay(attempt, exc.retry_after, self._rng)
                log.info("%s: %s; retrying in %.2f s", self.backend.name, exc, delay)
                self.stats.add(retries=1)
                time.sleep(delay)
                continue
            except PermanentError as exc:
                self.stats.add(failed=1)
                raise LlmFailed(f"{request.template.id}: {exc}") from None
            self.limiter.settle(estimate, raw.usage.input_tokens + raw.usage.output_tokens)
            self.stats.add(input_tokens=raw.usage.input_tokens, output_tokens=raw.usage.output_tokens)
            return raw
        raise AssertionError("unreachable")


def parse(text: str, schema: type[BaseModel]) -> BaseModel:
    """The answer as `schema`; ValueError (with what is wrong) when it is not."""
    body = strip_fences(text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"does not match the schema: {problems}") from None


def placeholder(schema: type[BaseModel]) -> str:
    """A schema-valid stand-in answer for dry runs (marked as such in every text field)."""
    values = {}
    for name, info in schema.model_fields.items():
        values[name] = 5 if info.annotation is int else "[dry run: no model was called]"
    return json.dumps(values)

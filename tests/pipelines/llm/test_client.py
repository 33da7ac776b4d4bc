"""LlmClient over the real OpenAI and Gemini SDKs against the local server: parsing,
retries, invalid answers and their correction, stats, the cache, submit and dry-run modes."""

from __future__ import annotations

import email.utils
import io
import json
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("openai")
pytest.importorskip("google.genai")

from build_tools.fakes.llm_server import (
    DEFAULT_SENTENCE,
    MALFORMED_ANSWER,
    Fault,
    LlmCall,
    LocalLlmServer,
    default_responder,
)
from pipelines.llm import client as client_module
from pipelines.llm.backends import BackendConfig, GeminiBackend, OpenAIBackend
from pipelines.llm.cache import LlmCache
from pipelines.llm.client import (
    LlmClient,
    LlmDeferred,
    LlmFailed,
    LlmInvalid,
    parse,
    placeholder,
)
from pipelines.llm.request import ImagePart, LlmRequest
from pipelines.retry import RetryPolicy
from schemas.common import TemplateRef
from schemas.llm import Explanation, Rating

TEMPLATE = TemplateRef(id="test_template@v1", version="0123456789ab")
FAST = RetryPolicy(max_attempts=3, backoff_base_s=0.001, backoff_max_s=0.01)
PROVIDERS = ["openai", "gemini"]


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (30, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def _backend(server: LocalLlmServer, provider: str):
    if provider == "openai":
        return OpenAIBackend(BackendConfig("openai-compatible", "m", base_url=server.openai_base_url, timeout_s=20))
    return GeminiBackend(BackendConfig("gemini", "gemini-2.5-flash", base_url=server.url, timeout_s=20))


@pytest.fixture(scope="module")
def _shared():
    """One server and one backend per provider for the module (the SDK clients take a while
    to build); each test gets the server back with no faults and no calls."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-client-test-key")
        mp.setenv("GEMINI_API_KEY", "gemini-client-test-key")
        mp.delenv("GOOGLE_API_KEY", raising=False)
        with LocalLlmServer() as server:
            yield server, {provider: _backend(server, provider) for provider in PROVIDERS}


@pytest.fixture
def server(_shared) -> LocalLlmServer:
    server, _ = _shared
    server.faults, server.responder, server.latency_s = None, default_responder, 0.0
    server.reset()
    yield server
    server.faults, server.responder = None, default_responder


@pytest.fixture
def client_for(_shared):
    _, backends = _shared

    def make(provider: str, **kwargs) -> LlmClient:
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("seed", 0)
        return LlmClient(backends[provider], **kwargs)

    return make


def _request(user: str = "Explain the nose.", schema=Explanation, images: int = 0) -> LlmRequest:
    return LlmRequest(template=TEMPLATE, system="You are a forensic analyst.", user=user, schema=schema,
                      images=tuple(ImagePart(PNG) for _ in range(images)))


def _first_time(predicate):
    """A faults callable: `predicate(call)` decides the fault of the first matching call only."""
    lock, done = threading.Lock(), []

    def faults(call: LlmCall):
        fault = predicate(call)
        with lock:
            if fault is None or done:
                return None
            done.append(call.index)
            return fault

    return faults

# --------------------------------------------------------------------------------------------
# Valid answers


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("schema", [Explanation, Rating])
def test_valid_answer_parses_into_the_schema(server, client_for, provider, schema):
    client = client_for(provider)
    answer = client.ask(_request(schema=schema, images=2))
    assert isinstance(answer, schema)
    if schema is Explanation:
        assert answer.explanation == DEFAULT_SENTENCE
    else:
        assert (answer.label_accuracy, answer.overall, answer.reason) == (8, 8, DEFAULT_SENTENCE)
    [call] = server.generation_calls()
    assert call.status == 200 and call.images == 2
    assert call.text == "You are a forensic analyst.\nExplain the nose."
    assert set(call.schema["properties"]) == set(schema.model_fields)
    stats = client.stats
    assert (stats.calls, stats.cache_misses, stats.cache_hits, stats.retries, stats.failed) == (1, 1, 0, 0, 0)
    assert (stats.input_tokens, stats.output_tokens) == (call.prompt_tokens, call.completion_tokens)
    assert stats.input_tokens > 2 * 258  # the images were counted by the server


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "\n  ```json\n{}\n```  \n"])
def test_markdown_fenced_json_parses(server, client_for, provider, fence):
    body = json.dumps({"explanation": "Fenced but fine."})
    server.responder = lambda call: fence.replace("{}", body)
    client = client_for(provider)
    assert client.ask(_request()) == Explanation(explanation="Fenced but fine.")
    assert client.stats.invalid_answers == 0 and len(server.generation_calls()) == 1


# --------------------------------------------------------------------------------------------
# Retries


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_is_retried_after_that_long(server, client_for, provider):
    retry_after = 0.3
    server.faults = _first_time(lambda call: Fault.status(429, retry_after=retry_after))
    client = client_for(provider)
    assert client.ask(_request()).explanation == DEFAULT_SENTENCE
    first, second = server.generation_calls()
    assert (first.status, second.status) == (429, 200)
    # FAST's own backoff is at most 10 ms, so this gap is the Retry-After being honoured.
    # (`finished` is stamped just after the server wrote the response: 5 ms of slack.)
    assert second.started - first.finished >= retry_after - 0.005
    assert (client.stats.calls, client.stats.retries, client.stats.failed) == (2, 1, 0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_an_http_date_retry_after_waits_until_that_date(server, client_for, provider, monkeypatch):
    # The client's sleeps are recorded, not slept: the date is 100 s away.
    slept: list[float] = []
    monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=slept.append))
    when = email.utils.formatdate(int(time.time()) + 100, usegmt=True)  # an IMF-fixdate
    server.faults = _first_time(lambda call: Fault.status(429, retry_after=when))
    client = client_for(provider)
    assert client.ask(_request()).explanation == DEFAULT_SENTENCE
    assert [c.status for c in server.generation_calls()] == [429, 200]
    # About 100 s until the date (less the part of a second already gone), plus up to 10 %
    # jitter; a date read as "no Retry-After" would have been FAST's backoff, at most 10 ms.
    [delay] = slept
    assert 98.0 <= delay <= 110.0


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("code", [500, 503])
def test_server_error_forever_fails_after_max_attempts(server, client_for, provider, code, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    server.faults = lambda call: Fault.status(code)
    client = client_for(provider, cache=cache, retry=RetryPolicy(4, 0.001, 0.01))
    with pytest.raises(LlmFailed, match="gave up after 4 attempts"):
        client.ask(_request())
    assert [c.status for c in server.generation_calls()] == [code] * 4
    assert (client.stats.calls, client.stats.retries, client.stats.failed) == (4, 3, 1)
    assert len(cache) == 0  # failures are not stored: a re-run tries again


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("code", [400, 404])
def test_client_error_is_permanent(server, client_for, provider, code):
    server.faults = lambda call: Fault.status(code)
    client = client_for(provider)
    with pytest.raises(LlmFailed, match=f"HTTP {code}"):
        client.ask(_request())
    assert [c.status for c in server.generation_calls()] == [code]
    assert (client.stats.calls, client.stats.retries, client.stats.failed) == (1, 0, 1)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_disconnect_is_retried(server, client_for, provider):
    server.faults = _first_time(lambda call: Fault.disconnect())
    client = client_for(provider)
    assert client.ask(_request()).explanation == DEFAULT_SENTENCE
    assert [c.status for c in server.generation_calls()] == [0, 200]
    assert (client.stats.calls, client.stats.retries, client.stats.failed) == (2, 1, 0)


# --------------------------------------------------------------------------------------------
# Invalid answers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_twice_raises_invalid_and_the_retry_carries_the_correction(server, client_for, provider):
    server.faults = lambda call: Fault.malformed()
    client = client_for(provider)
    with pytest.raises(LlmInvalid, match="test_template@v1"):
        client.ask(_request())
    first, second = server.generation_calls()
    with pytest.raises(ValueError) as info:
        parse(MALFORMED_ANSWER, Explanation)
    error = str(info.value)
    assert "not valid JSON" in error
    assert MALFORMED_ANSWER not in first.text and error not in first.text
    assert MALFORMED_ANSWER in second.text and error in second.text
    assert second.text.startswith(first.text)  # the same conversation, continued
    assert (client.stats.calls, client.stats.invalid_answers, client.stats.retries) == (2, 2, 0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_schema_violation_once_then_corrected(server, client_for, provider):
    bad = {"explanation": ""}
    server.faults = _first_time(lambda call: Fault.invalid(bad))
    client = client_for(provider)
    assert client.ask(_request()).explanation == DEFAULT_SENTENCE
    first, second = server.generation_calls()
    assert json.dumps(bad) in second.text and "does not match the schema: explanation:" in second.text
    assert client.stats.invalid_answers == 1 and client.stats.calls == 2
    assert client.stats.input_tokens == first.prompt_tokens + second.prompt_tokens
    assert client.stats.output_tokens == first.completion_tokens + second.completion_tokens


# --------------------------------------------------------------------------------------------
# Stats


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stats_add_up(server, client_for, provider, tmp_path):
    invalid_once = _first_time(lambda call: Fault.invalid({"explanation": ""}) if "delta" in call.text else None)
    rate_once = _first_time(lambda call: Fault.status(429, retry_after=0.01) if "beta" in call.text else None)

    def faults(call: LlmCall):
        if "gamma" in call.text:
            return Fault.status(502)
        return rate_once(call) or invalid_once(call)

    server.faults = faults
    client = client_for(provider, cache=LlmCache(str(tmp_path / "cache")), retry=RetryPolicy(2, 0.001, 0.01))
    for word in ("alpha", "beta", "delta", "alpha"):
        assert client.ask(_request(f"Explain {word}.")).explanation == DEFAULT_SENTENCE
    with pytest.raises(LlmFailed):
        client.ask(_request("Explain gamma."))
    calls = server.generation_calls()

    ok = [c for c in calls if c.status == 200]
    stats = client.stats
    assert stats.calls == len(calls) == 7  # alpha, beta x2, delta + correction, gamma x2
    assert stats.retries + stats.failed == len(calls) - len(ok) == 3
    assert (stats.retries, stats.failed, stats.invalid_answers) == (2, 1, 1)
    assert (stats.cache_hits, stats.cache_misses) == (1, 5)  # the second alpha; alpha beta delta delta' gamma
    assert stats.input_tokens == sum(c.prompt_tokens for c in ok)
    assert stats.output_tokens == sum(c.completion_tokens for c in ok)
    input_tokens = stats.input_tokens
    drained = client.stats.drain()
    assert drained["calls"] == 7 and drained["input_tokens"] == input_tokens > 0
    assert "cache_hits" in drained and "deferred" not in drained  # zeros are left out
    assert client.stats.drain() == {}  # draining zeroes the counters


# --------------------------------------------------------------------------------------------
# The cache


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cache_answers_the_second_ask(server, client_for, provider, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    client = client_for(provider, cache=cache)
    first = client.ask(_request(images=1))
    assert client.ask(_request(images=1)) == first
    assert len(server.generation_calls()) == 1
    assert (client.stats.cache_hits, client.stats.cache_misses, client.stats.calls) == (1, 1, 1)
    # Another client (another worker, a re-run) on the same cache makes no call either, and
    # the cached answer's tokens are not counted again.
    other = client_for(provider, cache=cache)
    assert other.ask(_request(images=1)) == first
    assert len(server.generation_calls()) == 1
    assert (other.stats.calls, other.stats.input_tokens, other.stats.output_tokens) == (0, 0, 0)
    assert len(cache) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_then_corrected_is_served_wholly_from_the_cache(server, client_for, provider, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    server.faults = _first_time(lambda call: Fault.invalid({"explanation": ""}))
    assert client_for(provider, cache=cache).ask(_request()).explanation == DEFAULT_SENTENCE
    assert len(server.generation_calls()) == 2 and len(cache) == 2  # the invalid answer is stored too
    server.reset()
    again = client_for(provider, cache=cache)
    assert again.ask(_request()).explanation == DEFAULT_SENTENCE
    assert server.generation_calls() == []
    assert (again.stats.calls, again.stats.cache_hits, again.stats.cache_misses) == (0, 2, 0)
    assert again.stats.invalid_answers == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_twice_is_also_replayed_from_the_cache(server, client_for, provider, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    server.faults = lambda call: Fault.malformed()
    with pytest.raises(LlmInvalid):
        client_for(provider, cache=cache).ask(_request())
    server.reset()
    again = client_for(provider, cache=cache)
    with pytest.raises(LlmInvalid):
        again.ask(_request())
    assert server.generation_calls() == [] and again.stats.cache_hits == 2


# --------------------------------------------------------------------------------------------
# Submit and dry-run modes


@pytest.mark.parametrize("provider", PROVIDERS)
def test_submit_defers_a_miss_and_answers_a_hit(server, client_for, provider, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    request = _request()
    submit = client_for(provider, cache=cache, mode="submit")
    with pytest.raises(LlmDeferred) as info:
        submit.ask(request)
    assert info.value.requests == [request]
    assert server.generation_calls() == []
    assert (submit.stats.deferred, submit.stats.cache_misses, submit.stats.calls) == (1, 1, 0)

    client_for(provider, cache=cache).ask(request)  # the answer lands in the cache
    server.reset()
    assert submit.ask(request).explanation == DEFAULT_SENTENCE
    assert server.generation_calls() == [] and submit.stats.cache_hits == 1

    # A request whose batch answer failed for good fails instead of being deferred again.
    other = _request("Explain the chin.")
    backend = submit.backend
    failing = client_for(provider, cache=cache, mode="submit",
                         failed_keys={other.key(backend.name, backend.model): "HTTP 500: boom"})
    with pytest.raises(LlmFailed, match="boom"):
        failing.ask(other)
    assert server.generation_calls() == [] and failing.stats.failed == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("schema", [Explanation, Rating])
def test_dry_run_records_and_answers_a_placeholder_without_a_call(server, client_for, provider, schema, tmp_path):
    cache = LlmCache(str(tmp_path / "cache"))
    requests = [_request("Explain the eyes.", schema, images=1), _request("Explain the lips.", schema)]
    client = client_for(provider, cache=cache, mode="dry_run")
    answers = [client.ask(r) for r in requests]
    assert server.generation_calls() == []
    assert all(isinstance(a, schema) for a in answers)
    assert answers[0] == schema.model_validate_json(placeholder(schema))
    assert client.recorded == requests
    assert client.stats.calls == 0 and client.stats.cache_misses == 2
    assert len(cache) == 0  # placeholders never reach the cache


def test_unknown_mode_is_refused(client_for):
    with pytest.raises(ValueError, match="unknown mode"):
        client_for("openai", mode="batch")

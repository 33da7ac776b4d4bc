"""Batch mode against the local OpenAI / Gemini server, driven by the real SDKs."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import pytest

pytest.importorskip("openai")
pytest.importorskip("google.genai")

from build_tools.fakes.llm_server import DEFAULT_SENTENCE, Fault, LlmCall, LocalLlmServer
from pipelines.llm import batch
from pipelines.llm.backends import BackendConfig, GeminiBackend, OpenAIBackend, make_backend
from pipelines.llm.batch import BatchError, BatchState, collect, failed_path, submit
from pipelines.llm.cache import LlmCache
from pipelines.llm.client import LlmClient, LlmDeferred, LlmFailed
from pipelines.llm.config import LlmConfig
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.common import TemplateRef
from schemas.llm import Explanation

MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash"}


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
TEMPLATE = TemplateRef(id="explain_concept", version="v1")


def _requests(n: int = 4) -> list[LlmRequest]:
    return [LlmRequest(template=TEMPLATE, system="You are a forensic analyst.", user=f"Explain concept {i}.",
                       schema=Explanation, images=(ImagePart(PNG),) if i % 2 == 0 else ())
            for i in range(n)]


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batch-test")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-batch-test")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def _config(server: LocalLlmServer, backend: str, cache: str, **extra) -> LlmConfig:
    base_url = server.openai_base_url if backend == "openai" else server.url
    return LlmConfig(backend=backend, model=MODELS[backend], cache=cache, base_url=base_url, max_attempts=1,
                     **extra)


def _write_lines(config: LlmConfig, requests: list[LlmRequest], path) -> list[str]:
    backend = make_backend(config.backend_config())
    keys = [r.key(backend.name, backend.model) for r in requests]
    path.write_text("".join(json.dumps(backend.batch_line(r, k)) + "\n" for r, k in zip(requests, keys, strict=True)))
    return keys


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_submit_collect_then_live_run_makes_no_call(tmp_path, provider):
    requests = _requests(4)
    failing = "Explain concept 3."

    def faults(call: LlmCall):
        return Fault.status(500) if failing in call.text else None

    with LocalLlmServer(faults=faults, batch_polls_until_done=1) as server:
        config = _config(server, provider, str(tmp_path / "cache"))
        lines = tmp_path / "requests.jsonl"
        keys = _write_lines(config, requests, lines)
        # A duplicate line is sent once.
        lines.write_text(lines.read_text() + lines.read_text().splitlines()[0] + "\n")
        state_path = str(tmp_path / "batch" / "state.json")

        state = submit(config, [str(lines)], state_path, max_requests_per_job=3)
        assert [job.requests for job in state.jobs] == [3, 1] and state.rounds == 1
        assert [k for job in state.jobs for k in job.keys] == keys
        assert not state.done and len(state.pending_jobs) == 2
        batch_lines = server.generation_calls()
        assert sorted(c.key for c in batch_lines) == sorted(keys)
        assert {c.kind for c in batch_lines} == {"batch"}
        assert [c.images for c in batch_lines] == [1, 0, 1, 0]
        saved = (tmp_path / "batch" / "state.json").read_text()
        assert "sk-batch-test" not in saved and "gemini-batch-test" not in saved

        cache = LlmCache(config.cache)
        first = collect(config, state_path, cache)
        assert len(cache) == 0 and not first.done and first.answers == 0
        second = collect(config, state_path, cache)
        assert second.done and second.answers == 3 and len(cache) == 3
        bad = keys[3]
        assert list(second.failed) == [bad] and "500" in second.failed[bad]
        assert json.loads((tmp_path / "batch" / "state.failed.json").read_text()) == second.failed
        assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0
        assert second.usage.input_tokens == sum(c.prompt_tokens for c in batch_lines if c.status == 200)
        assert second.cost() is not None and second.cost() > 0
        assert "2/2 jobs done, 3 answers stored, 1 failed" in second.summary()
        reloaded = batch.load_state(state_path)
        assert reloaded.done and reloaded.failed == second.failed
        assert reloaded.report() == {
            "backend": provider, "model": MODELS[provider], "rounds": 1, "jobs": 2, "jobs_done": 2, "requests": 4,
            "answers": 3, "failed": 1, "input_tokens": second.usage.input_tokens,
            "output_tokens": second.usage.output_tokens}
        # Stored jobs' files were deleted from the provider.
        deletes = [c.path for c in server.calls if c.kind == "manage" and c.method == "DELETE"]
        assert len(deletes) == 4  # two input files, two output files

        server.reset()
        live = LlmClient(make_backend(config.backend_config()), cache=cache, mode="live")
        for request in requests[:3]:
            assert live.ask(request).explanation == DEFAULT_SENTENCE
        assert live.stats.cache_hits == 3 and live.stats.calls == 0

        # Submit mode: the failed request fails for good instead of being deferred again; a new one defers.
        runner = replace(config, mode="submit", failed_keys=failed_path(state_path)).client()
        assert runner.ask(requests[0]).explanation == DEFAULT_SENTENCE
        with pytest.raises(LlmFailed, match="batch answer failed"):
            runner.ask(requests[3])
        new = LlmRequest(template=TEMPLATE, system="s", user="a new question", schema=Explanation)
        with pytest.raises(LlmDeferred):
            runner.ask(new)
        assert server.generation_calls() == []

        # Submitting the same files again sends nothing: answered keys are cached, failed ones recorded.
        again = submit(config, [str(lines)], state_path)
        assert len(again.jobs) == 2 and again.rounds == 1 and server.generation_calls() == []
        # Unless asked to retry the failed ones (the fault persists here: it fails again).
        retried = submit(config, [str(lines)], state_path, retry_failed=True)
        assert [job.keys for job in retried.jobs[2:]] == [[bad]] and retried.rounds == 2
        assert bad not in retried.failed
        final = collect(config, state_path, cache)
        final = collect(config, state_path, cache)
        assert final.done and list(final.failed) == [bad] and final.answers == 3


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_lost_lines_and_error_file(tmp_path, provider):
    requests = _requests(3)

    def faults(call: LlmCall):
        if "concept 1." in call.text:
            return Fault.disconnect()  # the line is missing from the output
        return Fault.status(429) if "concept 2." in call.text else None

    with LocalLlmServer(faults=faults, batch_polls_until_done=0, openai_error_file=True) as server:
        config = _config(server, provider, str(tmp_path / "cache"))
        lines = tmp_path / "r.jsonl"
        keys = _write_lines(config, requests, lines)
        state_path = str(tmp_path / "state.json")
        submit(config, [str(tmp_path / "*.jsonl")], state_path)
        state = collect(config, state_path, LlmCache(config.cache), cleanup=False)
        assert state.done and state.answers == 1
        assert state.failed[keys[1]] == batch.MISSING
        assert "429" in state.failed[keys[2]] or "RESOURCE_EXHAUSTED" in state.failed[keys[2]]
        assert not any(c.method == "DELETE" for c in server.calls)


def test_gemini_batch_request_is_what_the_sdk_sends(tmp_path):
    """The hand-written REST JSON of a batch line equals the body google-genai sends for the same
    request, up to spellings the API reads either way: the SDK writes `mime_type` and URL-safe
    base64, the batch line the documented `mimeType` and standard base64."""
    def camel(value):
        if isinstance(value, dict):
            out = {("mimeType" if k == "mime_type" else k): camel(v) for k, v in value.items()}
            if "data" in out and "mimeType" in out:
                out["data"] = base64.urlsafe_b64decode(out["data"].replace("+", "-").replace("/", "_"))
            return out
        return [camel(v) for v in value] if isinstance(value, list) else value

    request = _requests(1)[0].corrected("{}", "explanation: field required")
    with LocalLlmServer() as server:
        backend = make_backend(BackendConfig("gemini", MODELS["gemini"], base_url=server.url))
        assert isinstance(backend, GeminiBackend)
        backend.generate(request)
        [call] = server.generation_calls()
        line = backend.batch_line(request, "k")
        assert line["key"] == "k" and camel(call.body) == camel(line["request"])
        assert line["request"]["contents"][0]["parts"][0]["inlineData"]["data"] == base64.b64encode(PNG).decode()


def test_openai_batch_line_and_parse():
    backend = make_backend(BackendConfig("openai", MODELS["openai"]))
    assert isinstance(backend, OpenAIBackend)
    request = _requests(1)[0]
    line = backend.batch_line(request, "k1")
    assert line == {"custom_id": "k1", "method": "POST", "url": "/v1/chat/completions",
                    "body": backend.body(request)}
    ok = {"custom_id": "k1", "error": None, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": '{"explanation": "x"}'}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3}}}}
    key, answer, error = backend.parse_batch_result(ok)
    assert (key, answer.text, answer.usage.input_tokens, answer.usage.output_tokens, error) == (
        "k1", '{"explanation": "x"}', 7, 3, None)
    expired = {"custom_id": "k2", "response": None,
               "error": {"code": "batch_expired", "message": "This request could not be executed before the "
                                                             "completion window expired."}}
    assert backend.parse_batch_result(expired)[1:] == (
        None, "batch_expired: This request could not be executed before the completion window expired.")


def test_gemini_parse_skips_thoughts_and_counts_them():
    backend = make_backend(BackendConfig("gemini", MODELS["gemini"], base_url="http://127.0.0.1:9"))
    line = {"key": "k", "response": {
        "candidates": [{"content": {"parts": [{"text": "thinking...", "thought": True}, {"text": '{"a": '},
                                              {"text": "1}"}]}}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 6}}}
    key, answer, error = backend.parse_batch_result(line)
    assert (key, answer.text, answer.usage.input_tokens, answer.usage.output_tokens, error) == (
        "k", '{"a": 1}', 10, 10, None)
    blocked = {"key": "b", "response": {"promptFeedback": {"blockReason": "SAFETY"}}}
    assert backend.parse_batch_result(blocked)[1].text == ""  # an (invalid) answer, as from generate
    error = {"key": "e", "error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}}
    assert backend.parse_batch_result(error) == ("e", None, "400 INVALID_ARGUMENT: bad request")


def test_vertex_and_mismatched_state_are_refused(tmp_path):
    with pytest.raises(BatchError, match="Vertex AI"):
        submit(LlmConfig(backend="gemini", model="gemini-2.5-flash", cache=None, vertex=True), [], "x.json")
    state_path = tmp_path / "state.json"
    state_path.write_text(BatchState(backend="openai", model="gpt-4o").model_dump_json())
    config = LlmConfig(backend="openai", model="gpt-4o-mini", cache=None, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BatchError, match="gpt-4o, not openai/gpt-4o-mini"):
        collect(config, str(state_path), LlmCache(str(tmp_path / "c")))
    with pytest.raises(BatchError, match="no batch state"):
        collect(config, str(tmp_path / "none.json"), LlmCache(str(tmp_path / "c")))
    assert failed_path("gs://b/run/state.json") == "gs://b/run/state.failed.json"


def test_failed_keys_file_is_optional_and_only_read_in_submit_mode(tmp_path):
    base = {"backend": "openai", "model": "gpt-4o-mini", "cache": None, "base_url": "http://127.0.0.1:9/v1"}
    missing = str(tmp_path / "none.failed.json")
    assert LlmConfig(**base, mode="submit", failed_keys=missing).client().failed_keys == {}
    path = tmp_path / "s.failed.json"
    path.write_text(json.dumps({"abc": "HTTP 500"}))
    assert LlmConfig(**base, mode="submit", failed_keys=str(path)).client().failed_keys == {"abc": "HTTP 500"}
    assert LlmConfig(**base, mode="live", failed_keys=str(path)).client().failed_keys == {}

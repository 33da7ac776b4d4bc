"""Backends build requests without a key; only a call needs one."""

from __future__ import annotations

import pytest

from pipelines.llm.backends import BackendConfig, GeminiBackend, OpenAIBackend, PermanentError, openai_schema
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.common import TemplateRef
from schemas.llm import Explanation, Rating


@pytest.fixture
def request_():
    return LlmRequest(TemplateRef(id="t@v1", version="abc"), "system", "user", Explanation,
                      (ImagePart(b"\x89PNG fake bytes"),))


@pytest.mark.parametrize(("cls", "backend", "variable"), [
    (OpenAIBackend, "openai", "OPENAI_API_KEY"), (GeminiBackend, "gemini", "GEMINI_API_KEY")])
def test_batch_lines_need_no_key_but_calls_do(cls, backend, variable, request_, monkeypatch):
    for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    b = cls(BackendConfig(backend, "some-model"))  # what a batch-submit worker builds
    line = b.batch_line(request_, "k" * 64)
    assert "k" * 64 in str(line)
    with pytest.raises(PermanentError, match=variable):
        b.generate(request_)


def test_openai_schema_keeps_structure_and_drops_what_strict_mode_refuses():
    schema = openai_schema(Rating.model_json_schema())
    assert schema["required"] == ["label_accuracy", "image_consistency", "evidence_consistency", "overall",
                                  "reason"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["overall"] == {"description": Rating.model_fields["overall"].description,
                                               "maximum": 10, "minimum": 1, "type": "integer"}
    assert "title" not in schema and "minLength" not in openai_schema(Explanation.model_json_schema())[
        "properties"]["explanation"]


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_a_key_echoed_in_an_error_never_reaches_the_rejected_detail(backend, request_, monkeypatch, caplog):
    from build_tools.fakes.llm_server import Fault, LocalLlmServer
    from pipelines.llm.client import LlmClient, LlmFailed
    from pipelines.retry import RetryPolicy

    key = "sk-proj-" + "Zx9" * 12 if backend == "openai" else "AIzaSy" + "Q7w" * 11
    monkeypatch.setenv("OPENAI_API_KEY" if backend == "openai" else "GEMINI_API_KEY", key)
    echo = f"Incorrect API key provided: {key}. Also masked: sk-proj-****{key[-4:]}"
    with LocalLlmServer(faults=lambda call: Fault.status(401, message=echo)) as server:
        url = server.openai_base_url if backend == "openai" else server.url
        cls = OpenAIBackend if backend == "openai" else GeminiBackend
        client = LlmClient(cls(BackendConfig(backend, "m", base_url=url)), retry=RetryPolicy(max_attempts=2))
        with caplog.at_level("DEBUG"), pytest.raises(LlmFailed) as info:
            client.ask(request_)
        assert server.api_keys_seen == {key}
    detail = str(info.value)
    assert "HTTP 401" in detail and "[redacted]" in detail
    assert key not in detail and key[-12:] not in detail
    assert key not in caplog.text

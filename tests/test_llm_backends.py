"""Backends build requests without a key; only a call needs one."""

from __future__ import annotations

import pytest

from pipelines.llm.backends import BackendConfig, GeminiBackend, OpenAIBackend, PermanentError, openai_schema
from pipelines.llm.request import ImagePart, LlmRequest
from schemas.fifa import TemplateRef
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

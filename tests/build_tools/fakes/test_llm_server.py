"""The local OpenAI / Gemini server, driven by the real SDK clients."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

openai = pytest.importorskip("openai")
genai = pytest.importorskip("google.genai")
httpx2 = pytest.importorskip("httpx2")
from google.genai import errors as genai_errors
from google.genai import types

from build_tools.fakes.llm_server import (
    DEFAULT_SENTENCE,
    MALFORMED_ANSWER,
    Fault,
    LlmCall,
    LocalLlmServer,
    schema_instance,
)

OPENAI_KEY = "sk-local-test-0001"
GEMINI_KEY = "gemini-local-test-0002"
MODEL_OPENAI = "gpt-4o-mini"
MODEL_GEMINI = "gemini-2.5-flash"


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(min_length=1)
    severity: int = Field(ge=1, le=5)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    explanation: str = Field(min_length=1)
    score: int = Field(ge=1, le=10)
    confidence: float = Field(ge=0, le=1)
    fake: bool
    findings: list[Finding]
    note: str | None = None


# The JSON schema as a strict OpenAI client sends it: $defs/$ref, anyOf with null, every field required.
ANSWER_SCHEMA = Answer.model_json_schema()
ANSWER_SCHEMA["required"] = list(ANSWER_SCHEMA["properties"])


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def _openai(server: LocalLlmServer):
    return openai.OpenAI(base_url=server.openai_base_url, api_key=OPENAI_KEY, max_retries=0, timeout=10)


def _gemini(server: LocalLlmServer):
    return genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1), timeout=10_000))


def _openai_messages(text: str = "Explain the fake.", image: bool = True) -> list[dict]:
    content: list[dict] = [{"type": "text", "text": text}]
    if image:
        import base64

        url = "data:image/png;base64," + base64.b64encode(PNG).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "system", "content": "You are a forensic analyst."}, {"role": "user", "content": content}]


def _openai_format() -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}


def _gemini_config(**extra) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=ANSWER_SCHEMA,
                                       system_instruction="You are a forensic analyst.", temperature=0, **extra)


def _wait_batch(get, done, limit: int = 10):
    states = []
    for _ in range(limit):
        job = get()
        states.append(job)
        if done(job):
            return job, states
    raise AssertionError("batch never finished")


# ------------------------------------------------------------------------------------------
# Default answers


def test_schema_instance_fills_every_field_within_bounds():
    value = schema_instance(ANSWER_SCHEMA)
    answer = Answer.model_validate(value)
    assert answer.score == 8 and answer.confidence == 1.0 and answer.fake is True
    assert answer.explanation == DEFAULT_SENTENCE
    assert len(answer.findings) == 1 and answer.findings[0].severity == 5  # 8 clamped to le=5
    assert answer.note == DEFAULT_SENTENCE  # anyOf: the first non-null branch
    gemini_schema = {"type": "OBJECT", "properties": {
        "kind": {"type": "STRING", "enum": ["splice", "swap"]},
        "n": {"type": "INTEGER", "minimum": 10},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": "2"},
    }}
    assert schema_instance(gemini_schema) == {"kind": "splice", "n": 10,
                                              "tags": [DEFAULT_SENTENCE, DEFAULT_SENTENCE]}
    assert schema_instance({"type": "string", "maxLength": 7}) == DEFAULT_SENTENCE[:7]


# ------------------------------------------------------------------------------------------
# Direct calls


def test_openai_structured_output_with_image():
    with LocalLlmServer() as server:
        client = _openai(server)
        response = client.chat.completions.create(model=MODEL_OPENAI, messages=_openai_messages(),
                                                  response_format=_openai_format(), temperature=0)
        choice = response.choices[0]
        assert choice.finish_reason == "stop"
        answer = Answer.model_validate_json(choice.message.content)
        assert answer.explanation == DEFAULT_SENTENCE

        [call] = server.generation_calls()
        assert (call.protocol, call.model, call.images, call.attempt, call.index) == (
            "openai", MODEL_OPENAI, 1, 0, 0)
        assert call.text == "You are a forensic analyst.\nExplain the fake."
        assert call.schema == ANSWER_SCHEMA
        assert call.status == 200 and call.finished >= call.started
        usage = response.usage
        assert usage.prompt_tokens == len(call.text) // 4 + 258
        assert usage.completion_tokens == len(choice.message.content) // 4 + 1
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert server.api_keys_seen == {OPENAI_KEY}
        assert OPENAI_KEY not in repr(call)

        # The same body again is attempt 1; the SDK's parse() helper validates the answer too.
        client.chat.completions.create(model=MODEL_OPENAI, messages=_openai_messages(),
                                       response_format=_openai_format(), temperature=0)
        parsed = client.chat.completions.parse(model=MODEL_OPENAI, messages=_openai_messages(image=False),
                                               response_format=Answer)
        assert isinstance(parsed.choices[0].message.parsed, Answer)
        assert [c.attempt for c in server.generation_calls()] == [0, 1, 0]
        assert [c.index for c in server.generation_calls()] == [0, 1, 2]


def test_images_of_a_type_the_provider_does_not_take_or_not_what_they_say_are_refused():
    import base64

    def message(media_type: str, data: bytes) -> list[dict]:
        url = f"data:{media_type};base64," + base64.b64encode(data).decode()
        return [{"role": "user", "content": [{"type": "text", "text": "Explain."},
                                             {"type": "image_url", "image_url": {"url": url}}]}]

    with LocalLlmServer() as server:
        client = _openai(server)
        for media_type, data, said in (("image/tiff", PNG, "Unsupported media type 'image/tiff'"),
                                       ("image/jpeg", PNG, "the data is not image/jpeg")):
            with pytest.raises(openai.BadRequestError, match=said):
                client.chat.completions.create(model=MODEL_OPENAI, messages=message(media_type, data))
        client.chat.completions.create(model=MODEL_OPENAI, messages=message("image/png", PNG))
        assert [c.media_types for c in server.generation_calls()] == [("image/png",)]
        gemini = _gemini(server)
        with pytest.raises(genai_errors.ClientError, match="the data is not image/webp"):
            gemini.models.generate_content(
                model=MODEL_GEMINI, contents=[types.Part.from_bytes(data=PNG, mime_type="image/webp"), "Explain."])


def test_gemini_structured_output_with_image():
    with LocalLlmServer() as server:
        client = _gemini(server)
        response = client.models.generate_content(
            model=MODEL_GEMINI,
            contents=[types.Part.from_bytes(data=PNG, mime_type="image/png"), "Explain the fake."],
            config=_gemini_config())
        answer = Answer.model_validate_json(response.text)
        assert answer.score == 8
        assert response.parsed == json.loads(response.text)
        assert response.candidates[0].finish_reason == types.FinishReason.STOP
        assert response.model_version == MODEL_GEMINI

        [call] = server.generation_calls()
        assert (call.protocol, call.model, call.images, call.media_types) == ("gemini", MODEL_GEMINI, 1,
                                                                              ("image/png",))
        assert call.text == "You are a forensic analyst.\nExplain the fake."
        # google-genai sends response_json_schema as generationConfig.responseJsonSchema, unchanged.
        assert call.body["generationConfig"]["responseJsonSchema"] == ANSWER_SCHEMA
        assert call.schema == ANSWER_SCHEMA
        usage = response.usage_metadata
        assert usage.prompt_token_count == len(call.text) // 4 + 258
        assert usage.candidates_token_count == len(response.text) // 4 + 1
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
        assert server.api_keys_seen == {GEMINI_KEY}


def test_gemini_response_schema_and_custom_responder():
    seen: list[LlmCall] = []

    def responder(call: LlmCall):
        seen.append(call)
        return {"kind": "custom", "n": call.index}

    with LocalLlmServer(responder) as server:
        client = _gemini(server)  # keep a reference: a collected genai.Client closes its httpx client
        response = client.models.generate_content(
            model=MODEL_GEMINI, contents="hi",
            config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Finding))
        assert json.loads(response.text) == {"kind": "custom", "n": 0}
        # A pydantic class as response_schema travels as responseSchema (Gemini's OpenAPI subset).
        assert "responseSchema" in seen[0].body["generationConfig"]
        assert set(seen[0].schema["properties"]) == {"region", "severity"}


def test_rate_limit_with_retry_after_then_success():
    def faults(call: LlmCall):
        return Fault.status(429, retry_after=0.25) if call.attempt == 0 else None

    with LocalLlmServer(faults=faults) as server:
        client = _openai(server)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model=MODEL_OPENAI, messages=_openai_messages())
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "0.25"
        assert info.value.body["code"] == "rate_limit_exceeded"
        retry = client.chat.completions.create(model=MODEL_OPENAI, messages=_openai_messages())
        assert retry.choices[0].message.content == DEFAULT_SENTENCE

        gclient = _gemini(server)
        with pytest.raises(genai_errors.ClientError) as ginfo:
            gclient.models.generate_content(model=MODEL_GEMINI, contents="hello")
        assert ginfo.value.code == 429 and ginfo.value.status == "RESOURCE_EXHAUSTED"
        assert ginfo.value.response.headers["retry-after"] == "0.25"
        assert gclient.models.generate_content(model=MODEL_GEMINI, contents="hello").text == DEFAULT_SENTENCE

        assert [(c.protocol, c.attempt, c.status) for c in server.generation_calls()] == [
            ("openai", 0, 429), ("openai", 1, 200), ("gemini", 0, 429), ("gemini", 1, 200)]
        assert server.generation_calls()[0].fault == Fault.status(429, retry_after=0.25)


def test_server_error_and_disconnect():
    def faults(call: LlmCall):
        return Fault.status(500) if "boom" in call.text else Fault.disconnect() if "drop" in call.text else None

    with LocalLlmServer(faults=faults) as server:
        client, gclient = _openai(server), _gemini(server)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "boom"}])
        assert info.value.status_code == 500 and info.value.body["type"] == "server_error"
        with pytest.raises(genai_errors.ServerError) as ginfo:
            gclient.models.generate_content(model=MODEL_GEMINI, contents="boom")
        assert ginfo.value.code == 500 and ginfo.value.status == "INTERNAL"

        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "drop"}])
        with pytest.raises((httpx.TransportError, httpx2.TransportError)):  # RemoteProtocolError
            gclient.models.generate_content(model=MODEL_GEMINI, contents="drop")
        # The server keeps serving after dropped connections.
        ok = client.chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "fine"}])
        assert ok.choices[0].message.content == DEFAULT_SENTENCE
        assert [c.status for c in server.generation_calls()] == [500, 500, 0, 0, 200]


def test_malformed_and_invalid_answers():
    bad = {"explanation": "", "score": 42}

    def faults(call: LlmCall):
        return Fault.malformed() if call.index == 0 else Fault.invalid(bad) if call.index == 1 else None

    with LocalLlmServer(faults=faults) as server:
        client = _openai(server)
        first = client.chat.completions.create(model=MODEL_OPENAI, messages=_openai_messages(),
                                               response_format=_openai_format())
        assert first.choices[0].message.content == MALFORMED_ANSWER
        with pytest.raises(ValueError):
            json.loads(first.choices[0].message.content)
        gclient = _gemini(server)
        second = gclient.models.generate_content(model=MODEL_GEMINI, contents="x", config=_gemini_config())
        assert json.loads(second.text) == bad
        with pytest.raises(ValueError):
            Answer.model_validate_json(second.text)
        assert [c.status for c in server.generation_calls()] == [200, 200]


def test_latency_overlaps_and_delay_fault():
    with LocalLlmServer(latency_s=0.3) as server:
        client = _openai(server)
        results: list[str] = []

        def one(i: int) -> None:
            response = client.chat.completions.create(model=MODEL_OPENAI,
                                                      messages=[{"role": "user", "content": f"q{i}"}])
            results.append(response.choices[0].message.content)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [DEFAULT_SENTENCE] * 4
        assert server.max_in_flight == 4
        calls = server.generation_calls()
        assert all(c.finished - c.started >= 0.3 for c in calls)
        assert max(c.started for c in calls) < min(c.finished for c in calls)  # all four overlapped
        server.reset()
        assert server.calls == [] and server.max_in_flight == 0 and server.api_keys_seen == set()

    with LocalLlmServer(faults=lambda c: Fault.delay(0.2)) as server:
        gclient = _gemini(server)
        gclient.models.generate_content(model=MODEL_GEMINI, contents="slow")
        [call] = server.generation_calls()
        assert call.finished - call.started >= 0.2 and server.max_in_flight == 1


def test_missing_api_key_is_401_and_unknown_route_404():
    with LocalLlmServer() as server:
        client = _openai(server)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"Authorization": ""})
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")
        gclient = _gemini(server)
        with pytest.raises(genai_errors.ClientError) as info:
            gclient.batches.get(name="batches/nope")
        assert info.value.code == 404
        assert server.generation_calls() == []


# ------------------------------------------------------------------------------------------
# Batches


def test_openai_batch_end_to_end(tmp_path):
    def faults(call: LlmCall):
        if call.key == "rate":
            return Fault.status(429, retry_after=1)
        return Fault.disconnect() if call.key == "lost" else None

    with LocalLlmServer(faults=faults, batch_polls_until_done=2) as server:
        client = _openai(server)
        lines = [{"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": MODEL_OPENAI, "messages": _openai_messages(f"pair {key}"),
                           "response_format": _openai_format()}}
                 for key in ("a", "b", "rate", "lost")]
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        uploaded = client.files.create(file=path.open("rb"), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
        assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
        assert client.files.content(uploaded.id).content == path.read_bytes()

        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert batch.status == "validating" and batch.output_file_id is None
        done, seen = _wait_batch(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed")
        assert [b.status for b in seen] == ["in_progress", "in_progress", "completed"]
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 2, 2)

        output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
        by_id = {line["custom_id"]: line for line in output}
        assert set(by_id) == {"a", "b", "rate"}  # "lost" is missing from the output
        for key in ("a", "b"):
            response = by_id[key]["response"]
            assert response["status_code"] == 200 and by_id[key]["error"] is None
            body = response["body"]
            Answer.model_validate_json(body["choices"][0]["message"]["content"])
            assert body["usage"]["prompt_tokens"] == len(f"You are a forensic analyst.\npair {key}") // 4 + 258
        assert by_id["rate"]["response"]["status_code"] == 429
        assert by_id["rate"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"

        batch_calls = server.generation_calls()
        assert [(c.kind, c.key, c.batch, c.images) for c in batch_calls] == [
            ("batch", k, batch.id, 1) for k in ("a", "b", "rate", "lost")]
        assert server.generation_calls(include_batch=False) == []
        assert server.max_in_flight == 0
        assert {c.path for c in server.calls if c.kind == "manage"} >= {
            "/v1/files", f"/v1/batches/{batch.id}", f"/v1/files/{done.output_file_id}/content"}


def test_openai_batch_error_file_option(tmp_path):
    with LocalLlmServer(faults=lambda c: Fault.status(500) if c.key == "x" else None,
                        openai_error_file=True, batch_polls_until_done=0) as server:
        client = _openai(server)
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"custom_id": k, "method": "POST", "url": "/v1/chat/completions",
                                            "body": {"model": MODEL_OPENAI,
                                                     "messages": [{"role": "user", "content": k}]}}) + "\n"
                                for k in ("x", "y")))
        batch = client.batches.create(input_file_id=client.files.create(file=path.open("rb"), purpose="batch").id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed"
        [ok] = client.files.content(done.output_file_id).text.splitlines()
        [err] = client.files.content(done.error_file_id).text.splitlines()
        assert json.loads(ok)["custom_id"] == "y" and json.loads(err)["response"]["status_code"] == 500


def test_gemini_inlined_batch_end_to_end():
    with LocalLlmServer(faults=lambda c: Fault.status(429) if c.key == "k2" else None) as server:
        client = _gemini(server)
        requests = [
            {"contents": [{"role": "user", "parts": [{"inline_data": {"data": PNG, "mime_type": "image/png"}},
                                                     {"text": "first"}]}],
             "config": {"response_mime_type": "application/json", "response_json_schema": ANSWER_SCHEMA,
                        "system_instruction": "You are a forensic analyst."},
             "metadata": {"key": "k1"}},
            {"contents": "second", "metadata": {"key": "k2"}},
        ]
        job = client.batches.create(model=MODEL_GEMINI, src=requests, config={"display_name": "pairs"})
        assert job.name.startswith("batches/") and job.state == types.JobState.JOB_STATE_PENDING
        assert job.display_name == "pairs"
        done, seen = _wait_batch(lambda: client.batches.get(name=job.name),
                                 lambda j: j.state == types.JobState.JOB_STATE_SUCCEEDED)
        assert [j.state for j in seen] == [types.JobState.JOB_STATE_RUNNING, types.JobState.JOB_STATE_SUCCEEDED]
        first, second = done.dest.inlined_responses
        assert first.metadata == {"key": "k1"} and first.error is None
        Answer.model_validate_json(first.response.text)
        assert first.response.usage_metadata.prompt_token_count == len(
            "You are a forensic analyst.\nfirst") // 4 + 258
        assert second.metadata == {"key": "k2"} and second.response is None and second.error.code == 429

        calls = server.generation_calls()
        assert [(c.kind, c.key, c.images, c.model) for c in calls] == [
            ("batch", "k1", 1, MODEL_GEMINI), ("batch", "k2", 0, MODEL_GEMINI)]
        # Inlined requests carry the config as request.generationConfig, system text alongside.
        assert calls[0].body["generationConfig"]["responseJsonSchema"] == ANSWER_SCHEMA
        assert calls[0].body["systemInstruction"]["parts"] == [{"text": "You are a forensic analyst."}]


def test_gemini_file_batch_end_to_end(tmp_path):
    with LocalLlmServer(faults=lambda c: Fault.invalid({"score": 99}) if c.key == "b" else None,
                        batch_polls_until_done=1) as server:
        client = _gemini(server)
        lines = [{"key": key, "request": {
            "contents": [{"role": "user", "parts": [{"text": f"pair {key}"}]}],
            "system_instruction": {"parts": [{"text": "You are a forensic analyst."}]},
            "generation_config": {"response_mime_type": "application/json", "response_json_schema": ANSWER_SCHEMA},
        }} for key in ("a", "b", "c")]
        path = tmp_path / "requests.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        uploaded = client.files.upload(file=str(path), config={"mime_type": "jsonl"})
        assert uploaded.name.startswith("files/") and uploaded.size_bytes == path.stat().st_size
        assert client.files.get(name=uploaded.name).display_name == "requests.jsonl"

        job = client.batches.create(model=MODEL_GEMINI, src=uploaded.name)
        done, _ = _wait_batch(lambda: client.batches.get(name=job.name),
                              lambda j: j.state == types.JobState.JOB_STATE_SUCCEEDED)
        assert done.dest.file_name.startswith("files/") and done.dest.inlined_responses is None
        output = [json.loads(line) for line in client.files.download(file=done.dest.file_name).splitlines()]
        assert [line["key"] for line in output] == ["a", "b", "c"]
        for line in output:
            text = line["response"]["candidates"][0]["content"]["parts"][0]["text"]
            if line["key"] == "b":
                assert json.loads(text) == {"score": 99}
            else:
                Answer.model_validate_json(text)
        calls = server.generation_calls()
        assert [c.text for c in calls] == [f"You are a forensic analyst.\npair {k}" for k in ("a", "b", "c")]
        assert all(c.schema == ANSWER_SCHEMA for c in calls)


def test_quiet_and_restartable(capfd):
    server = LocalLlmServer()
    with server:
        url = server.url
        assert url.startswith("http://127.0.0.1:") and server.openai_base_url == url + "/v1"
        _openai(server).chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "x"}])
    captured = capfd.readouterr()
    assert captured.err == "" and OPENAI_KEY not in captured.out
    with pytest.raises(RuntimeError):
        _ = server.url
    started = time.monotonic()
    with server:
        assert server.url != "" and len(server.calls) == 1
    assert time.monotonic() - started < 2

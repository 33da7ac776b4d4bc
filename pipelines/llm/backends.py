"""Providers behind one small interface: `generate(request) -> RawAnswer`.

Each backend speaks its provider's own SDK (google-genai for Gemini, openai for OpenAI and
any server speaking its chat-completions protocol) with the SDK's retries switched off:
`LlmClient` owns retries, rate limits and the cache, the same way for every provider.
A backend turns its SDK's exceptions into `TransientError` (worth retrying, maybe after
`retry_after` seconds) or `PermanentError` (the same request would fail again); which HTTP
statuses are transient and how `Retry-After` reads are `pipelines.retry`'s to say.

API keys come from the environment only and live in the SDK client object, never in a
request, an answer, an error text we keep, or a cache entry.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

from pipelines.llm.request import LlmRequest
from pipelines.retry import is_transient_status, retry_after_seconds
from schemas.llm import Usage

BACKENDS = ("gemini", "openai", "openai-compatible")
KEY_VARIABLES = {
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openai": ("OPENAI_API_KEY",),
    "openai-compatible": ("OPENAI_API_KEY",),
}
DEFAULT_MODELS = {"gemini": "gemini-2.5-flash", "openai": "gpt-4o-mini", "openai-compatible": None}


class TransientError(Exception):
    """Worth another try; `retry_after`: the seconds the provider asked to wait, when it did."""

    def __init__(self, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentError(Exception):
    pass


@dataclass(frozen=True)
class RawAnswer:
    text: str
    usage: Usage


@dataclass(frozen=True)
class BackendConfig:
    backend: str
    model: str
    base_url: str | None = None
    timeout_s: float = 120.0
    vertex: bool = False
    project: str | None = None
    location: str | None = None


def api_key(backend: str, required: bool = True) -> str | None:
    """The key from the environment (the first variable set), or None."""
    for variable in KEY_VARIABLES[backend]:
        value = os.environ.get(variable)
        if value:
            return value
    if required:
        names = " or ".join(KEY_VARIABLES[backend])
        raise PermanentError(f"no API key for {backend}: set {names} in the environment")
    return None


def strip_fences(text: str) -> str:
    """Models sometimes wrap JSON in a markdown code fence even when asked not to."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    return body.strip()


class Backend(ABC):
    name: str

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.backend  # part of every cache key
        self.model = config.model

    @cached_property
    def client(self):
        """The provider's SDK client, made on first use: a worker that only defers requests
        to a batch job builds request bodies and never needs a key."""
        return self.make_client()

    def make_client(self):
        raise NotImplementedError

    @abstractmethod
    def generate(self, request: LlmRequest) -> RawAnswer:
        """One call; raises TransientError or PermanentError."""

    def batch_line(self, request: LlmRequest, key: str) -> dict:
        """One line of this provider's batch input file, tagged with the cache key `key`."""
        raise NotImplementedError(f"{self.name} has no batch API")

    def parse_batch_result(self, line: dict) -> tuple[str, RawAnswer | None, str | None]:
        """One line of this provider's batch output: (key, the answer or None, the error or None)."""
        raise NotImplementedError(f"{self.name} has no batch API")


# --- OpenAI and OpenAI-compatible -------------------------------------------------------------

# Keywords OpenAI's strict structured outputs accept; others (minLength, title) are
# dropped from what is sent and still enforced by our own validation.
_OPENAI_SCHEMA_KEYS = {"type", "properties", "required", "additionalProperties", "description", "enum",
                       "items", "minimum", "maximum", "anyOf", "$defs", "$ref", "minItems", "maxItems"}


def openai_schema(schema: dict) -> dict:
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "properties":
                out[key] = {name: openai_schema(sub) for name, sub in value.items()}
            elif key in _OPENAI_SCHEMA_KEYS:
                out[key] = openai_schema(value) if isinstance(value, (dict, list)) else value
        return out
    if isinstance(schema, list):
        return [openai_schema(item) for item in schema]
    return schema


class OpenAIBackend(Backend):
    """OpenAI's chat completions, or any server speaking that protocol at `base_url`."""

    def make_client(self):
        import openai

        config = self.config
        key = api_key(config.backend, required=config.backend == "openai")
        # Local servers (vLLM, Ollama, LM Studio) usually take any key; the SDK needs one.
        return openai.OpenAI(api_key=key or "unused", base_url=config.base_url, max_retries=0,
                             timeout=config.timeout_s)

    def body(self, request: LlmRequest) -> dict:
        """The chat-completions request body (also one line of a batch file)."""
        content = [{"type": "text", "text": request.user}]
        content += [{"type": "image_url", "image_url": {"url": i.data_url}} for i in request.images]
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": content}]
        if request.correction:
            messages += [{"role": "assistant", "content": request.correction[0]},
                         {"role": "user", "content": request.correction_text()}]
        schema = {"name": request.schema.__name__, "schema": openai_schema(request.json_schema()),
                  "strict": True}
        return {"model": self.model, "messages": messages, "temperature": request.temperature,
                "max_completion_tokens": request.max_output_tokens,
                "response_format": {"type": "json_schema", "json_schema": schema}}

    def generate(self, request: LlmRequest) -> RawAnswer:
        import openai

        try:
            response = self.client.chat.completions.create(**self.body(request))
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(_short(f"{type(exc).__name__}: {exc}")) from None
        except openai.APIStatusError as exc:
            detail = f"HTTP {exc.status_code}: {_short(exc.message)}"
            if is_transient_status(exc.status_code):
                raise TransientError(detail, retry_after_seconds(exc.response.headers)) from None
            raise PermanentError(detail) from None
        return self.answer_of(response)

    @staticmethod
    def answer_of(response) -> RawAnswer:
        """Text and usage of a chat completion (an SDK object or its JSON as a dict)."""
        if isinstance(response, dict):
            choice, usage = response["choices"][0], response.get("usage") or {}
            text = choice["message"].get("content") or ""
            tokens = Usage(input_tokens=usage.get("prompt_tokens", 0),
                           output_tokens=usage.get("completion_tokens", 0))
        else:
            text = response.choices[0].message.content or ""
            usage = response.usage
            tokens = Usage(input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                           output_tokens=getattr(usage, "completion_tokens", 0) or 0)
        return RawAnswer(text=text, usage=tokens)

    def batch_line(self, request: LlmRequest, key: str) -> dict:
        return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": self.body(request)}

    def parse_batch_result(self, line: dict) -> tuple[str, RawAnswer | None, str | None]:
        """A line of the output or error file: {"custom_id", "response": {"status_code", "body"},
        "error"}; a request that failed has an HTTP error status and the error JSON as body, or
        (rarely) only `error`."""
        key = str(line.get("custom_id"))
        error = line.get("error")
        if error:
            return key, None, _error_text(error)
        response = line.get("response") or {}
        status, body = response.get("status_code"), response.get("body")
        if status != 200 or not isinstance(body, dict):
            detail = _error_text(body.get("error") if isinstance(body, dict) else body)
            return key, None, f"HTTP {status}: {detail}"
        try:
            return key, self.answer_of(body), None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            return key, None, _short(f"unreadable response ({type(exc).__name__}: {exc})")


# --- Gemini ------------------------------------------------------------------------------------

class GeminiBackend(Backend):
    """Gemini through google-genai: the Gemini Developer API, or Vertex AI."""

    def make_client(self):
        from google import genai
        from google.genai import types

        config = self.config
        options = types.HttpOptions(timeout=int(config.timeout_s * 1000), base_url=config.base_url,
                                    retry_options=types.HttpRetryOptions(attempts=1))
        if config.vertex:
            # Vertex AI authenticates with Application Default Credentials, not a key.
            return genai.Client(vertexai=True, project=config.project, location=config.location,
                                http_options=options)
        return genai.Client(api_key=api_key("gemini"), http_options=options)

    def contents_and_config(self, request: LlmRequest):
        from google.genai import types

        parts = [types.Part.from_bytes(data=i.data, mime_type=i.mime_type) for i in request.images]
        contents = [types.Content(role="user", parts=[*parts, types.Part.from_text(text=request.user)])]
        if request.correction:
            contents += [types.Content(role="model", parts=[types.Part.from_text(text=request.correction[0])]),
                         types.Content(role="user", parts=[types.Part.from_text(text=request.correction_text())])]
        config = types.GenerateContentConfig(
            system_instruction=request.system, temperature=request.temperature,
            max_output_tokens=request.max_output_tokens, response_mime_type="application/json",
            response_json_schema=request.json_schema(),
        )
        return contents, config

    def generate(self, request: LlmRequest) -> RawAnswer:
        from google.genai import errors

        contents, config = self.contents_and_config(request)
        try:
            response = self.client.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.APIError as exc:
            detail = f"HTTP {exc.code}: {_short(exc.message or exc.status or '')}"
            headers = getattr(exc.response, "headers", None)
            if is_transient_status(exc.code):
                raise TransientError(detail, retry_after_seconds(headers)) from None
            raise PermanentError(detail) from None
        except transport_errors() as exc:
            raise TransientError(_short(f"{type(exc).__name__}: {exc}")) from None
        return self.answer_of(response)

    @staticmethod
    def answer_of(response) -> RawAnswer:
        """Text and usage of a GenerateContentResponse (an SDK object or its REST JSON as a dict);
        thinking tokens bill as output."""
        if isinstance(response, dict):
            candidates = response.get("candidates") or [{}]
            parts = (candidates[0].get("content") or {}).get("parts") or []
            # As the SDK's `response.text`: the text parts of the first candidate, without thoughts.
            text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
            meta = response.get("usageMetadata") or {}
            output = (meta.get("candidatesTokenCount") or 0) + (meta.get("thoughtsTokenCount") or 0)
            return RawAnswer(text=text, usage=Usage(input_tokens=meta.get("promptTokenCount") or 0,
                                                    output_tokens=output))
        try:
            text = response.text or ""
        except ValueError:  # no candidate text (blocked or empty): an invalid answer
            text = ""
        meta = response.usage_metadata
        output = (getattr(meta, "candidates_token_count", 0) or 0) + (getattr(meta, "thoughts_token_count", 0) or 0)
        return RawAnswer(text=text, usage=Usage(input_tokens=getattr(meta, "prompt_token_count", 0) or 0,
                                                output_tokens=output))

    def rest_request(self, request: LlmRequest) -> dict:
        """The GenerateContentRequest as REST JSON: what `generate` sends for `request` (the
        structure google-genai serialises `contents_and_config` to), without the model."""
        def text(value: str) -> dict:
            return {"text": value}

        images = [{"inlineData": {"data": i.b64, "mimeType": i.mime_type}}
                  for i in request.images]
        contents = [{"role": "user", "parts": [*images, text(request.user)]}]
        if request.correction:
            contents += [{"role": "model", "parts": [text(request.correction[0])]},
                         {"role": "user", "parts": [text(request.correction_text())]}]
        config = {"temperature": request.temperature, "maxOutputTokens": request.max_output_tokens,
                  "responseMimeType": "application/json", "responseJsonSchema": request.json_schema()}
        return {"contents": contents, "systemInstruction": {"role": "user", "parts": [text(request.system)]},
                "generationConfig": config}

    def batch_line(self, request: LlmRequest, key: str) -> dict:
        """A line of a batch input file (the model is the batch job's)."""
        return {"key": key, "request": self.rest_request(request)}

    def parse_batch_result(self, line: dict) -> tuple[str, RawAnswer | None, str | None]:
        """A line of a batch output file: {"key", "response": GenerateContentResponse} or
        {"key", "error": {"code", "message", "status"}}.  A response without text (blocked,
        empty) is an answer with empty text, as from `generate`: invalid, not failed."""
        key = str(line.get("key"))
        if line.get("error"):
            return key, None, _error_text(line["error"])
        response = line.get("response")
        if not isinstance(response, dict):
            return key, None, "no response in the batch output"
        try:
            return key, self.answer_of(response), None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            return key, None, _short(f"unreadable response ({type(exc).__name__}: {exc})")


def _error_text(error) -> str:
    """A provider's error object ({"code", "message", "status"/"type"}) as a short line."""
    if isinstance(error, dict):
        # Gemini: {"code": 500, "status": "INTERNAL"}; OpenAI: {"code": "rate_limit_exceeded", "type"}.
        names = (error.get("code"), error.get("status")) if "status" in error else (error.get("code") or error.get("type"),)
        label = " ".join(str(n) for n in names if n not in (None, ""))
        message = error.get("message") or ""
        return _short(f"{label}: {message}" if label and message else message or label or str(error))
    return _short(str(error))


def transport_errors() -> tuple[type[Exception], ...]:
    """Timeouts and connection failures of the HTTP stacks google-genai may use (httpx, or
    httpx2 when GOOGLE_GENAI_HTTP_CLIENT selects it)."""
    found = []
    for module in ("httpx", "httpx2"):
        try:
            lib = __import__(module)
        except ImportError:
            continue
        found += [lib.TimeoutException, lib.TransportError]
    return tuple(found)


# Key-shaped strings (OpenAI "sk-...", Google "AIza...") as providers sometimes echo them,
# masked or not, in error messages.
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_*\-]{6,}|AIza[0-9A-Za-z_\-]{10,})")


def redact(text: str) -> str:
    """The text without any API key of the environment or anything shaped like one."""
    for variables in KEY_VARIABLES.values():
        for variable in variables:
            value = os.environ.get(variable)
            if value and len(value) >= 8:
                text = text.replace(value, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", text)


def _short(text: str, limit: int = 300) -> str:
    """One line of an error, at most `limit` characters, with keys redacted: it ends up in
    logs and in the rejected table."""
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= limit else text[:limit] + "…"


def make_backend(config: BackendConfig) -> Backend:
    if config.backend == "gemini":
        return GeminiBackend(config)
    if config.backend in ("openai", "openai-compatible"):
        if config.backend == "openai-compatible" and not config.base_url:
            raise PermanentError("openai-compatible needs --llm_base_url (e.g. http://localhost:8000/v1)")
        return OpenAIBackend(config)
    raise ValueError(f"unknown LLM backend {config.backend!r}; choose one of {BACKENDS}")

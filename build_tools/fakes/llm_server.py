"""A local stand-in for the OpenAI and Google Gemini HTTP APIs, for tests and benchmarks.

``LocalLlmServer`` speaks enough of both wire protocols that the real SDK clients work against it
unchanged: ``openai.OpenAI(base_url=server.openai_base_url, ...)`` and
``genai.Client(api_key=..., http_options=types.HttpOptions(base_url=server.url, ...))``.

OpenAI (under ``/v1``): chat completions, the Files API (multipart upload, metadata, content,
delete) and the Batch API (create, retrieve, cancel).  Gemini (under ``/v1beta``):
``models/{model}:generateContent``, ``models/{model}:batchGenerateContent`` with inlined requests
or an uploaded JSONL file, ``batches/{id}`` (get, cancel), the resumable upload protocol under
``/upload/v1beta/files`` and ``files/{id}`` (get, delete, ``:download``).

Every generation request -- a direct call or one line of a batch -- becomes an :class:`LlmCall`.
A *responder* turns the call into the answer text (by default an instance of the JSON schema the
client asked for) and a *faults* callable may replace the answer with an HTTP error, a delay,
malformed or schema-violating JSON, or a dropped connection.  Everything the server saw is kept
in ``server.calls`` for the test to inspect.  As the providers do, it refuses (400) an inline
image or video of a type the protocol does not take, or whose first bytes are not its type.

Batches are answered when they are created (no latency, no delay faults); their status then
reports "in progress" for ``batch_polls_until_done`` polls before it reports completion.  A line
whose fault is ``Fault.disconnect()`` is missing from the batch's output, as if the provider had
lost it.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from build_tools.fakes.local_http import LocalHttpServer, QuietHandler

DEFAULT_SENTENCE = "The region shows a visible blending seam."
MALFORMED_ANSWER = '{"explanation": "The left ey'
IMAGE_TOKENS = 258

GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
OPENAI_ERROR = {  # status -> (type, code)
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    408: ("server_error", "timeout"),
    409: ("invalid_request_error", "conflict"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "overloaded"),
    504: ("server_error", "timeout"),
}


# --------------------------------------------------------------------------------------------
# Faults and calls


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one generation call; build one with the class methods."""

    kind: str  # "status" | "delay" | "malformed" | "invalid" | "disconnect"
    code: int | None = None
    retry_after: float | str | None = None
    message: str | None = None
    seconds: float = 0.0
    answer: dict | None = field(default=None, hash=False)

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None,
               message: str | None = None) -> Fault:
        """Answer with HTTP ``code`` and the provider's error JSON; ``Retry-After`` when given."""
        if message is None:
            message = _default_error_message(code)
        return cls("status", code=int(code), retry_after=retry_after, message=message)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` more, then answer normally (direct calls only)."""
        return cls("delay", seconds=float(seconds))

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with text that is not valid JSON (a truncated object)."""
        return cls("malformed")

    @classmethod
    def invalid(cls, answer: dict) -> Fault:
        """Answer 200 with ``answer``: valid JSON that need not match the schema."""
        return cls("invalid", answer=dict(answer))

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without a response (in a batch: drop the line)."""
        return cls("disconnect")


def _default_error_message(code: int) -> str:
    if code == 429:
        return "Rate limit reached for requests. Please try again later."
    if code >= 500:
        return "The server had an error while processing your request."
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"HTTP {code}"


@dataclass
class LlmCall:
    """One request the server saw.

    ``kind`` is "generate" (a direct generation request), "batch" (one line of a batch; ``batch``
    names it and ``key`` is its custom_id / key) or "manage" (file and batch management; only
    ``protocol``, ``method``, ``path``, ``status`` and the times are meaningful).
    """

    protocol: str  # "openai" | "gemini"
    model: str
    text: str
    images: int
    schema: dict | None
    body: Any
    attempt: int = 0
    index: int = -1
    kind: str = "generate"
    json_mode: bool = False
    method: str = "POST"
    path: str = ""
    batch: str | None = None
    key: str | None = None
    started: float = 0.0
    finished: float | None = None
    status: int | None = None  # HTTP status (0: connection dropped); a batch line's status_code
    fault: Fault | None = None
    answer: str | None = None
    media_types: tuple[str, ...] = ()  # each image's (or video's) media type, in order
    prompt_tokens: int = 0
    completion_tokens: int = 0
    api_key: str | None = field(default=None, repr=False)

    @property
    def is_generation(self) -> bool:
        return self.kind in ("generate", "batch")


Responder = Callable[[LlmCall], "dict | str"]
Faults = Callable[[LlmCall], "Fault | None"]


# --------------------------------------------------------------------------------------------
# The default answer: an instance of the requested schema


def schema_instance(schema: Any, root: Any = None, _depth: int = 0) -> Any:
    """A small deterministic value that satisfies ``schema`` (JSON Schema or Gemini's OpenAPI
    subset): every property, one array item, the first enum value, 8 clamped into the bounds."""
    if root is None:
        root = schema
    if not isinstance(schema, dict) or _depth > 24:
        return None
    if "$ref" in schema:
        return schema_instance(_resolve_ref(root, schema["$ref"]), root, _depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if enum:
        return enum[0]
    for key in ("anyOf", "any_of", "oneOf", "one_of"):
        options = schema.get(key)
        if options:
            chosen = next((o for o in options if not _is_null_schema(o, root)), options[0])
            return schema_instance(chosen, root, _depth + 1)
    if schema.get("allOf") or schema.get("all_of"):
        merged: dict = {k: v for k, v in schema.items() if k not in ("allOf", "all_of")}
        for part in schema.get("allOf") or schema.get("all_of"):
            if isinstance(part, dict) and "$ref" in part:
                part = _resolve_ref(root, part["$ref"])
            if isinstance(part, dict):
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                merged = {**part, **merged, "properties": props}
        return schema_instance(merged, root, _depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind is not None else None
    if kind is None:
        if "properties" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            kind = "string"

    if kind == "object":
        props = schema.get("properties") or {}
        return {name: schema_instance(sub, root, _depth + 1) for name, sub in props.items()}
    if kind == "array":
        prefix = schema.get("prefixItems") or schema.get("prefix_items") or []
        items = [schema_instance(sub, root, _depth + 1) for sub in prefix]
        item_schema = schema.get("items")
        wanted = max(1, _as_int(schema.get("minItems", schema.get("min_items")), 0))
        if isinstance(item_schema, dict):
            while len(items) < wanted:
                items.append(schema_instance(item_schema, root, _depth + 1))
        return items
    if kind == "string":
        text = DEFAULT_SENTENCE
        min_len = _as_int(schema.get("minLength", schema.get("min_length")), 0)
        max_len = _as_int(schema.get("maxLength", schema.get("max_length")), None)
        if len(text) < min_len:
            text = (text + " ") * (min_len // len(text) + 1)
        if max_len is not None:
            text = text[:max_len]
        return text
    if kind in ("integer", "number"):
        value: float = 8
        low = _as_float(schema.get("minimum"))
        high = _as_float(schema.get("maximum"))
        ex_low = _as_float(schema.get("exclusiveMinimum"))
        ex_high = _as_float(schema.get("exclusiveMaximum"))
        if low is not None:
            value = max(value, low)
        if ex_low is not None and value <= ex_low:
            value = ex_low + 1 if kind == "integer" else ex_low + 0.5
        if high is not None:
            value = min(value, high)
        if ex_high is not None and value >= ex_high:
            value = ex_high - 1 if kind == "integer" else ex_high - 0.5
        if kind == "integer":
            return int(value)
        return float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return DEFAULT_SENTENCE


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part, {})
        elif isinstance(node, list) and part.isdigit():
            node = node[int(part)]
        else:
            return {}
    return node


def _is_null_schema(schema: Any, root: Any) -> bool:
    if isinstance(schema, dict) and "$ref" in schema:
        schema = _resolve_ref(root, schema["$ref"])
    return isinstance(schema, dict) and str(schema.get("type", "")).lower() == "null"


def _as_int(value: Any, default: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def default_responder(call: LlmCall) -> dict | str:
    """An instance of ``call.schema``; with no schema the sentence (wrapped in an object when the
    client asked for JSON without a schema)."""
    if call.schema is not None:
        return schema_instance(call.schema)
    if call.json_mode:
        return {"text": DEFAULT_SENTENCE}
    return DEFAULT_SENTENCE


# --------------------------------------------------------------------------------------------
# Parsing generation requests


# What each provider takes inline, and the first bytes of each image type: a request whose
# media is of another type, or whose image bytes are not what they say, is refused with 400
# as they do.
MEDIA_TYPES = {"openai": ("image/png", "image/jpeg", "image/webp", "image/gif"),
               "gemini": ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
                          "video/mp4", "video/mpeg", "video/mov", "video/avi", "video/x-flv", "video/mpg",
                          "video/webm", "video/wmv", "video/3gpp")}
_MAGIC = {"image/png": (b"\x89PNG",), "image/jpeg": (b"\xff\xd8\xff",), "image/webp": (b"RIFF",),
          "image/gif": (b"GIF87a", b"GIF89a")}


def _media_type(protocol: str, media_type: str, data: str) -> str:
    """`media_type` after checking it against the protocol and the data's first bytes."""
    if media_type not in MEDIA_TYPES[protocol]:
        raise _HttpError(400, f"Unsupported media type {media_type!r}: use one of {', '.join(MEDIA_TYPES[protocol])}.")
    try:  # google-genai sends the URL-safe alphabet
        head = base64.b64decode(data[:24].replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise _HttpError(400, "Invalid image: the data is not base64.") from None
    if media_type in _MAGIC and not head.startswith(_MAGIC[media_type]):
        raise _HttpError(400, f"Invalid image: the data is not {media_type}.")
    return media_type


def _openai_image(part: dict) -> str:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise _HttpError(400, "An image_url part needs a url.")
    if not url.startswith("data:"):
        return "url"
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise _HttpError(400, "Invalid image: a data URL must be base64.")
    return _media_type("openai", header[len("data:"):-len(";base64")], data)


def _parse_openai(body: dict) -> tuple[str, str, list[str], dict | None, bool]:
    texts: list[str] = []
    images: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" or ("text" in part and isinstance(part["text"], str)):
                    texts.append(part.get("text") or "")
                elif part.get("type") in ("image_url", "input_image") or "image_url" in part:
                    images.append(_openai_image(part))
    response_format = body.get("response_format") or {}
    schema = None
    json_mode = False
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            json_mode = True
        elif response_format.get("type") == "json_object":
            json_mode = True
    return str(body.get("model") or ""), "\n".join(texts), images, schema, json_mode


def _g(obj: Any, camel: str, snake: str | None = None) -> Any:
    """A field of a Gemini JSON object under its camelCase or snake_case name."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    return obj.get(snake or re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def _parse_gemini(body: dict) -> tuple[str, list[str], dict | None, bool]:
    texts: list[str] = []
    images: list[str] = []

    def parts_of(content: Any) -> None:
        if isinstance(content, str):
            texts.append(content)
            return
        if not isinstance(content, dict):
            return
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            inline = _g(part, "inlineData")
            if isinstance(inline, dict):
                images.append(_media_type("gemini", str(_g(inline, "mimeType") or ""), str(inline.get("data") or "")))
            elif _g(part, "fileData") is not None:
                images.append(str(_g(_g(part, "fileData"), "mimeType") or "file"))

    system = _g(body, "systemInstruction")
    if system is not None:
        parts_of(system)
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    for content in contents:
        parts_of(content)
    config = _g(body, "generationConfig") or {}
    schema = _g(config, "responseJsonSchema")
    if schema is None:
        schema = _g(config, "responseSchema")
    mime = _g(config, "responseMimeType") or ""
    json_mode = schema is not None or mime == "application/json"
    return "\n".join(texts), images, schema, json_mode


def _strip_model(name: str) -> str:
    return name.removeprefix("models/")


# --------------------------------------------------------------------------------------------
# The server


class _Dropped(Exception):
    """The fault says to drop the connection."""


class _HttpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _StoredFile:
    id: str
    protocol: str
    data: bytes
    filename: str
    purpose: str
    mime_type: str
    created: float


@dataclass
class _Batch:
    id: str
    protocol: str
    model: str
    created: float
    request: dict
    polls: int = 0
    cancelled: bool = False
    display_name: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    inlined: list | None = None  # Gemini inlined responses
    total: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class LocalLlmServer(LocalHttpServer):
    """OpenAI- and Gemini-compatible HTTP server on 127.0.0.1 (a free port), run in a daemon
    thread.  Use as a context manager or call :meth:`start` / :meth:`stop`."""

    handler_attribute = "llm"
    thread_name = "local-llm-server"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        faults: Faults | None = None,
        latency_s: float = 0.0,
        batch_polls_until_done: int = 1,
        openai_error_file: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``responder`` makes the answer of a call (a dict is sent as JSON, a str as is);
        ``faults`` may return a :class:`Fault` per call; ``latency_s`` is slept before every direct
        generation call; a batch reports in-progress for ``batch_polls_until_done`` polls;
        ``openai_error_file`` puts failed OpenAI batch lines in a separate error file (as the real
        API does) instead of the output file."""
        self.responder: Responder = responder or default_responder
        self.faults = faults
        self.latency_s = float(latency_s)
        self.batch_polls_until_done = int(batch_polls_until_done)
        self.openai_error_file = openai_error_file
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._calls: list[LlmCall] = []
        self._attempts: dict[str, int] = {}
        self._index = itertools.count()
        self._in_flight = 0
        self._max_in_flight = 0
        self._keys: set[str] = set()
        self.tokens_issued: list[str] = []  # OAuth access tokens handed out at TOKEN_PATH
        self._files: dict[str, _StoredFile] = {}
        self._uploads: dict[str, dict] = {}
        self._batches: dict[str, _Batch] = {}

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    # ---- observability

    @property
    def calls(self) -> list[LlmCall]:
        """Every request seen so far (a snapshot), in arrival order."""
        with self._lock:
            return list(self._calls)

    def generation_calls(self, *, include_batch: bool = True) -> list[LlmCall]:
        """The generation requests: direct calls and (unless ``include_batch`` is false) batch
        lines; not the file and batch management requests."""
        kinds = ("generate", "batch") if include_batch else ("generate",)
        return [c for c in self.calls if c.kind in kinds]

    @property
    def max_in_flight(self) -> int:
        """The peak number of direct generation requests served at the same time."""
        with self._lock:
            return self._max_in_flight

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def api_keys_seen(self) -> set[str]:
        with self._lock:
            return set(self._keys)

    def reset(self) -> None:
        """Forget the calls, attempt counts, peak concurrency and keys (files and batches stay)."""
        with self._lock:
            self._calls.clear()
            self._attempts.clear()
            self._index = itertools.count()
            self._max_in_flight = self._in_flight
            self._keys.clear()

    # ---- bookkeeping

    def _new_id(self, prefix: str = "") -> str:
        return prefix + uuid.uuid4().hex[:24]

    def _record(self, call: LlmCall, *, in_flight: bool = False) -> None:
        with self._lock:
            if call.api_key:
                self._keys.add(call.api_key)
            if call.is_generation:
                canon = json.dumps({"protocol": call.protocol, "model": call.model,
                                    "body": _without_model(call.body)},
                                   sort_keys=True, separators=(",", ":"), default=str)
                digest = hashlib.sha256(canon.encode()).hexdigest()
                call.attempt = self._attempts.get(digest, 0)
                self._attempts[digest] = call.attempt + 1
                call.index = next(self._index)
            if in_flight:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._calls.append(call)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _make_call(self, protocol: str, model: str, body: Any, *, kind: str, path: str,
                   api_key: str | None, batch: str | None = None, key: str | None = None) -> LlmCall:
        if protocol == "openai":
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            model, text, images, schema, json_mode = _parse_openai(body)
        else:
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            text, images, schema, json_mode = _parse_gemini(body)
            model = _strip_model(str(body.get("model") or model))
        return LlmCall(protocol=protocol, model=model, text=text, images=len(images), media_types=tuple(images),
                       schema=schema if isinstance(schema, dict) else None, body=body,
                       kind=kind, json_mode=json_mode, path=path, batch=batch, key=key,
                       started=time.monotonic(), api_key=api_key)

    def _answer(self, call: LlmCall) -> str:
        """The answer text of a call after its fault (status/disconnect faults are raised)."""
        fault = call.fault
        if fault is not None:
            if fault.kind == "status":
                raise _HttpError(fault.code or 500, fault.message or _default_error_message(500))
            if fault.kind == "disconnect":
                raise _Dropped()
            if fault.kind == "malformed":
                return MALFORMED_ANSWER
            if fault.kind == "invalid":
                return json.dumps(fault.answer)
        try:
            answer = self.responder(call)
        except Exception as exc:  # noqa: BLE001 -- a broken responder answers 500
            raise _HttpError(500, f"responder failed: {type(exc).__name__}") from None
        return answer if isinstance(answer, str) else json.dumps(answer)

    def _generate(self, call: LlmCall, *, direct: bool) -> dict:
        """Answer a recorded call: the provider's response JSON (raises _HttpError/_Dropped)."""
        if self.faults is not None:
            call.fault = self.faults(call)
        if direct:
            if self.latency_s > 0:
                time.sleep(self.latency_s)
            if call.fault is not None and call.fault.kind == "delay" and call.fault.seconds > 0:
                time.sleep(call.fault.seconds)
        answer = self._answer(call)
        call.answer = answer
        call.prompt_tokens = len(call.text) // 4 + IMAGE_TOKENS * call.images
        call.completion_tokens = len(answer) // 4 + 1
        if call.protocol == "openai":
            return self._openai_completion(call, answer)
        return self._gemini_response(call, answer)

    def _openai_completion(self, call: LlmCall, answer: str) -> dict:
        return {
            "id": self._new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_local",
        }

    def _gemini_response(self, call: LlmCall, answer: str) -> dict:
        return {
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": answer}]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {
                "promptTokenCount": call.prompt_tokens,
                "candidatesTokenCount": call.completion_tokens,
                "totalTokenCount": call.prompt_tokens + call.completion_tokens,
            },
            "modelVersion": call.model,
            "responseId": self._new_id(),
        }

    # ---- files

    def _store_file(self, protocol: str, data: bytes, filename: str, purpose: str,
                    mime_type: str) -> _StoredFile:
        prefix = "file-" if protocol == "openai" else ""
        stored = _StoredFile(self._new_id(prefix), protocol, data, filename, purpose, mime_type,
                             time.time())
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def _file(self, file_id: str, protocol: str) -> _StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None or stored.protocol != protocol:
            raise _HttpError(404, f"No such File object: {file_id}")
        return stored

    def _openai_file_json(self, f: _StoredFile) -> dict:
        return {"id": f.id, "object": "file", "bytes": len(f.data), "created_at": int(f.created),
                "filename": f.filename, "purpose": f.purpose, "status": "processed",
                "expires_at": None, "status_details": None}

    def _gemini_file_json(self, f: _StoredFile) -> dict:
        stamp = _rfc3339(f.created)
        out = {
            "name": f"files/{f.id}",
            "displayName": f.filename,
            "mimeType": f.mime_type,
            "sizeBytes": str(len(f.data)),
            "createTime": stamp,
            "updateTime": stamp,
            "expirationTime": _rfc3339(f.created + 48 * 3600),
            "sha256Hash": base64.b64encode(hashlib.sha256(f.data).hexdigest().encode()).decode(),
            "uri": f"{self.url}/v1beta/files/{f.id}",
            "state": "ACTIVE",
            "source": "GENERATED" if f.purpose == "batch_output" else "UPLOADED",
        }
        if f.purpose == "batch_output":
            out["downloadUri"] = f"{self.url}/v1beta/files/{f.id}:download?alt=media"
        return out

    # ---- OpenAI batches

    def _openai_batch_create(self, body: dict, api_key: str | None) -> _Batch:
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if not input_file_id or not endpoint:
            raise _HttpError(400, "input_file_id and endpoint are required.")
        if endpoint != "/v1/chat/completions":
            raise _HttpError(400, f"This local server does not batch {endpoint}.")
        source = self._file(str(input_file_id), "openai")
        batch = _Batch(self._new_id("batch_"), "openai", "", time.time(), body,
                       input_file_id=source.id)
        out_lines: list[str] = []
        err_lines: list[str] = []
        for number, raw in enumerate(source.data.decode("utf-8", "replace").splitlines()):
            if not raw.strip():
                continue
            batch.total += 1
            custom_id, status, response_body = None, 400, None
            try:
                line = json.loads(raw)
                custom_id = line.get("custom_id")
                if line.get("url") not in (None, endpoint, endpoint.removeprefix("/v1")):
                    raise _HttpError(400, f"line {number}: url must be {endpoint}")
                call = self._make_call("openai", "", line.get("body"), kind="batch", path=endpoint,
                                       api_key=api_key, batch=batch.id,
                                       key=None if custom_id is None else str(custom_id))
                self._record(call)
                batch.model = batch.model or call.model
                try:
                    response_body = self._generate(call, direct=False)
                    status = 200
                    batch.input_tokens += call.prompt_tokens
                    batch.output_tokens += call.completion_tokens
                except _HttpError as exc:
                    status, response_body = exc.code, _openai_error(exc.code, exc.message)
                except _Dropped:
                    status = 0
                call.status = status
                call.finished = time.monotonic()
            except (ValueError, AttributeError) as exc:
                response_body = _openai_error(400, f"line {number}: invalid request: {exc}")
            except _HttpError as exc:
                status, response_body = exc.code, _openai_error(exc.code, exc.message)
            if status == 0:  # dropped: the line is missing from the output
                batch.failed += 1
                continue
            record = {
                "id": self._new_id("batch_req_"),
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": self._new_id("req_"),
                             "body": response_body},
                "error": None,
            }
            if status != 200:
                batch.failed += 1
            (err_lines if status != 200 and self.openai_error_file else out_lines).append(
                json.dumps(record))
        name = f"{batch.id}_output.jsonl"
        batch.output_file_id = self._store_file(
            "openai", "".join(x + "\n" for x in out_lines).encode(), name, "batch_output",
            "application/jsonl").id
        if err_lines:
            batch.error_file_id = self._store_file(
                "openai", "".join(x + "\n" for x in err_lines).encode(), f"{batch.id}_error.jsonl",
                "batch_output", "application/jsonl").id
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def _openai_batch_json(self, batch: _Batch, *, poll: bool) -> dict:
        status = self._batch_progress(batch, poll)
        done = status == "completed"
        created = int(batch.created)
        counts_done = batch.total - batch.failed if done else 0
        out: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.request.get("endpoint"),
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.request.get("completion_window", "24h"),
            "status": {"pending": "validating", "running": "in_progress"}.get(status, status),
            "output_file_id": batch.output_file_id if done else None,
            "error_file_id": batch.error_file_id if done else None,
            "created_at": created,
            "in_progress_at": created if status != "pending" else None,
            "expires_at": created + 24 * 3600,
            "finalizing_at": int(time.time()) if done else None,
            "completed_at": int(time.time()) if done else None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": int(time.time()) if status == "cancelled" else None,
            "cancelled_at": int(time.time()) if status == "cancelled" else None,
            "request_counts": {"total": batch.total, "completed": counts_done,
                               "failed": batch.failed if done else 0},
            "metadata": batch.request.get("metadata"),
            "model": batch.model or None,
        }
        if done:
            out["usage"] = {
                "input_tokens": batch.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": batch.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": batch.input_tokens + batch.output_tokens,
            }
        return out

    def _batch_progress(self, batch: _Batch, poll: bool) -> str:
        """The state: pending (just created), running, completed or cancelled; a poll counts."""
        with self._lock:
            if batch.cancelled:
                return "cancelled"
            if not poll:
                return "pending"
            batch.polls += 1
            return "running" if batch.polls <= self.batch_polls_until_done else "completed"

    # ---- Gemini batches

    def _gemini_batch_create(self, model: str, body: dict, api_key: str | None) -> _Batch:
        spec = body.get("batch") if isinstance(body.get("batch"), dict) else {}
        input_config = _g(spec, "inputConfig") or {}
        batch = _Batch(self._new_id(), "gemini", _strip_model(model), time.time(), body,
                       display_name=_g(spec, "displayName"))
        file_name = _g(input_config, "fileName")
        if file_name:
            source = self._file(str(file_name).removeprefix("files/"), "gemini")
            batch.input_file_id = source.id
            lines = []
            for number, raw in enumerate(source.data.decode("utf-8", "replace").splitlines()):
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except ValueError:
                    item = {"key": f"line-{number}", "request": None}
                lines.append(item if isinstance(item, dict) else {"request": None})
        else:
            requests = _g(input_config, "requests") or {}
            lines = requests.get("requests") if isinstance(requests, dict) else requests
            if not isinstance(lines, list) or not lines:
                raise _HttpError(400, "batch.input_config needs requests or a file_name.")

        results: list[dict | None] = []
        for item in lines:
            batch.total += 1
            key = item.get("key")
            metadata = item.get("metadata")
            call_key = key if key is not None else (metadata or {}).get("key")
            result: dict[str, Any] = {}
            try:
                call = self._make_call("gemini", batch.model, item.get("request"), kind="batch",
                                       path=f"models/{batch.model}:batchGenerateContent",
                                       api_key=api_key, batch=batch.id,
                                       key=None if call_key is None else str(call_key))
            except _HttpError as exc:
                result["error"] = {"code": exc.code, "message": exc.message,
                                   "status": GEMINI_STATUS.get(exc.code, "UNKNOWN")}
            else:
                self._record(call)
                try:
                    result["response"] = self._generate(call, direct=False)
                    call.status = 200
                    batch.input_tokens += call.prompt_tokens
                    batch.output_tokens += call.completion_tokens
                except _HttpError as exc:
                    call.status = exc.code
                    result["error"] = {"code": exc.code, "message": exc.message,
                                       "status": GEMINI_STATUS.get(exc.code, "UNKNOWN")}
                except _Dropped:
                    call.status = 0
                    result = {}
                call.finished = time.monotonic()
            if not result:
                batch.failed += 1
                results.append(None)
                continue
            if "error" in result:
                batch.failed += 1
            if file_name:
                results.append({"key": key, **result} if key is not None else result)
            else:
                results.append({**result, **({"metadata": metadata} if metadata else {})})

        kept = [r for r in results if r is not None]
        if file_name:
            data = "".join(json.dumps(r) + "\n" for r in kept).encode()
            batch.output_file_id = self._store_file("gemini", data, f"batch-{batch.id}", "batch_output",
                                                    "application/jsonl").id
        else:
            batch.inlined = kept
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def _gemini_batch_json(self, batch: _Batch, *, poll: bool) -> dict:
        status = self._batch_progress(batch, poll)
        state = {"pending": "BATCH_STATE_PENDING", "running": "BATCH_STATE_RUNNING",
                 "completed": "BATCH_STATE_SUCCEEDED", "cancelled": "BATCH_STATE_CANCELLED"}[status]
        done = status in ("completed", "cancelled")
        stamp = _rfc3339(batch.created)
        spec = batch.request.get("batch") if isinstance(batch.request.get("batch"), dict) else {}
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": f"batches/{batch.id}",
            "model": f"models/{batch.model}",
            "displayName": batch.display_name or f"batch-{batch.id}",
            "inputConfig": _g(spec, "inputConfig") or {},
            "createTime": stamp,
            "updateTime": _rfc3339(time.time()),
            "batchStats": {
                "requestCount": str(batch.total),
                "successfulRequestCount": str(batch.total - batch.failed) if done else "0",
                "failedRequestCount": str(batch.failed) if done else "0",
                "pendingRequestCount": "0" if done else str(batch.total),
            },
            "state": state,
        }
        if done:
            metadata["endTime"] = _rfc3339(time.time())
        if status == "completed":
            if batch.output_file_id is not None:
                metadata["output"] = {"responsesFile": f"files/{batch.output_file_id}"}
            else:
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": batch.inlined or []}}
        out: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": metadata, "done": done}
        if status == "completed":
            out["response"] = {"@type": metadata["@type"], **{k: v for k, v in metadata.items()
                                                             if k != "@type"}}
        return out

    def _batch(self, batch_id: str, protocol: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.protocol != protocol:
            raise _HttpError(404, f"No batch found with id '{batch_id}'.")
        return batch


def _without_model(body: Any) -> Any:
    if isinstance(body, dict) and "model" in body:
        return {k: v for k, v in body.items() if k != "model"}
    return body


def _rfc3339(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _openai_error(code: int, message: str) -> dict:
    kind, err_code = OPENAI_ERROR.get(code, ("server_error" if code >= 500 else "invalid_request_error",
                                             None))
    return {"error": {"message": message, "type": kind, "param": None, "code": err_code}}


def _gemini_error(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": GEMINI_STATUS.get(code, "UNKNOWN")}}


_GEMINI_GENERATE = re.compile(r"^/(v1beta|v1|v1alpha)/(models|tunedModels)/([^/:]+):(generateContent|"
                              r"batchGenerateContent)$")
# Vertex AI's path for the same call; authenticated with an OAuth bearer token.
_VERTEX_GENERATE = re.compile(r"^/(v1beta1|v1)/projects/([^/]+)/locations/([^/]+)/publishers/google/models/"
                              r"([^/:]+):generateContent$")
TOKEN_PATH = "/oauth2/token"  # a service account's token_uri can point here (Vertex AI tests)
_GEMINI_BATCH = re.compile(r"^/(v1beta|v1|v1alpha)/batches/([^/:]+)(:cancel)?$")
_GEMINI_FILE = re.compile(r"^/(v1beta|v1|v1alpha)/files/([^/:]+)(:download)?$")
_OPENAI_FILE = re.compile(r"^/v1/files/([^/]+)(/content)?$")
_OPENAI_BATCH = re.compile(r"^/v1/batches/([^/]+)(/cancel)?$")


class _Handler(QuietHandler):
    server_version = "LocalLlm/1.0"
    llm: LocalLlmServer  # set on the bound subclass

    # ---- plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self, raw: bytes) -> Any:
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise _HttpError(400, "The request body is not valid JSON.") from None

    def _send(self, code: int, payload: Any, *, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, protocol: str, code: int, message: str,
                    headers: dict[str, str] | None = None) -> None:
        payload = _openai_error(code, message) if protocol == "openai" else _gemini_error(code, message)
        self._send(code, payload, headers=headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _api_key(self, protocol: str, query: dict[str, list[str]]) -> str | None:
        if protocol == "openai":
            auth = self.headers.get("Authorization") or ""
            return (auth[7:].strip() or None) if auth.lower().startswith("bearer ") else None
        auth = self.headers.get("Authorization") or ""
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        return self.headers.get("x-goog-api-key") or (query.get("key") or [None])[0] or bearer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        llm = self.llm
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        protocol = "openai" if path == "/v1" or path.startswith("/v1/") else "gemini"
        raw = self._body() if method == "POST" else b""
        api_key = self._api_key(protocol, query)
        if method == "POST" and path == TOKEN_PATH:  # OAuth token endpoint (service-account JWT grant)
            token = f"ya29.local-{llm._new_id('')}"
            llm.tokens_issued.append(token)
            self._send(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
            return
        generate = None
        if method == "POST":
            if protocol == "openai" and path == "/v1/chat/completions":
                generate = "openai"
            else:
                m = _GEMINI_GENERATE.match(path)
                if (m and m.group(4) == "generateContent") or _VERTEX_GENERATE.match(path):
                    generate = "gemini"
        if generate is not None:
            self._serve_generation(generate, path, raw, api_key)
            return
        call = LlmCall(protocol=protocol, model="", text="", images=0, schema=None, body=None,
                       kind="manage", method=method, path=path, started=time.monotonic(),
                       api_key=api_key)
        llm._record(call)
        status = 500
        try:
            if api_key is None and not path.startswith("/upload/"):
                raise _HttpError(401, "Missing API key.")
            status = self._manage(method, path, query, raw, api_key)
        except _HttpError as exc:
            status = exc.code
            self._send_error(protocol, exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 -- a bug in the server answers 500
            status = 500
            self._send_error(protocol, 500, f"local server error: {type(exc).__name__}: {exc}")
        finally:
            call.status = status
            call.finished = time.monotonic()

    def _serve_generation(self, protocol: str, path: str, raw: bytes, api_key: str | None) -> None:
        llm = self.llm
        call: LlmCall | None = None
        headers = {"x-request-id": llm._new_id("req_")} if protocol == "openai" else {}
        try:
            if api_key is None:
                raise _HttpError(401, "Missing API key.")
            body = self._json_body(raw)
            model = ""
            if protocol == "gemini":
                m = _GEMINI_GENERATE.match(path)
                model = m.group(3) if m else ""
                if m and m.group(2) == "tunedModels":
                    model = f"tunedModels/{model}"
                vertex = _VERTEX_GENERATE.match(path)
                if vertex:
                    model = vertex.group(4)
            if protocol == "openai" and isinstance(body, dict) and body.get("stream"):
                raise _HttpError(400, "stream=true is not supported by the local server.")
            call = llm._make_call(protocol, model, body, kind="generate", path=path, api_key=api_key)
            llm._record(call, in_flight=True)
            try:
                payload = llm._generate(call, direct=True)
            finally:
                llm._leave()
            call.status = 200
            call.finished = time.monotonic()  # before the client can see the answer
            self._send(200, payload, headers=headers)
        except _HttpError as exc:
            if call is not None:
                call.status = exc.code
                call.finished = time.monotonic()
            fault = call.fault if call is not None else None
            if fault is not None and fault.kind == "status" and fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._send_error(protocol, exc.code, exc.message, headers)
        except _Dropped:
            if call is not None:
                call.status = 0
                call.finished = time.monotonic()
            self._drop()
        finally:
            if call is not None and call.finished is None:
                call.finished = time.monotonic()

    # ---- management endpoints

    def _manage(self, method: str, path: str, query: dict, raw: bytes, api_key: str | None) -> int:
        llm = self.llm
        # OpenAI files
        if path == "/v1/files" and method == "POST":
            fields = _parse_multipart(self.headers.get("Content-Type") or "", raw)
            upload = fields.get("file")
            if upload is None:
                raise _HttpError(400, "Missing file.")
            filename, data = upload
            purpose = (fields.get("purpose") or (None, b"batch"))[1].decode()
            stored = llm._store_file("openai", data, filename or "upload.jsonl", purpose,
                                     "application/jsonl")
            self._send(200, llm._openai_file_json(stored))
            return 200
        m = _OPENAI_FILE.match(path)
        if m:
            stored = llm._file(m.group(1), "openai")
            if method == "GET" and m.group(2):
                self._send(200, stored.data, content_type="application/octet-stream")
            elif method == "GET":
                self._send(200, llm._openai_file_json(stored))
            elif method == "DELETE":
                with llm._lock:
                    llm._files.pop(stored.id, None)
                self._send(200, {"id": stored.id, "object": "file", "deleted": True})
            else:
                raise _HttpError(405, "Method not allowed.")
            return 200
        # OpenAI batches
        if path == "/v1/batches" and method == "POST":
            body = self._json_body(raw)
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            batch = llm._openai_batch_create(body, api_key)
            self._send(200, llm._openai_batch_json(batch, poll=False))
            return 200
        m = _OPENAI_BATCH.match(path)
        if m:
            batch = llm._batch(m.group(1), "openai")
            if m.group(2) and method == "POST":
                batch.cancelled = True
            elif method != "GET" or m.group(2):
                raise _HttpError(405, "Method not allowed.")
            self._send(200, llm._openai_batch_json(batch, poll=True))
            return 200
        # Gemini resumable upload
        if path == "/upload/v1beta/files" and method == "POST":
            return self._gemini_upload(query, raw)
        m = _GEMINI_GENERATE.match(path)
        if m and method == "POST" and m.group(4) == "batchGenerateContent":
            body = self._json_body(raw)
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            batch = llm._gemini_batch_create(m.group(3), body, api_key)
            self._send(200, llm._gemini_batch_json(batch, poll=False))
            return 200
        m = _GEMINI_BATCH.match(path)
        if m:
            batch = llm._batch(m.group(2), "gemini")
            if m.group(3) and method == "POST":
                batch.cancelled = True
                self._send(200, {})
            elif method == "GET" and not m.group(3):
                self._send(200, llm._gemini_batch_json(batch, poll=True))
            elif method == "DELETE" and not m.group(3):
                with llm._lock:
                    llm._batches.pop(batch.id, None)
                self._send(200, {})
            else:
                raise _HttpError(405, "Method not allowed.")
            return 200
        m = _GEMINI_FILE.match(path)
        if m:
            stored = llm._file(m.group(2), "gemini")
            if method == "GET" and m.group(3):
                self._send(200, stored.data, content_type="application/octet-stream")
            elif method == "GET":
                self._send(200, llm._gemini_file_json(stored))
            elif method == "DELETE" and not m.group(3):
                with llm._lock:
                    llm._files.pop(stored.id, None)
                self._send(200, {})
            else:
                raise _HttpError(405, "Method not allowed.")
            return 200
        raise _HttpError(404, f"No route for {method} {path}.")

    def _gemini_upload(self, query: dict, raw: bytes) -> int:
        llm = self.llm
        command = (self.headers.get("X-Goog-Upload-Command") or "").lower()
        commands = {c.strip() for c in command.split(",")}
        upload_id = (query.get("upload_id") or [None])[0]
        if "start" in commands:
            body = self._json_body(raw)
            meta = body.get("file") if isinstance(body, dict) and isinstance(body.get("file"), dict) else {}
            upload_id = llm._new_id()
            with llm._lock:
                llm._uploads[upload_id] = {
                    "data": bytearray(),
                    "mime": self.headers.get("X-Goog-Upload-Header-Content-Type")
                    or _g(meta, "mimeType") or "application/octet-stream",
                    "display": _g(meta, "displayName") or self.headers.get("X-Goog-Upload-File-Name")
                    or "",
                    "name": str(meta.get("name") or "").removeprefix("files/") or None,
                }
            url = f"{llm.url}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
            self._send(200, {}, headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
            return 200
        with llm._lock:
            state = llm._uploads.get(upload_id or "")
        if state is None:
            raise _HttpError(404, "Unknown upload session.")
        offset = int(self.headers.get("X-Goog-Upload-Offset") or len(state["data"]))
        if offset != len(state["data"]):
            raise _HttpError(400, f"Upload offset {offset} != {len(state['data'])} received so far.")
        if "upload" in commands:
            state["data"].extend(raw)
        if "finalize" not in commands:
            self._send(200, b"", headers={"X-Goog-Upload-Status": "active"}, content_type="text/plain")
            return 200
        with llm._lock:
            llm._uploads.pop(upload_id or "", None)
        stored = llm._store_file("gemini", bytes(state["data"]), state["display"], "upload",
                                 state["mime"])
        if state["name"]:
            with llm._lock:
                llm._files.pop(stored.id, None)
                stored.id = state["name"]
                llm._files[stored.id] = stored
        self._send(200, {"file": llm._gemini_file_json(stored)}, headers={"X-Goog-Upload-Status": "final"})
        return 200


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    if "multipart/form-data" not in content_type:
        raise _HttpError(400, "Expected a multipart/form-data body.")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = (part.get_filename(), payload)
    return fields


__all__ = ["DEFAULT_SENTENCE", "MALFORMED_ANSWER", "Fault", "LlmCall", "LocalLlmServer",
           "default_responder", "schema_instance"]

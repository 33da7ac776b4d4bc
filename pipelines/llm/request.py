"""One request to a language model, independent of the provider, and its cache key."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache, cached_property

from pydantic import BaseModel

from schemas.common import TemplateRef

# Image tokens are billed per provider; these are what a 512 px crop costs, used only for
# estimates and for client-side token limits before the provider reports the real count
# (Gemini: 258 tokens per image up to 384 px, tiles of 768 px above; OpenAI high detail:
# 85 + 170 per 512 px tile).
IMAGE_TOKENS = {"gemini": 258, "openai": 255, "openai-compatible": 255}
CHARS_PER_TOKEN = 4


@cache
def _schema_json(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema())


@dataclass(frozen=True)
class ImagePart:
    data: bytes
    mime_type: str = "image/png"

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def b64(self) -> str:
        """The bytes as base64, as the providers take them inline.  A pair's crops go into
        most of its prompts, so each is encoded once."""
        return base64.b64encode(self.data).decode()

    @property
    def data_url(self) -> str:
        """The image inline, as the chat-completions protocol takes it."""
        return f"data:{self.mime_type};base64,{self.b64}"

    @property
    def extension(self) -> str:
        return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}[self.mime_type]


@dataclass(frozen=True)
class LlmRequest:
    """A rendered prompt: system and user text, images (in order), and the pydantic model
    the answer must validate against (its JSON schema goes to the provider).

    `correction` is set on the one retry after an invalid answer: the answer given and
    what was wrong with it, so the model can fix it.
    """

    template: TemplateRef
    system: str
    user: str
    schema: type[BaseModel]
    images: tuple[ImagePart, ...] = ()
    temperature: float = 0.0
    max_output_tokens: int = 1024
    correction: tuple[str, str] | None = field(default=None)

    def json_schema(self) -> dict:
        """The answer's JSON schema, a fresh copy (pydantic takes a millisecond or two to
        generate it, under the GIL, and every call needs it twice)."""
        return json.loads(_schema_json(self.schema))

    def key(self, backend: str, model: str) -> str:
        """Content address: everything that can change the answer, nothing else (no key,
        no URL: the same model behind another endpoint answers the same)."""
        identity = {
            "backend": backend, "model": model, "template": self.template.model_dump(),
            "system": self.system, "user": self.user, "images": [f"{i.mime_type}:{i.sha256}" for i in self.images],
            "temperature": float(self.temperature), "max_output_tokens": int(self.max_output_tokens),
            "schema": self.json_schema(), "correction": list(self.correction or ()),
        }
        canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def estimated_input_tokens(self, backend: str) -> int:
        text = len(self.system) + len(self.user) + sum(len(t) for t in self.correction or ())
        return text // CHARS_PER_TOKEN + IMAGE_TOKENS.get(backend, 258) * len(self.images)

    def corrected(self, answer: str, error: str) -> LlmRequest:
        """The retry after an invalid answer."""
        from dataclasses import replace

        return replace(self, correction=(answer, error))

    def correction_text(self) -> str:
        if self.correction is None:
            return ""
        return ("Your answer did not match the required JSON schema: "
                f"{self.correction[1]}\nAnswer again with JSON that matches it exactly.")

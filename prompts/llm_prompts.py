"""The prompt templates of the LLM layer (`prompts/data/llm_prompts.yaml`), validated on load.

A template renders to a system text and a user text; its `TemplateRef` (id and content
hash) goes into the provenance of every sample it helped write and into every cache key.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from schemas.common import TemplateRef

IMAGE_KINDS = ("real", "fake", "real_outlined", "fake_outlined")


@dataclass(frozen=True)
class PromptTemplate:
    key: str
    id: str
    system: str
    user: str
    fields: tuple[str, ...]
    images: tuple[str, ...]

    @property
    def ref(self) -> TemplateRef:
        digest = hashlib.sha256(f"{self.system}\x1f{self.user}".encode()).hexdigest()[:12]
        return TemplateRef(id=self.id, version=digest)

    def render(self, **fields: str) -> tuple[str, str]:
        """(system, user) with the fields filled in; every field must be given."""
        missing = set(self.fields) - set(fields)
        extra = set(fields) - set(self.fields)
        if missing or extra:
            raise ValueError(f"{self.id}: missing fields {sorted(missing)}, unknown {sorted(extra)}")
        return self.system.strip(), self.user.format(**fields).strip()


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


@dataclass(frozen=True)
class PromptLibrary:
    version: int
    templates: dict[str, PromptTemplate]

    def __getitem__(self, key: str) -> PromptTemplate:
        return self.templates[key]

    def refs(self) -> list[TemplateRef]:
        return [t.ref for t in self.templates.values()]


REQUIRED = ("concept_explanation", "parent_aggregation", "image_aggregation", "rating")


@cache
def load_prompts(path: str | None = None) -> PromptLibrary:
    """FiFa's bundled templates, or those of a YAML file in the same format."""
    return parse_prompts(_text(path, "data/llm_prompts.yaml"), REQUIRED, IMAGE_KINDS)


FACE_REQUIRED = ("expression", "au", "attribute", "age", "deepfake", "rating")
FACE_IMAGE_KINDS = ("media",)  # the item's face crop, or a video's sampled crop frames


@cache
def load_face_prompts(path: str | None = None) -> PromptLibrary:
    """FaceInstruct's bundled templates (one description template per task and the rating
    template), or those of a YAML file in the same format."""
    return parse_prompts(_text(path, "data/faceinstruct_prompts.yaml"), FACE_REQUIRED, FACE_IMAGE_KINDS)


def _text(path: str | None, bundled: str) -> str:
    if path is None:
        return resources.files("prompts").joinpath(bundled).read_text(encoding="utf-8")
    return Path(path).read_text(encoding="utf-8")


def parse_prompts(text: str, required: tuple[str, ...], image_kinds: tuple[str, ...]) -> PromptLibrary:
    """A prompt file's templates, checked: every key of `required` present, each template's
    user text using exactly its `fields`, images only of `image_kinds`."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
        raise ValueError("a prompt file needs a `templates` mapping")  # noqa: TRY004 - one error type for a bad file
    templates = {}
    for key, spec in data["templates"].items():
        where = f"templates.{key}"
        try:
            template = PromptTemplate(key=key, id=spec["id"], system=spec["system"], user=spec["user"],
                                      fields=tuple(spec["fields"]), images=tuple(spec.get("images", ())))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: needs id, system, user and fields ({exc})") from None
        used = _placeholders(template.user)
        if _placeholders(template.system):
            raise ValueError(f"{where}: the system text takes no fields")
        if used != set(template.fields):
            raise ValueError(f"{where}: the user text uses {sorted(used)}, `fields` lists "
                             f"{sorted(template.fields)}")
        unknown = set(template.images) - set(image_kinds)
        if unknown:
            raise ValueError(f"{where}: unknown image kinds {sorted(unknown)}; choose from {image_kinds}")
        templates[key] = template
    missing = set(required) - set(templates)
    if missing:
        raise ValueError(f"the prompt file lacks templates {sorted(missing)}")
    return PromptLibrary(version=int(data.get("version", 1)), templates=templates)

"""FaceInstruct's instruction library: 100 handcrafted user instructions per task.

Face-LLaVA pairs every description with one of 100 instructions per task.  The library is
one YAML file, `prompts/data/faceinstruct_instructions.yaml`, validated on load.  A
phrasing names its medium only through `{media}`, which `FaceInstructions.instruction`
fills with "image" or "video" after prepending the medium's token ("<image>\\n" or
"<video>\\n", the Video-LLaVA convention).  The choice hashes `f"{seed}:{task}:{key}"`
with sha256 (as `prompts.instructions` does), so a sample gets the same phrasing in every
process and on every machine, whatever its medium.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from prompts.instructions import _STRAY, normalise
from schemas.common import TemplateRef
from schemas.faceinstruct import MEDIA_TYPES, TASKS

PHRASINGS_PER_TASK = 100
MEDIA = "{media}"
MEDIA_TOKENS = {"image": "<image>", "video": "<video>"}
TEMPLATE_ID = "faceinstruct_instructions"
FILENAME = f"{TEMPLATE_ID}.yaml"
assert tuple(MEDIA_TOKENS) == MEDIA_TYPES
# "a {media}" reads wrongly for "image" and "an {media}" for "video".
_ARTICLE = re.compile(r"\ban?\s+\{media\}", re.IGNORECASE)


# A malformed file raises ValueError whatever is wrong with it (shape included), so
# callers catch one exception type; hence the TRY004 waivers below.
def _check_phrasing(where: str, text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: phrasing must be a non-empty string, got {text!r}")
    if text.count(MEDIA) > 1:
        raise ValueError(f"{where}: {MEDIA} may appear at most once, found {text.count(MEDIA)} in {text!r}")
    if _ARTICLE.search(text):
        raise ValueError(f"{where}: no 'a'/'an' before {MEDIA} (it reads wrongly for one medium): {text!r}")
    stray = _STRAY.search(text.replace(MEDIA, ""))
    if stray:
        raise ValueError(
            f"{where}: stray placeholder or token {stray.group()!r} in {text!r} "
            f"(only {MEDIA} is allowed; the loader adds the media token)"
        )
    return text


def _validate(raw: object) -> tuple[int, dict[str, tuple[str, ...]]]:
    if not isinstance(raw, dict):
        raise ValueError("instruction library must be a mapping with `version` and `tasks`")  # noqa: TRY004
    unknown = sorted(set(raw) - {"version", "tasks"})
    if unknown:
        raise ValueError(f"unknown top-level keys {unknown}; expected `version` and `tasks`")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    raw_tasks = raw.get("tasks")
    if not isinstance(raw_tasks, dict):
        raise ValueError(f"`tasks` must map each of {list(TASKS)} to a list of phrasings")  # noqa: TRY004
    missing = [t for t in TASKS if t not in raw_tasks]
    unknown = [t for t in raw_tasks if t not in TASKS]
    if missing or unknown:
        raise ValueError(f"tasks: missing {missing}, unknown {unknown}; expected exactly {list(TASKS)}")

    tasks: dict[str, tuple[str, ...]] = {}
    owner: dict[str, tuple[str, str]] = {}  # normalised phrasing -> (task, text)
    for task in TASKS:
        where = f"tasks.{task}"
        items = raw_tasks[task]
        if not isinstance(items, list):
            raise ValueError(f"{where}: expected a list of phrasings, got {type(items).__name__}")  # noqa: TRY004
        for text in items:
            _check_phrasing(where, text)
            # Across tasks too: one instruction under two tasks would ask for two outputs.
            seen = owner.get(normalise(text))
            if seen is not None:
                raise ValueError(
                    f"{where}: duplicate phrasing {text!r} (same as {seen[1]!r} under tasks.{seen[0]})"
                )
            owner[normalise(text)] = (task, text)
        if len(items) != PHRASINGS_PER_TASK:
            raise ValueError(f"{where}: {len(items)} phrasings, need exactly {PHRASINGS_PER_TASK}")
        tasks[task] = tuple(items)
    return version, tasks


@dataclass(frozen=True)
class FaceInstructions:
    """A validated library: `PHRASINGS_PER_TASK` raw phrasings (with `{media}`) per task."""

    version: int  # the file's `version` field
    template: TemplateRef  # id TEMPLATE_ID, version = first 12 hex digits of sha256 over the file
    tasks: dict[str, tuple[str, ...]]

    def phrasings(self, task: str) -> tuple[str, ...]:
        """The task's raw phrasings, `{media}` unfilled, in file order."""
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")
        return self.tasks[task]

    def choose(self, task: str, key: str, seed: int = 0) -> tuple[int, str]:
        """(index, raw phrasing) for `key`: the same in every process, spread evenly over keys."""
        options = self.phrasings(task)
        digest = hashlib.sha256(f"{seed}:{task}:{key}".encode()).digest()
        index = int.from_bytes(digest[:8], "big") % len(options)
        return index, options[index]

    def instruction(self, task: str, media_type: str, key: str, seed: int = 0) -> str:
        """The human turn: the media token, a newline, the chosen phrasing with `{media}` filled."""
        if media_type not in MEDIA_TOKENS:
            raise ValueError(f"unknown media type {media_type!r}; choose from {list(MEDIA_TYPES)}")
        _, text = self.choose(task, key, seed)
        return f"{MEDIA_TOKENS[media_type]}\n{text.replace(MEDIA, media_type)}"


def _parse(data: bytes, name: str) -> FaceInstructions:
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: not valid YAML: {exc}") from exc
    try:
        version, tasks = _validate(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    template = TemplateRef(id=TEMPLATE_ID, version=hashlib.sha256(data).hexdigest()[:12])
    return FaceInstructions(version=version, template=template, tasks=tasks)


@cache
def _default() -> FaceInstructions:
    return _parse(resources.files("prompts").joinpath("data", FILENAME).read_bytes(), FILENAME)


def load_face_instructions(path: Path | None = None) -> FaceInstructions:
    """The validated library (the packaged file, cached, or the YAML file at `path`).

    Raises ValueError naming the file, the task and the offending phrasing.
    """
    if path is None:
        return _default()
    file = Path(path)
    return _parse(file.read_bytes(), str(file))

"""Instruction libraries: question and answer phrasings per task, picked deterministically.

A library is one YAML file, `prompts/data/{name}_instructions.yaml`, validated on load.
Choices hash `f"{seed}:{kind}:{key}"` with sha256, so the phrasing a sample gets is the
same in every process and on every machine (Python's `hash()` is salted per process).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from schemas.fifa import TASKS

# Placeholders each answer kind must hold exactly once (filled by `answer`).
ANSWER_FIELDS: dict[str, tuple[str, ...]] = {
    "det_fake": (),
    "det_real": (),
    "cls": ("category",),
    "region_negative": ("region",),
    "box_negative": (),
    "loc": (),
}
MIN_PHRASINGS = 30
MIN_ANSWERS = 10
IMAGE_TOKEN = "<image>"
REGION = "{region}"
CATEGORY = "{category}"
BBOX = "<bbox>"
SEG = "[SEG]"
_TOKENS = (REGION, CATEGORY, BBOX, SEG)
# Anything token-like left after the known tokens are removed: braces (a typo'd or
# unknown placeholder), <...> tags such as a stray <image>, [UPPER] special tokens.
_STRAY = re.compile(r"[{}]|<[^<>\s]*>|\[[A-Z_]+\]")
_LOC_END = re.compile(r"\[SEG\]\.?$")
_NAME = re.compile(r"[a-z0-9_]+")


def normalise(text: str) -> str:
    """The form two phrasings are compared in: lower case, single spaces, no end punctuation."""
    return " ".join(text.lower().split()).rstrip(".?! ")


def _question_tokens(task: str) -> set[str]:
    if task.startswith("r_"):
        return {REGION}
    if task.startswith("b_"):
        return {BBOX}
    return set()


# A malformed file raises ValueError whatever is wrong with it (shape included), so
# callers catch one exception type; hence the TRY004 waivers below.
def _check_tokens(where: str, text: object, required: set[str]) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: phrasing must be a non-empty string, got {text!r}")
    for token in _TOKENS:
        want = 1 if token in required else 0
        if text.count(token) != want:
            raise ValueError(
                f"{where}: {token} must appear {want} time(s), "
                f"found {text.count(token)} in {text!r}"
            )
    rest = text
    for token in required:
        rest = rest.replace(token, "")
    stray = _STRAY.search(rest)
    if stray:
        raise ValueError(f"{where}: stray placeholder or token {stray.group()!r} in {text!r}")


def _check_list(where: str, items: object, required: set[str], minimum: int) -> tuple[str, ...]:
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of phrasings, got {type(items).__name__}")  # noqa: TRY004
    seen: dict[str, str] = {}
    for text in items:
        _check_tokens(where, text, required)
        key = normalise(text)
        if key in seen:
            raise ValueError(f"{where}: duplicate phrasing {text!r} (same as {seen[key]!r})")
        seen[key] = text
    if len(items) < minimum:
        raise ValueError(f"{where}: {len(items)} distinct phrasings, need at least {minimum}")
    return tuple(items)


def _validate(raw: object) -> tuple[int, dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    if not isinstance(raw, dict):
        raise ValueError("instruction library must be a mapping with version, tasks, answers")  # noqa: TRY004
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    raw_tasks, raw_answers = raw.get("tasks"), raw.get("answers")
    if not isinstance(raw_tasks, dict) or not isinstance(raw_answers, dict):
        raise ValueError("instruction library needs `tasks` and `answers` mappings")  # noqa: TRY004

    missing = [t for t in TASKS if t not in raw_tasks]
    unknown = [t for t in raw_tasks if t not in TASKS]
    if missing or unknown:
        raise ValueError(f"tasks: missing {missing}, unknown {unknown}")
    tasks: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for task in TASKS:
        where = f"tasks.{task}"
        tasks[task] = _check_list(where, raw_tasks[task], _question_tokens(task), MIN_PHRASINGS)
        # One phrasing under two tasks would teach the model two output kinds for it.
        for text in tasks[task]:
            other = owner.setdefault(normalise(text), task)
            if other != task:
                raise ValueError(f"{where}: phrasing {text!r} also appears under tasks.{other}")

    missing = [k for k in ANSWER_FIELDS if k not in raw_answers]
    unknown = [k for k in raw_answers if k not in ANSWER_FIELDS]
    if missing or unknown:
        raise ValueError(f"answers: missing {missing}, unknown {unknown}")
    answers: dict[str, tuple[str, ...]] = {}
    for kind, fields in ANSWER_FIELDS.items():
        where = f"answers.{kind}"
        required = {"{" + f + "}" for f in fields} | ({SEG} if kind == "loc" else set())
        answers[kind] = _check_list(where, raw_answers[kind], required, MIN_ANSWERS)
        for text in answers[kind]:
            if kind == "loc" and not _LOC_END.search(text):
                raise ValueError(f"{where}: {SEG} must end the phrasing (before an optional '.'): {text!r}")
    return version, tasks, answers


@dataclass(frozen=True)
class InstructionLibrary:
    """A validated library: question phrasings per task, answer phrasings per kind."""

    name: str
    version: int
    content_hash: str  # first 12 hex digits of sha256 over the file's bytes
    tasks: dict[str, tuple[str, ...]]
    answers: dict[str, tuple[str, ...]]

    def template_id(self, task: str) -> str:
        """Provenance id of a task's question set, e.g. 'fifa_instructions/i_age@v1'."""
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; known: {sorted(self.tasks)}")
        return f"{self.name}_instructions/{task}@v{self.version}"

    def choose(self, kind: str, key: str, seed: int = 0, section: str = "tasks") -> tuple[int, str]:
        """(index, phrasing) for `key`: the same in every process, spread evenly over keys."""
        if section not in ("tasks", "answers"):
            raise ValueError(f"section must be 'tasks' or 'answers', got {section!r}")
        options = getattr(self, section).get(kind)
        if options is None:
            raise ValueError(f"unknown {section} kind {kind!r}; known: {sorted(getattr(self, section))}")
        # The section is part of the hash so a question and its answer are chosen
        # independently even when they share a kind name (cls).
        digest = hashlib.sha256(f"{seed}:{section}:{kind}:{key}".encode()).digest()
        index = int.from_bytes(digest[:8], "big") % len(options)
        return index, options[index]

    def question(self, task: str, key: str, seed: int = 0, region: str | None = None) -> str:
        """'<image>\\n' + the chosen phrasing; r_ tasks need `region`, the others refuse one."""
        if task.startswith("r_"):
            if not region:
                raise ValueError(f"task {task!r} needs a region name")
        elif region is not None:
            raise ValueError(f"task {task!r} takes no region (got {region!r})")
        _, text = self.choose(task, key, seed)
        if region:
            text = text.replace(REGION, region)
        return f"{IMAGE_TOKEN}\n{text}"

    def answer(self, kind: str, key: str, seed: int = 0, **fields: str) -> str:
        """The chosen answer phrasing with its placeholders filled; exactly the kind's fields."""
        if kind not in ANSWER_FIELDS:
            raise ValueError(f"unknown answer kind {kind!r}; known: {sorted(ANSWER_FIELDS)}")
        if set(fields) != set(ANSWER_FIELDS[kind]):
            raise ValueError(
                f"answer kind {kind!r} takes fields {list(ANSWER_FIELDS[kind])}, got {sorted(fields)}"
            )
        _, text = self.choose(kind, key, seed, section="answers")
        for field, value in fields.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"answer field {field!r} must be a non-empty string, got {value!r}")
            # str.replace, not str.format: values may hold braces and are never re-parsed.
            text = text.replace("{" + field + "}", value)
        return text


@cache
def load_library(name: str = "fifa", path: str | Path | None = None) -> InstructionLibrary:
    """The validated library `name`; raises ValueError naming the offending task or phrasing.

    `path` overrides the packaged data: a YAML file, or a directory holding
    `{name}_instructions.yaml`.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"library name must match [a-z0-9_]+, got {name!r}")
    filename = f"{name}_instructions.yaml"
    if path is None:
        data = resources.files("prompts").joinpath("data", filename).read_bytes()
    else:
        file = Path(path)
        data = (file / filename if file.is_dir() else file).read_bytes()
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ValueError(f"{filename}: not valid YAML: {exc}") from exc
    version, tasks, answers = _validate(raw)
    return InstructionLibrary(
        name=name, version=version, content_hash=hashlib.sha256(data).hexdigest()[:12],
        tasks=tasks, answers=answers,
    )

"""The FaceInstruct instruction library: 100 distinct phrasings per task, the {media}
placeholder and token prefix, deterministic even choice, validation of malformed files,
and a measure of the phrasings' variety."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml

from prompts.faceinstruct_instructions import (
    MEDIA_TOKENS,
    PHRASINGS_PER_TASK,
    load_face_instructions,
)
from prompts.instructions import normalise
from schemas.faceinstruct import MEDIA_TYPES, TASKS
from tests import REPO

KEYS = [f"dfew/clip_{k:05d}.mp4" for k in range(2000)]
DATA = resources.files("prompts").joinpath("data", "faceinstruct_instructions.yaml")
# The published examples the reference quotes (Face-LLaVA assets/good_prompts/*.txt),
# medium word turned into {media}.
PUBLISHED = {
    "expression": ["What feeling does the {media} evoke?", "Identify the emotion conveyed in the {media}.",
                   "What emotion is shown in the {media}?", "Tell me about the emotions in the {media}."],
    "au": ["Identify the active facial action units in the provided {media}.",
           "Specify which facial action units are present in the {media}.",
           "List the facial action units visible in the supplied {media}."],
    "age": ["Guess the age of the individual shown in the {media}; justify your answer.",
            "Determine the approximate age of the person depicted, providing your reasoning.",
            "What age would you assign to the person in this {media}, and why?"],
    "attribute": ["Analyze the facial characteristics shown in the {media}.",
                  "Identify the visible features of the face in the {media}.",
                  "Describe the person's face as seen in the {media}."],
    "deepfake": ["Is there any evidence of manipulation or fakery in the {media}?",
                 "Do you suspect the {media} has been tampered with?",
                 "Is the {media} genuine, or do you think it's been altered?"],
}


@pytest.fixture(scope="module")
def lib():
    return load_face_instructions()


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(DATA.read_bytes())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9'{}-]+", text.lower())


# --- the shipped file --------------------------------------------------------------------


def test_shipped_file_has_100_distinct_phrasings_per_task(lib):
    assert PHRASINGS_PER_TASK == 100
    assert tuple(lib.tasks) == TASKS
    everywhere = Counter()
    for task in TASKS:
        phrasings = lib.phrasings(task)
        assert len(phrasings) == 100, task
        assert len({normalise(p) for p in phrasings}) == 100, task
        everywhere.update(normalise(p) for p in phrasings)
    assert [p for p, n in everywhere.items() if n > 1] == []


def test_template_ref_is_the_content_hash_and_default_is_cached(lib):
    assert lib.template.id == "faceinstruct_instructions"
    assert lib.template.version == hashlib.sha256(DATA.read_bytes()).hexdigest()[:12]
    assert load_face_instructions() is lib
    # The same bytes loaded from a path give the same provenance.
    assert load_face_instructions(Path(str(DATA))).template == lib.template


def test_published_examples_are_included(lib):
    for task, examples in PUBLISHED.items():
        for text in examples:
            assert text in lib.phrasings(task), (task, text)


def test_phrasings_name_their_medium_only_through_the_placeholder(lib):
    medium = re.compile(r"\b(image|video|pictures?|photo\w*|clips?|footage|frames?|snapshot|recording|"
                        r"movie|film|over time|throughout|moving)\b", re.IGNORECASE)
    for task in TASKS:
        phrasings = lib.phrasings(task)
        for p in phrasings:
            assert p.count("{media}") <= 1, p
            assert not medium.search(p), p
            assert not re.search(r"\ban? \{media\}", p, re.IGNORECASE), p
            assert not re.search(r"[{}]", p.replace("{media}", "")), p
            assert not re.search(r"<[^>]*>|\[[A-Z_]+\]", p), p
        # Both kinds: some name the medium, some do not.
        with_media = sum("{media}" in p for p in phrasings)
        assert 15 <= with_media <= 85, (task, with_media)


def test_no_phrasing_presupposes_the_answer(lib):
    labels = re.compile(r"\b(happy|happiness|sad|sadness|angry|anger|afraid|fearful|disgusted|surprised|"
                        r"disgust|fear)\b", re.IGNORECASE)
    for p in lib.phrasings("expression"):
        assert not re.match(r"why\b", p, re.IGNORECASE), p
        assert not labels.search(p), p  # no class named (the sources' label sets differ)
    for p in lib.phrasings("deepfake"):
        assert not re.search(r"\bwhy (it|the \{media\}|this face) is (fake|real)\b", p, re.IGNORECASE), p
    for p in lib.phrasings("au"):
        assert not re.search(r"\bAU ?\d", p), p  # no single unit asked about by number
    for p in lib.phrasings("age"):
        assert not re.search(r"\b(child|teen\w*|elderly|old man|old woman|young|\d+)\b", p, re.IGNORECASE), p


# --- choice and rendering ----------------------------------------------------------------


def test_choice_matches_sha256_of_seed_task_key(lib):
    for task in TASKS:
        for seed in (0, 7):
            for key in KEYS[:50]:
                digest = hashlib.sha256(f"{seed}:{task}:{key}".encode()).digest()
                index = int.from_bytes(digest[:8], "big") % 100
                assert lib.choose(task, key, seed) == (index, lib.phrasings(task)[index])
    # A pinned value, so a change in the scheme cannot pass by changing both sides.
    assert lib.choose("expression", "dfew/clip_00000.mp4")[0] == 49


def test_choice_is_the_same_in_another_process(lib):
    code = ("from prompts.faceinstruct_instructions import load_face_instructions as L\n"
            "f = L()\n"
            "for k in range(40):\n"
            "    for t in ('expression', 'deepfake'):\n"
            "        print(repr(f.instruction(t, 'video', f'key-{k}', seed=3)))\n")
    expected = "".join(repr(lib.instruction(t, "video", f"key-{k}", seed=3)) + "\n"
                       for k in range(40) for t in ("expression", "deepfake"))
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True)
        assert out.stdout == expected


def test_every_phrasing_is_used_and_none_dominates(lib):
    for task in TASKS:
        counts = Counter(lib.choose(task, key)[0] for key in KEYS)
        mean = len(KEYS) / PHRASINGS_PER_TASK
        assert len(counts) == PHRASINGS_PER_TASK, task
        assert max(counts.values()) <= 3 * mean, (task, counts.most_common(1))


def test_seed_and_task_change_the_choice(lib):
    same_seed = sum(lib.choose("age", k, 0)[0] == lib.choose("age", k, 1)[0] for k in KEYS)
    same_task = sum(lib.choose("age", k)[0] == lib.choose("attribute", k)[0] for k in KEYS)
    assert same_seed < 60 and same_task < 60  # about 20 by chance


def test_instruction_prefix_and_filled_medium(lib):
    for task in TASKS:
        for key in KEYS[:300]:
            _, raw_text = lib.choose(task, key)
            for media_type in MEDIA_TYPES:
                text = lib.instruction(task, media_type, key)
                assert text.startswith(f"<{media_type}>\n"), text
                body = text.split("\n", 1)[1]
                assert "{" not in text and "}" not in text, text
                assert "<" not in body and "\n" not in body, text
                assert body == raw_text.replace("{media}", media_type)
    assert MEDIA_TOKENS == {"image": "<image>", "video": "<video>"}
    assert lib.instruction("expression", "video", "x") != lib.instruction("expression", "image", "x")


def test_unknown_task_or_media_type_names_the_choices(lib):
    with pytest.raises(ValueError, match=r"unknown task 'emotion'.*expression.*deepfake"):
        lib.instruction("emotion", "video", "k")
    with pytest.raises(ValueError, match=r"unknown media type 'audio'.*image.*video"):
        lib.instruction("expression", "audio", "k")
    with pytest.raises(ValueError, match="unknown task"):
        lib.phrasings("fifa")


# --- malformed files ---------------------------------------------------------------------


def load_variant(tmp_path: Path, raw: dict):
    path = tmp_path / "faceinstruct_instructions.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_face_instructions(path)


def test_an_unchanged_copy_loads(tmp_path, raw):
    assert load_variant(tmp_path, raw).tasks == load_face_instructions().tasks


def test_missing_task(tmp_path, raw):
    del raw["tasks"]["age"]
    with pytest.raises(ValueError, match=r"missing \['age'\]"):
        load_variant(tmp_path, raw)


def test_unknown_task(tmp_path, raw):
    raw["tasks"]["emotion"] = raw["tasks"].pop("expression")
    with pytest.raises(ValueError, match=r"missing \['expression'\], unknown \['emotion'\]"):
        load_variant(tmp_path, raw)


def test_99_or_101_phrasings(tmp_path, raw):
    raw["tasks"]["au"].pop()
    with pytest.raises(ValueError, match=r"tasks\.au: 99 phrasings, need exactly 100"):
        load_variant(tmp_path, raw)
    raw["tasks"]["au"] += ["Which AUs fire here?", "Name the AUs, please."]
    with pytest.raises(ValueError, match=r"tasks\.au: 101 phrasings"):
        load_variant(tmp_path, raw)


def test_duplicate_within_a_task_after_normalising(tmp_path, raw):
    raw["tasks"]["age"][50] = "  how OLD is   this person!"
    with pytest.raises(ValueError, match=r"tasks\.age: duplicate phrasing '  how OLD.*'How old is this person\?'"):
        load_variant(tmp_path, raw)


def test_duplicate_across_tasks(tmp_path, raw):
    raw["tasks"]["deepfake"][20] = raw["tasks"]["expression"][20]
    with pytest.raises(ValueError, match=r"tasks\.deepfake: duplicate phrasing .*under tasks\.expression"):
        load_variant(tmp_path, raw)


@pytest.mark.parametrize(("text", "message"), [
    ("<image>\nWhat emotion is shown?", r"stray placeholder or token '<image>'"),
    ("What emotion does the <video> show?", r"stray placeholder or token '<video>'"),
    ("Is the face {label}?", r"stray placeholder or token '\{'"),
    ("Segment the face [SEG].", r"stray placeholder or token '\[SEG\]'"),
    ("Compare this {media} with the other {media}.", r"\{media\} may appear at most once"),
    ("What does an {media} of this face show?", r"no 'a'/'an' before \{media\}"),
    ("   ", r"phrasing must be a non-empty string"),
    (42, r"phrasing must be a non-empty string, got 42"),
])
def test_bad_phrasing(tmp_path, raw, text, message):
    raw["tasks"]["expression"][3] = text
    with pytest.raises(ValueError, match=r"tasks\.expression: " + message) as info:
        load_variant(tmp_path, raw)
    if isinstance(text, str) and text.strip():
        assert repr(text) in str(info.value)  # the offending text is quoted


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("version"), "version must be a positive integer"),
    (lambda r: r.update(version="1"), "version must be a positive integer"),
    (lambda r: r.update(extra=1), r"unknown top-level keys \['extra'\]"),
    (lambda r: r.update(tasks=["expression"]), "`tasks` must map"),
    (lambda r: r["tasks"].update(au="Which AUs?"), r"tasks\.au: expected a list"),
])
def test_bad_shape(tmp_path, raw, change, message):
    change(raw)
    with pytest.raises(ValueError, match=message):
        load_variant(tmp_path, raw)


def test_not_yaml_or_not_a_mapping(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("tasks: [unclosed", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_face_instructions(path)
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_face_instructions(path)


# --- variety -----------------------------------------------------------------------------
# Measured on the shipped file (version 1): the most shared three-word opening share is 6 %
# (deepfake; all of it among the published ten), the most common two-word opening 8 %, the
# most common first word 14 %; 22-56 % of each task's phrasings are questions, 11-38 % ask
# for reasons in so many words.


def test_openings_vary(lib):
    for task in TASKS:
        phrasings = lib.phrasings(task)
        three = Counter(" ".join(words(p)[:3]) for p in phrasings)
        shared = sum(n for n in three.values() if n > 1) / len(phrasings)
        assert shared <= 0.10, (task, shared, [o for o, n in three.items() if n > 1])
        two = Counter(" ".join(words(p)[:2]) for p in phrasings)
        assert two.most_common(1)[0][1] <= 10, (task, two.most_common(3))
        first = Counter(words(p)[0] for p in phrasings)
        assert first.most_common(1)[0][1] <= 20, (task, first.most_common(3))
        assert len(first) >= 30, (task, len(first))


def test_forms_and_lengths_vary(lib):
    reasoning = re.compile(r"\b(why|explain\w*|justif\w*|reason\w*|evidence|cues?|support\w*|how you can tell|"
                           r"rationale|what makes|leads you|clues?|indicators|how you detected)\b", re.IGNORECASE)
    for task in TASKS:
        phrasings = lib.phrasings(task)
        questions = sum(p.rstrip().endswith("?") for p in phrasings)
        assert 20 <= questions <= 80, (task, questions)
        lengths = [len(words(p)) for p in phrasings]
        assert sum(n <= 6 for n in lengths) >= 3 and sum(n >= 14 for n in lengths) >= 5, task
        asks_why = sum(bool(reasoning.search(p)) for p in phrasings)
        assert 10 <= asks_why <= 70, (task, asks_why)

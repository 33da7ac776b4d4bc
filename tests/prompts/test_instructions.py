"""The FiFa instruction library: coverage, placeholder rules, deterministic even choice."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from importlib import resources

import pytest
import yaml

from prompts.instructions import load_library, normalise
from schemas.fifa import TASKS
from tests import REPO

CATEGORIES = ("face editing", "face swap", "reenactment", "entire synthesis")
KEYS = [f"sample-{k:05d}" for k in range(2000)]


@pytest.fixture(scope="module")
def lib():
    return load_library()


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(resources.files("prompts").joinpath("data/fifa_instructions.yaml").read_bytes())


def test_eleven_tasks_with_thirty_distinct_phrasings(lib):
    assert len(lib.tasks) == 11 and set(lib.tasks) == set(TASKS)
    for task, phrasings in lib.tasks.items():
        distinct = {" ".join(p.lower().split()) for p in phrasings}
        assert len(distinct) == len(phrasings) >= 30, task


def test_no_phrasing_shared_between_tasks(lib):
    owners = Counter(normalise(p) for phrasings in lib.tasks.values() for p in phrasings)
    assert [p for p, n in owners.items() if n > 1] == []


def test_question_placeholders(lib):
    for task, phrasings in lib.tasks.items():
        for p in phrasings:
            assert not p.startswith("<image>") and "<image>" not in p, p
            assert p.count("{region}") == (1 if task.startswith("r_") else 0), p
            assert p.count("<bbox>") == (1 if task.startswith("b_") else 0), p
            assert "[SEG]" not in p
            assert not re.search(r"[{}]", p.replace("{region}", "")), p
            assert not re.search(r"<[^>]*>", p.replace("<bbox>", "")), p


def test_phrasings_ask_for_their_output_kind(lib):
    mask_words = re.compile(r"segment|mask", re.IGNORECASE)
    for task, phrasings in lib.tasks.items():
        kind = task.split("_")[-1]
        for p in phrasings:
            if kind == "age":
                assert mask_words.search(p) and re.search(r"expla|describ|why|tell|interpret|walk me through|analy[sz]|point out", p, re.IGNORECASE), p
            elif kind == "toe":
                assert not mask_words.search(p) and not re.search(r"locali[sz]", p, re.IGNORECASE), p
            elif kind == "loc":
                assert re.search(r"segment|mask|locali[sz]", p, re.IGNORECASE), p
                assert not re.search(r"expla(?!nation)|describ|why", p, re.IGNORECASE), p


def test_some_but_not_all_cls_questions_list_the_categories(lib):
    listing = [p for p in lib.tasks["cls"] if all(c in p for c in CATEGORIES)]
    assert 0 < len(listing) < len(lib.tasks["cls"]) // 2


def test_answer_rules(lib):
    a = lib.answers
    assert set(a) == {"det_fake", "det_real", "cls", "region_negative", "box_negative", "loc"}
    for kind, phrasings in a.items():
        assert len({normalise(p) for p in phrasings}) == len(phrasings) >= 10, kind
        for p in phrasings:
            assert p.count("{category}") == (kind == "cls"), p
            assert p.count("{region}") == (kind == "region_negative"), p
            assert p.count("[SEG]") == (kind == "loc"), p
            assert "<" not in p and ">" not in p, p
    assert all(re.search(r"\[SEG\]\.?$", p) for p in a["loc"])
    assert all("box" in p for p in a["box_negative"])
    # "a entire synthesis" would be ungrammatical, so no article before the category.
    assert not any(re.search(r"\ban? \{category\}", p) for p in a["cls"])


def test_answers_name_no_facial_concept(lib, tree):
    # A hallucination check matches FICT names in answers; fixed text must not add any.
    names = {n.name.lower() for n in tree.nodes} | {x.lower() for n in tree.nodes for x in n.aliases}
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b")
    for phrasings in lib.answers.values():
        for p in phrasings:
            text = p.lower().replace("{region}", "").replace("face image", "")
            assert not pattern.search(text), (p, pattern.search(text).group())


def test_metadata(lib):
    data = resources.files("prompts").joinpath("data/fifa_instructions.yaml").read_bytes()
    assert lib.version == 1
    assert lib.content_hash == hashlib.sha256(data).hexdigest()[:12]
    assert lib.template_id("i_age") == "fifa_instructions/i_age@v1"
    assert load_library() is lib
    with pytest.raises(ValueError):
        lib.template_id("nope")


def test_choice_follows_the_documented_hash(lib):
    for key in KEYS[:50]:
        digest = hashlib.sha256(f"3:tasks:i_loc:{key}".encode()).digest()
        index = int.from_bytes(digest[:8], "big") % len(lib.tasks["i_loc"])
        assert lib.choose("i_loc", key, seed=3) == (index, lib.tasks["i_loc"][index])
        assert lib.choose("i_loc", key, seed=3) == lib.choose("i_loc", key, seed=3)


def test_choice_is_the_same_in_a_fresh_process(lib):
    code = (
        "from prompts.instructions import load_library; "
        "lib = load_library(); "
        "print(*(lib.choose(k, 'sample-00042')[0] for k in lib.tasks))"
    )
    expected = " ".join(str(lib.choose(k, "sample-00042")[0]) for k in lib.tasks)
    for hash_seed in ("1", "2"):  # different str-hash salts must not matter
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True)
        assert out.stdout.split() == expected.split()


def test_every_phrasing_is_used_and_none_dominates(lib):
    for task, phrasings in lib.tasks.items():
        counts = Counter(lib.choose(task, key)[0] for key in KEYS)
        fair = len(KEYS) / len(phrasings)
        assert set(counts) == set(range(len(phrasings))), task
        assert max(counts.values()) <= 3 * fair, task


def test_seed_changes_most_choices(lib):
    for task in lib.tasks:
        changed = sum(lib.choose(task, k, seed=0) != lib.choose(task, k, seed=1) for k in KEYS[:300])
        assert changed > 0.8 * 300, task


def test_question_and_answer_picks_are_independent(lib):
    # cls has a question and an answer under one kind name; the section in the hash keeps
    # the two picks apart, so every pair of (question, answer) indices turns up.
    seen = {(lib.choose("cls", k)[0], lib.choose("cls", k, section="answers")[0]) for k in KEYS}
    assert len(seen) > 0.6 * len(lib.tasks["cls"]) * len(lib.answers["cls"])


def test_question_and_answer_filling(lib):
    q = lib.question("r_age", "k1", region="left eyebrow")
    assert q.startswith("<image>\n") and "left eyebrow" in q and "{" not in q
    assert lib.question("b_loc", "k1").count("<bbox>") == 1
    assert lib.question("det", "k1") == "<image>\n" + lib.choose("det", "k1")[1]
    with pytest.raises(ValueError, match="region"):
        lib.question("r_toe", "k1")
    with pytest.raises(ValueError, match="region"):
        lib.question("i_toe", "k1", region="nose")

    assert "{category}" not in lib.answer("cls", "k1", category="face swap")
    assert "face swap" in lib.answer("cls", "k1", category="face swap")
    # Braces in a value stay literal: filling is str.replace, never str.format.
    assert "{x}" in lib.answer("region_negative", "k1", region="{x}")
    assert lib.answer("loc", "k1").rstrip(".").endswith("[SEG]")
    with pytest.raises(ValueError):
        lib.answer("cls", "k1")
    with pytest.raises(ValueError):
        lib.answer("det_fake", "k1", region="nose")


def _corrupt(raw: dict, section: str, kind: str, edit) -> dict:
    data = {**raw, section: {**raw[section]}}
    data[section][kind] = edit(list(raw[section][kind]))
    return data


@pytest.mark.parametrize(("section", "kind", "edit"), [
    ("tasks", "r_toe", lambda ps: [ps[0].replace("{region}", "the area"), *ps[1:]]),
    ("tasks", "b_age", lambda ps: [ps[0].replace("<bbox>", "the box"), *ps[1:]]),
    ("tasks", "i_toe", lambda ps: [ps[0] + " {region}", *ps[1:]]),
    ("tasks", "det", lambda ps: [ps[0] + " {colour}", *ps[1:]]),
    ("tasks", "cls", lambda ps: ["<image>\n" + ps[0], *ps[1:]]),
    ("tasks", "i_loc", lambda ps: ps[:29]),
    ("tasks", "i_age", lambda ps: [*ps, ps[0].upper()]),
    ("answers", "cls", lambda ps: [ps[0].replace("{category}", "it"), *ps[1:]]),
    ("answers", "loc", lambda ps: ["[SEG] marks the manipulated pixels.", *ps[1:]]),
])
def test_corrupted_library_is_rejected(raw, tmp_path, section, kind, edit):
    path = tmp_path / "fifa_instructions.yaml"
    path.write_text(yaml.safe_dump(_corrupt(raw, section, kind, edit)))
    with pytest.raises(ValueError, match=rf"{section}\.{kind}"):
        load_library("fifa", path=path)


def test_missing_task_is_rejected(raw, tmp_path):
    data = {**raw, "tasks": {k: v for k, v in raw["tasks"].items() if k != "b_toe"}}
    (tmp_path / "fifa_instructions.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="b_toe"):
        load_library("fifa", path=tmp_path)


def test_intact_copy_loads_through_path(raw, tmp_path):
    path = tmp_path / "fifa_instructions.yaml"
    path.write_text(yaml.safe_dump(raw))
    copy = load_library("fifa", path=path)
    assert copy.tasks == load_library().tasks

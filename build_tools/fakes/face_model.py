"""Answers of a model that follows FaceInstruct's prompts, for the local LLM server
(`build_tools.fakes.llm_server`): the description states the label the prompt gives, in
the task's style (`Fake: ...`, `34 years old ...`, the AUs by number), without saying it
was given; the rating scores it 8 on every criterion.  Tests and benchmarks bend single
items away from this to exercise the pipeline's failure paths."""

from __future__ import annotations

import re

from build_tools.fakes.llm_server import LlmCall

# What each FaceInstruct prompt says of the label (prompts/data/faceinstruct_prompts.yaml).
LABEL_IN_PROMPT = (
    ("expression", re.compile(r"whose expression is (.+?)\. ")),
    ("au", re.compile(r"these facial action units are active: (.+?)\. For each")),
    ("attribute", re.compile(r"has these attributes: (.+?)\. Describe")),
    ("age", re.compile(r"is (\d+) years old\.")),
    ("deepfake", re.compile(r"This (?:image|video) is (real|fake.*?)\. Begin")),
)


def prompt_label(text: str) -> tuple[str, str] | None:
    """(task, label words) of a FaceInstruct description prompt, or None."""
    flat = " ".join(text.split())
    for task, pattern in LABEL_IN_PROMPT:
        match = pattern.search(flat)
        if match:
            return task, match.group(1)
    return None


def describe(task: str, label: str) -> str:
    if task == "expression":
        return (f"The face shows {label}: the shape of the mouth and the set of the eyes and brows "
                f"carry the expression throughout.")
    if task == "au":
        return f"The face shows {label}, each visible in the shape of the brows, lids and lips."
    if task == "attribute":
        return f"The face shows these features: {label}, each plainly visible."
    if task == "age":
        return f"{label} years old is a reasonable estimate, judging by the skin texture and facial fullness."
    fake = label.startswith("fake")
    return ("Fake: the face shows blending seams and texture that does not match its surroundings."
            if fake else "Real: the face is natural and consistent in lighting and texture.")


def face_responder(call: LlmCall) -> dict:
    """The answer of a cooperative model: a description, or a rating of 8s."""
    properties = (call.schema or {}).get("properties", {})
    if "overall" in properties:
        return {"label_accuracy": 8, "media_consistency": 8, "label_consistency": 8, "overall": 8,
                "reason": "The description agrees with the face and its label."}
    found = prompt_label(call.text)
    task, label = found if found else ("expression", "a neutral expression")
    return {"description": describe(task, label)}

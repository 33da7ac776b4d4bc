"""The dataset card of a published FaceInstruct run: the Hub's YAML metadata (as for
FiFa-Instruct, `build_tools.publish.card.card_data`) and a page for people built from
the run report."""

from __future__ import annotations

from typing import Any

from build_tools.publish.card import (
    REJECTED,
    RELATED,
    _describer,
    _fmt,
    _llm,
    _ratings,
    _table,
    _type_name,
    card_data,
)
from schemas.faceinstruct import SPLITS, TASKS, FaceSample

TASK_CATEGORIES = ["image-text-to-text", "video-text-to-text", "visual-question-answering", "image-classification"]
TAGS = ["face-analysis", "facial-expression-recognition", "action-units", "facial-attributes", "age-estimation",
        "deepfake-detection", "instruction-tuning", "facext", "faceinstruct"]

CITATION = RELATED  # Face-LLaVA's, which FiFa's card lists as related work



def faceinstruct_card(report: dict[str, Any], configs: dict[str, dict[str, Any]], sample_features,
                      rejected_features, *, license: str, pretty_name: str, repo_id: str | None) -> str:
    data = card_data(configs, sample_features, rejected_features, license=license, pretty_name=pretty_name,
                     task_categories=TASK_CATEGORIES, tags=TAGS)
    sections = [f"# {pretty_name}", _intro(report), _configs_section(configs), _loading(configs, repo_id),
                _columns(sample_features), _built(report), _run(report), _limits(report),
                f"## Citation\n\nThe dataset design is Face-LLaVA's (FaceInstruct):\n\n```bibtex\n{CITATION}\n```"]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _intro(report: dict[str, Any]) -> str:
    samples = report["samples"]
    sources = ", ".join(f"`{s['name']}`" for s in report.get("sources", [])) or "a manifest"
    return (f"FaceInstruct samples (the instruction data of Face-LLaVA) made by facext's `faceinstruct_build` "
            f"pipeline from {_fmt(report['inputs'])} labelled face items of {sources}: "
            f"{_fmt(report['items_written'])} became samples, {_fmt(report['items_rejected'])} were rejected (table "
            f"`rejected`, with stage and reason).\n\nEach row is one face crop (a video: its middle track frame, "
            f"the sampled frames and the crop track as mp4), its 68 landmarks per frame, the dataset's label "
            f"and one instruction-and-description conversation. Splits: `train` "
            f"({_fmt(samples['by_split'].get('train', 0))}) and `test` ({_fmt(samples['by_split'].get('test', 0))}), "
            f"the source datasets' official splits where they have one, else by subject.")


def _configs_section(configs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, config in configs.items():
        counts = [_fmt(config["splits"][s]["rows"]) if s in config["splits"] else "–" for s in (*SPLITS, REJECTED)]
        rows.append([f"`{name}`", ", ".join(f"`{t}`" for t in config["tasks"]) or "rejected items", *counts,
                     config["download_size"]])
    return ("## Configurations\n\n`default` holds every sample; each task is a config of its own; `rejected` "
            "lists the items that gave no sample. A config or split without rows is left out.\n\n"
            + _table(["config", "tasks", *SPLITS, REJECTED, "Parquet bytes"], rows))


def _loading(configs: dict[str, dict[str, Any]], repo_id: str | None) -> str:
    where = repo_id or "path/to/this/folder"
    name = next((t for t in TASKS if t in configs), "default")
    return f"""## Loading

```python
from datasets import load_dataset
import json

ds = load_dataset("{where}", "{name}", split="train")
row = ds[0]
row["image"]                     # PIL image: the face crop (a video's middle track frame)
json.loads(row["label"])         # the label object of the task
row["conversations"]             # [{{"from": "human", "value": "<image>\\n..."}}, {{"from": "gpt", ...}}]
row["landmarks"]                 # 68 (x, y) points per track frame, 0..1 in the crop
```

`facext export llava OUT --out DIR` writes the same samples as the Face-LLaVA trainer's JSON, media
and landmark files."""


def _columns(features) -> str:
    rows = [[f"`{field.alias or name}`", f"`{_type_name(features[field.alias or name])}`",
             (field.description or "").replace("|", "/")] for name, field in FaceSample.model_fields.items()]
    return "## Columns\n\n" + _table(["column", "type", "what it holds"], rows)


def _built(report: dict[str, Any]) -> str:
    options = report["options"]
    return "\n".join([
        "## How it was built", "",
        f"* facext version: `{report.get('facext_version')}`, pipeline `{report['pipeline']}`",
        f"* describer: {_describer(report, 'describer')}",
        (f"* rater: {_describer(report, 'rater')}; items rated below {_fmt(options.get('min_rating'))} overall, "
        f"and descriptions that give away they were told the label, are rejected"), "",
        "### Options", "",
        _table(["option", "value"], [[f"`{k}`", f"`{_fmt(v)}`"] for k, v in options.items()]),
    ])


def _run(report: dict[str, Any]) -> str:
    samples, rejected = report["samples"], report["rejected"]
    sources = report.get("by_source") or {}
    parts = [
        "## Run report", "From the run's `run_report.json`.",
        _table(["quantity", "value"], [["inputs", report["inputs"]], ["items written", report["items_written"]],
                                       ["items rejected", report["items_rejected"]], ["adds up", report["adds_up"]]]),
        "### Per source",
        _table(["source", "inputs", "written", "rejected", "why"],
               [[f"`{n}`", e["inputs"], e["written"], e["rejected"],
                 ", ".join(f"{r} {c}" for r, c in sorted(e["by_reason"].items())) or "–"]
                for n, e in sorted(sources.items())]) if sources else "",
        "### Rejects by stage and reason",
        _table(["stage", "reason", "items"], [[stage, reason, n] for stage, by in rejected["by_stage_and_reason"].items()
                                             for reason, n in by.items()]) if rejected["by_reason"] else "None.",
        "### Samples by task and split",
        _table(["task", *SPLITS, "total"], [[f"`{t}`", *(by.get(s, 0) for s in SPLITS), samples["by_task"].get(t, 0)]
                                            for t, by in samples["by_task_and_split"].items()]),
        _ratings(report.get("ratings") or {}).replace("pairs rated", "items rated").replace("No pair", "No item"),
        _llm(report.get("llm") or {}),
    ]
    return "\n\n".join(p for p in parts if p)


def _limits(report: dict[str, Any]) -> str:
    options = report["options"]
    items = [("* **Labels are the source datasets'**: the pipeline maps indices to official class names and "
             "checks formats; it does not check that a label is right beyond the rater's judgement."),
             ("* **Landmarks are the mediapipe mesh projected to the 68 iBUG points**, not FAN's (which the paper "
             "used); they follow the iBUG order and conventions.")]
    if options.get("describer") == "evidence":
        items.append("* **Descriptions are templated**: the offline describer states the label and the cues it "
                     "measured from the landmarks (mouth, brows, eyes, head pose), nothing else; it is terse and "
                     "repetitive, and says so when no cue was clear.")
    else:
        items.append(f"* **Descriptions are written by a language model** ({_describer(report, 'describer')}) that "
                     f"was given the label; they are rated, not verified by people.")
    return "## Known limits\n\n" + "\n".join(items)

"""Records of the FiFa-Instruct pipeline: manifest rows, rejected rows, samples.

A shard row is one distinct aligned crop, `FifaImage` (the real or the fake of a pair),
with every task sample asked about it (`TaskSample`): each crop is stored once however
many questions it carries.  `FifaSample` is the flat view, one row per sample with its
image, that `flat_samples` (a row) and `flat_dataset` (a `datasets.Dataset`) give.  The
shard schema (HF `Features`) is derived from `FifaImage` by `schemas.features`, so a
column is defined once, here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.analysis import ConceptEvidence
from schemas.common import Rejected, RleMask, TemplateRef, Turn
from schemas.features import HF_IMAGE
from schemas.llm import Rating

TASKS = ("det", "cls", "i_toe", "i_age", "i_loc", "r_toe", "r_age", "r_loc",
         "b_toe", "b_age", "b_loc")
# Task families: the image (`i_`), region (`r_`) and box (`b_`) levels of the explanation
# tasks; each family is a config of the published dataset and a folder under its data/.
TASK_FAMILIES: dict[str, tuple[str, ...]] = {
    "det": ("det",),
    "cls": ("cls",),
    "image": ("i_toe", "i_age", "i_loc"),
    "region": ("r_toe", "r_age", "r_loc"),
    "box": ("b_toe", "b_age", "b_loc"),
}
# FiFa's names of the 11 tasks (text-only explanation, artifact-grounding explanation with
# [SEG] masks, localization).
TASK_TITLES = {
    "det": "Det: real or fake", "cls": "Cls: manipulation category",
    "i_toe": "I-TOE: image, text-only explanation", "i_age": "I-AGE: image, artifact-grounding explanation",
    "i_loc": "I-Loc: image, artifact mask", "r_toe": "R-TOE: region, text-only explanation",
    "r_age": "R-AGE: region, artifact-grounding explanation", "r_loc": "R-Loc: region, artifact mask",
    "b_toe": "B-TOE: box, text-only explanation", "b_age": "B-AGE: box, artifact-grounding explanation",
    "b_loc": "B-Loc: box, artifact mask",
}
assert sorted(t for tasks in TASK_FAMILIES.values() for t in tasks) == sorted(TASKS) == sorted(TASK_TITLES)
CATEGORIES = ("face editing", "face swap", "reenactment", "entire synthesis")
SPLITS = ("train", "test")


def family_of(task: str) -> str:
    """The family (published config) a task belongs to."""
    return next(family for family, tasks in TASK_FAMILIES.items() if task in tasks)


class PairInput(BaseModel):
    """One manifest row with its image paths resolved (local path or filesystem URL)."""

    model_config = ConfigDict(frozen=True)

    pair_id: str
    real: str
    fake: str
    method: str = ""
    category: str = ""
    subject_id: str | None = None
    source_dataset: str | None = None
    manifest: str = Field(description="the manifest file the row came from")
    row: int = Field(description="0-based row number in that manifest")
    real_ref: str | None = Field(default=None, description="`real` as the manifest wrote it")
    fake_ref: str | None = Field(default=None, description="`fake` as the manifest wrote it")

    def rejected(self, stage: str, reason: str, detail: str, **fields) -> RejectedRow:
        """This pair as a rejected row: where, why, and the manifest's fields (the image
        paths as the manifest wrote them, so the table is the same wherever the data lies)."""
        return RejectedRow(pair_id=self.pair_id, stage=stage, reason=reason, detail=detail,
                           real=self.real_ref or self.real, fake=self.fake_ref or self.fake,
                           method=self.method or None,
                           category=self.category or None, subject_id=self.subject_id,
                           manifest=self.manifest, row=self.row, **fields)


class JudgedText(BaseModel):
    """One text the rate stage judged, as the samples would have shown it."""

    concept: str | None = Field(default=None, description="the FICT node it explains; none: the whole image")
    text: str


class RejectedRow(Rejected):
    """An input that produced no samples, with where and why."""

    pair_id: str
    stage: str
    reason: str
    detail: str
    real: str | None = None
    fake: str | None = None
    method: str | None = None
    category: str | None = None
    subject_id: str | None = None
    manifest: str | None = None
    row: int | None = None
    rating: Rating | None = Field(default=None, description="the rater's scores (rate stage)")
    hallucinated_concepts: list[str] = Field(default_factory=list, description="concepts the texts "
                                             "name that have no artifact (rate stage)")
    texts: list[JudgedText] = Field(default_factory=list, description="the texts that were judged, "
                                    "image first, concept names in plain words (rate stage)")


class TextCheck(BaseModel):
    """What the rate stage found about a pair's texts."""

    rating: Rating | None = None
    rater: str | None = None
    rater_model: str | None = None
    templates: list[TemplateRef] = Field(default_factory=list, description="the rater's prompt templates")
    hallucinated_concepts: list[str] = Field(default_factory=list)


class Provenance(BaseModel):
    manifest: str
    row: int
    source_dataset: str | None = None
    describer: str
    model: str | None = None
    rater: str | None = None
    rater_model: str | None = None
    prompt_templates: list[TemplateRef]
    facext_version: str
    options_hash: str = Field(description="hash of the options that shape the samples")


class TaskSample(BaseModel):
    """One question and its answer about the image of the row that holds it."""

    sample_id: str = Field(description="unique id of the sample")
    task: str = Field(description="one of the 11 FiFa tasks")
    negative: bool = Field(default=False, description="the region or box asked about holds no "
                           "artifact, and the answer says so")
    conversations: list[Turn] = Field(description="the question (`human`) and the answer (`gpt`), LLaVA style")
    masks: list[RleMask] = Field(description="one per [SEG] in the answer, in order")
    region_masks: list[RleMask] = Field(description="region mask R of each grounded concept")
    concepts: list[str] = Field(description="grounded FICT node ids, in [SEG] order")
    bbox: list[int] | None = Field(default=None, description="x0, y0, x1, y1 in crop pixels")
    rating: Rating | None = Field(default=None, description="the rater's scores of the pair's texts")
    hallucinated_concepts: list[str] = Field(default_factory=list, description="FICT concepts the "
                                             "answer names that have no artifact")
    instructions: TemplateRef = Field(description="the question and answer phrasings' template")


class ConceptMeasurement(BaseModel):
    """What the analysis measured in one flagged concept of the fake crop: the numbers
    the answers put in words (for training code, the report and audits)."""

    concept: str = Field(description="FICT node id")
    coverage: float = Field(description="changed share of the concept's region, |A∩R| / |R|")
    artifact_px: int = Field(description="changed pixels inside the region, |A∩R|")
    evidence: ConceptEvidence = Field(description="colour shift (Lab), sharpness, edge and texture "
                                      "measures over A∩R, fake against real")


class FifaImage(BaseModel):
    """One row of a FiFa-Instruct shard: one aligned crop and the samples about it."""

    image_id: str = Field(description="unique id of the crop: its pair and which of the two it is")
    pair_id: str = Field(description="the real/fake pair the crop comes from")
    split: str = Field(description="train or test (by identity: subject, else pair)")
    image: bytes = Field(json_schema_extra=HF_IMAGE, description="PNG of the aligned crop, lossless")
    is_fake: bool = Field(description="whether `image` is the fake (det asks about real images too)")
    category: str = Field(description="manipulation category of the pair")
    method: str = Field(description="manipulation method of the pair")
    subject_id: str | None = Field(default=None, description="identity of the person, when the manifest gives it")
    source_dataset: str | None = Field(default=None, description="dataset the pair comes from, when the "
                                       "manifest gives it")
    crop_transform: list[list[float]] = Field(description="2x3, original real pixels -> crop")
    landmarks: list[list[float]] | None = Field(
        default=None, description="68 iBUG points (x, y) of the real face, normalised to the crop (0..1); the "
        "fake crop shares the alignment (what self-blending and landmark-aware models read)")
    provenance: Provenance = Field(description="how the samples were made: manifest and row, describer and "
                                   "rater with their models and prompt templates, facext version, "
                                   "options hash")
    concept_evidence: list[ConceptMeasurement] = Field(
        default_factory=list, description="the measurements of every flagged concept, in tree order "
        "(the fake crop; empty on the real one)")
    samples: list[TaskSample] = Field(description="the task samples about this image, in task order")


# The flat view's columns, in order: each defined once, on `TaskSample` or `FifaImage`.
_FLAT_COLUMNS = ("sample_id", "pair_id", "task", "split", "image", "is_fake", "negative", "category", "method",
                 "subject_id", "source_dataset", "conversations", "masks", "region_masks", "concepts", "bbox",
                 "crop_transform", "landmarks", "rating", "hallucinated_concepts", "concept_evidence", "provenance")


def _flat_field(name: str) -> tuple[Any, Any]:
    field = (TaskSample if name in TaskSample.model_fields else FifaImage).model_fields[name]
    return field.annotation, field


FifaSample = create_model(
    "FifaSample", __doc__="One FiFa-Instruct sample with its image: the flat view of a `FifaImage` row "
                          "(`flat_samples`), one row per question, as LLaVA-style loaders read it.",
    **{name: _flat_field(name) for name in _FLAT_COLUMNS})


# What a flat sample takes from its image row; the rest is the sample's own (its
# `instructions` join the row's prompt templates in `provenance`).
_ROW_FIELDS = tuple(name for name in _FLAT_COLUMNS if name in FifaImage.model_fields and name != "provenance")


def flat_samples(row: dict) -> list[dict]:
    """A `FifaImage` row (as `datasets` gives it) as its `FifaSample` rows, in order."""
    shared = {k: row[k] for k in _ROW_FIELDS}
    provenance = row["provenance"]
    out = []
    for sample in row["samples"]:
        flat = {k: v for k, v in sample.items() if k != "instructions"}
        templates = [sample["instructions"], *provenance["prompt_templates"]]
        out.append({**flat, **shared, "provenance": {**provenance, "prompt_templates": templates}})
    return out


def _flat_batch(batch: dict[str, list]) -> dict[str, list]:
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    flat = [sample for row in rows for sample in flat_samples(row)]
    return {name: [sample[name] for sample in flat] for name in FifaSample.model_fields}


def flat_dataset(dataset, **map_kwargs):
    """A split of FiFa-Instruct (a `datasets.Dataset` of `FifaImage` rows) as one row per
    sample (`FifaSample`), e.g. `flat_dataset(load_from_disk(OUT)["train"])`.  Each sample
    holds its own copy of its image: about 9 times the bytes of the image rows, which
    `datasets` caches beside the shards it read (pass `cache_file_name=` to put them
    elsewhere, or `keep_in_memory=True` for a small split)."""
    from datasets import Image

    from schemas.features import hf_features

    dataset = dataset.cast_column("image", Image(decode=False))  # the bytes pass through as they are
    return dataset.map(_flat_batch, batched=True, batch_size=64, remove_columns=dataset.column_names,
                       features=hf_features(FifaSample), **map_kwargs)

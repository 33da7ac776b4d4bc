"""Records every pipeline shares: where and why an input was refused (stages, typed
reasons, the rejected-row contract), conversation turns, masks and template references.

Reject reasons are defined here once; pipelines, the run report, publishing and the
report page import them.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Stage(str, Enum):
    """Where in the pipeline a pair was decided."""

    MANIFEST = "manifest"
    READ = "read"
    FACE = "face"
    ARTIFACT = "artifact"
    CONCEPTS = "concepts"
    DESCRIBE = "describe"
    RATE = "rate"
    SAMPLES = "samples"


class RejectReason(str, Enum):
    """Why a pair produced no sample.  Typed, so run reports can count them."""

    DECODE_ERROR = "decode_error"
    MISSING_FILE = "missing_file"
    UNSUPPORTED_CHANNELS = "unsupported_channels"
    SIZE_MISMATCH = "size_mismatch"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_TOO_SMALL = "face_too_small"
    MESH_FAILED = "mesh_failed"
    NOT_LOCALIZED = "not_localized"
    MISALIGNED = "misaligned"
    # The whole image changed (a colour grade, a re-render, an entire synthesis): the
    # difference method finds no local artifact to explain.
    GLOBAL_CHANGE = "global_change"
    BAD_MANIFEST_ROW = "bad_manifest_row"
    PATH_OUTSIDE_MANIFEST = "path_outside_manifest"
    DUPLICATE_PAIR_ID = "duplicate_pair_id"
    NO_ARTIFACT = "no_artifact"
    # The LLM layer (describe or rate): no answer after every attempt, or an answer that
    # failed validation twice.
    LLM_FAILED = "llm_failed"
    LLM_INVALID_OUTPUT = "llm_invalid_output"
    LOW_RATING = "low_rating"
    HALLUCINATED = "hallucinated"
    # An explanation that names none of the concepts it explains: nothing to ground.
    UNGROUNDED = "ungrounded"
    # FaceInstruct: a label a reader does not know (an index or word outside the dataset's
    # classes), or a known one that labels nothing usable (AffectNet's None / Uncertain /
    # No-Face); an item named twice; a video whose face is missing in too many frames; a
    # description that gives away that its writer was told the label.
    UNKNOWN_LABEL = "unknown_label"
    UNUSABLE_LABEL = "unusable_label"
    DUPLICATE_ITEM = "duplicate_item"
    TOO_MANY_FAILED_FRAMES = "too_many_failed_frames"
    LABEL_LEAK = "label_leak"
    # A bug or an environment failure, not a property of the pair: kept apart so it can
    # be counted and fixed, and never silently turned into a data decision.
    INTERNAL_ERROR = "internal_error"

    @property
    def stage(self) -> Stage | None:
        """The stage that decides this reason (None: any stage, e.g. internal_error)."""
        return _REASON_STAGE.get(self)


_REASON_STAGE = {
    RejectReason.DECODE_ERROR: Stage.READ,
    RejectReason.MISSING_FILE: Stage.READ,
    RejectReason.UNSUPPORTED_CHANNELS: Stage.READ,
    RejectReason.SIZE_MISMATCH: Stage.READ,
    RejectReason.NO_FACE: Stage.FACE,
    RejectReason.MULTIPLE_FACES: Stage.FACE,
    RejectReason.FACE_TOO_SMALL: Stage.FACE,
    RejectReason.MESH_FAILED: Stage.FACE,
    RejectReason.NOT_LOCALIZED: Stage.ARTIFACT,
    RejectReason.MISALIGNED: Stage.ARTIFACT,
    RejectReason.GLOBAL_CHANGE: Stage.ARTIFACT,
    RejectReason.BAD_MANIFEST_ROW: Stage.MANIFEST,
    RejectReason.PATH_OUTSIDE_MANIFEST: Stage.MANIFEST,
    RejectReason.DUPLICATE_PAIR_ID: Stage.MANIFEST,
    RejectReason.NO_ARTIFACT: Stage.CONCEPTS,
    RejectReason.LOW_RATING: Stage.RATE,
    RejectReason.HALLUCINATED: Stage.RATE,
    RejectReason.UNGROUNDED: Stage.RATE,
    RejectReason.UNKNOWN_LABEL: Stage.READ,
    RejectReason.UNUSABLE_LABEL: Stage.READ,
    RejectReason.DUPLICATE_ITEM: Stage.MANIFEST,
    RejectReason.TOO_MANY_FAILED_FRAMES: Stage.FACE,
    RejectReason.LABEL_LEAK: Stage.RATE,
}


class PairRejected(Exception):
    """A stage refused a pair; carries the typed reason (its stage follows from it)."""

    def __init__(self, reason: RejectReason, detail: str, **fields):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fields = fields  # more columns of the rejected row (e.g. the rating)


class Rejected(BaseModel):
    """Base of every rejected table's row: an input that produced no output, with where
    (`stage`) and why (`reason`, one of `RejectReason`, and a `detail` for a person).

    Each pipeline's row class declares these three string fields among its own, in the
    column order of its table (a pydantic base would put its fields first, and a rejected
    table's columns are part of the interface); declaring a row class without them is an
    error.  The shared machinery reads only these fields.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("stage", "reason", "detail")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        missing = [name for name in cls.REQUIRED if cls.model_fields.get(name) is None
                   or cls.model_fields[name].annotation is not str]
        if missing:
            raise TypeError(f"{cls.__name__} must declare str fields {', '.join(missing)} (schemas.common.Rejected)")

    def count_key(self) -> tuple[str, str, str]:
        """Its key in the run report's reject counts."""
        return ("rejected", self.stage, self.reason)  # type: ignore[attr-defined]


class Turn(BaseModel):
    """One conversation turn, LLaVA style: {"from": "human"|"gpt", "value": text}."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    from_: str = Field(alias="from")
    value: str


class RleMask(BaseModel):
    """A binary mask in COCO compressed RLE (decode with `schemas.decode_mask`)."""

    model_config = ConfigDict(frozen=True)

    size: list[int] = Field(description="[height, width]")
    counts: str


class TemplateRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    version: str = Field(description="content hash of the template file")

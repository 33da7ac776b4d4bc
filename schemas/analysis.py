"""Records of the per-pair analysis (FiFa-Instruct stages 1-5)."""

from __future__ import annotations

from enum import Enum

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
    RejectReason.BAD_MANIFEST_ROW: Stage.MANIFEST,
    RejectReason.PATH_OUTSIDE_MANIFEST: Stage.MANIFEST,
    RejectReason.DUPLICATE_PAIR_ID: Stage.MANIFEST,
    RejectReason.NO_ARTIFACT: Stage.CONCEPTS,
    RejectReason.LOW_RATING: Stage.RATE,
    RejectReason.HALLUCINATED: Stage.RATE,
}


class PairRejected(Exception):
    """A stage refused a pair; carries the typed reason (its stage follows from it)."""

    def __init__(self, reason: RejectReason, detail: str, **fields):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fields = fields  # more columns of the rejected row (e.g. the rating)


class ConceptEvidence(BaseModel):
    """Measured facts about the change inside one concept region.

    All are measured over the regional artifact mask A∩R in the aligned crop.  Colour
    shifts are fake minus real in CIE Lab (L in 0..100, a/b in about -128..127).  Ratios
    are fake over real, so a value below 1 means the fake lost detail there.
    """

    model_config = ConfigDict(frozen=True)

    area_px: int = Field(description="pixels of the regional artifact mask A∩R")
    area_fraction: float = Field(description="A∩R as a fraction of the crop")
    bbox: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 of A∩R in crop pixels")
    delta_l: float
    delta_a: float
    delta_b: float
    mean_abs_rgb_diff: float = Field(description="mean |fake-real| over A∩R, 0..255")
    sharpness_ratio: float = Field(description="Laplacian variance, fake / real")
    edge_ratio: float = Field(description="mean gradient magnitude, fake / real")
    texture_change: float = Field(description="mean |Δ gradient magnitude| over A∩R, 0..255")


class ConceptCoverage(BaseModel):
    """One FICT node's share of the artifact mask."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    atomic: bool
    coverage: float = Field(description="|A∩R| / |R|")
    share: float = Field(description="|A∩R| / |A|")
    artifact: bool
    region_px: int = 0
    artifact_px: int = 0
    evidence: ConceptEvidence | None = None


class PairAnalysis(BaseModel):
    """What `facext analyze` writes to analysis.json for one real/fake pair."""

    status: str = Field(description="'ok' or 'rejected'")
    reason: RejectReason | None = None
    stage: Stage | None = None
    detail: str | None = None
    crop_transform: list[list[float]] | None = Field(
        default=None, description="2x3, original real-image pixels -> crop pixels"
    )
    crop_size: tuple[int, int] | None = Field(default=None, description="[w, h]")
    mask_threshold: float | None = Field(default=None, description="difference threshold used, 0..255")
    changed_face_fraction: float | None = None
    artifact_fraction: float | None = None
    concepts: list[ConceptCoverage] = Field(default_factory=list)

"""Records of the per-pair analysis (FiFa-Instruct stages 1-5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import RejectReason, Stage


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
    landmarks: list[list[float]] | None = Field(
        default=None, description="the real face's 68 iBUG points (x, y), normalised to the crop (0..1; "
        "the fake crop shares the alignment)")
    mask_threshold: float | None = Field(default=None, description="difference threshold used, 0..255")
    changed_face_fraction: float | None = None
    artifact_fraction: float | None = None
    concepts: list[ConceptCoverage] = Field(default_factory=list)

    @property
    def flags_nothing(self) -> bool:
        """An analysed pair with no concept flagged: the pipeline refuses it (`no_artifact`)."""
        return self.status == "ok" and not any(c.artifact for c in self.concepts)

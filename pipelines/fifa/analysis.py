"""One real/fake pair through stages 1-5: read, face geometry, artifact mask, concepts,
evidence.  Plain code over arrays; the Beam pipeline wraps `PairAnalyzer`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from fict.coverage import ConceptConfig, Coverage, concept_coverage
from fict.regions import label_map
from fict.tree import ConceptTree, load_tree
from pipelines.fifa.artifacts import ArtifactMask, MaskConfig, artifact_mask, check_alignment
from pipelines.fifa.evidence import concept_evidence
from pipelines.vision.faces import FaceAnalyzer, FaceGeometry, FaceGeometryConfig
from pipelines.vision.images import ImageRejected, check_pair, read_image
from pipelines.vision.landmarks68 import ibug68_from_mesh, ibug68_normalised
from schemas.analysis import ConceptCoverage, PairAnalysis
from schemas.common import PairRejected, RejectReason

STAGES = ("decode", "detect", "mesh", "align", "segmentation", "mask", "label_map",
          "coverage", "evidence")


@dataclass(frozen=True)
class AnalysisConfig:
    face: FaceGeometryConfig = field(default_factory=FaceGeometryConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    concepts: ConceptConfig = field(default_factory=ConceptConfig)
    person_threshold: float = 0.5


@dataclass
class LocatedPair:
    """Stage 2's output: the face geometry and both images in the aligned crop."""

    geometry: FaceGeometry
    real_crop: np.ndarray  # (h, w, 3) uint8
    fake_crop: np.ndarray
    valid: np.ndarray  # (h, w) bool: crop pixels that come from inside the image
    labels: np.ndarray  # (h, w) uint8 atomic FICT indices


@dataclass
class PairResult:
    """The analysis record plus the arrays behind it (all in crop pixels)."""

    analysis: PairAnalysis
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    geometry: FaceGeometry | None = None
    real_crop: np.ndarray | None = None
    fake_crop: np.ndarray | None = None
    difference: np.ndarray | None = None
    artifact_mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    coverage: Coverage | None = None

    @property
    def ok(self) -> bool:
        return self.analysis.status == "ok"


def rejected(reason: RejectReason, detail: str, **extra) -> PairAnalysis:
    return PairAnalysis(status="rejected", reason=reason, stage=reason.stage, detail=detail, **extra)


class PairAnalyzer:
    """Analyses pairs one after another; holds one set of face models (one per worker)."""

    def __init__(self, config: AnalysisConfig | None = None, tree: ConceptTree | None = None):
        self.config = config or AnalysisConfig()
        self.tree = tree or load_tree()
        self._faces: FaceAnalyzer | None = None
        # Lookup table atomic label -> is part of the face (cheaper than np.isin per pair).
        self._is_face = np.zeros(len(self.tree.atomic), bool)
        self._is_face[[self.tree.atomic_index[a] for a in self.tree.atomic_descendants("face")]] = True

    def close(self) -> None:
        if self._faces is not None:
            self._faces.close()
            self._faces = None

    @property
    def faces(self) -> FaceAnalyzer:
        """The face models, loaded on first use (the later stages never need them)."""
        if self._faces is None:
            self._faces = FaceAnalyzer(self.config.face)
        return self._faces

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def analyze_files(self, real_path: str | Path, fake_path: str | Path) -> PairResult:
        timings: dict[str, float] = {}
        try:
            real, fake = read_pair(real_path, fake_path, timings)
        except ImageRejected as exc:
            return PairResult(rejected(exc.reason, exc.detail), timings)
        return self.analyze(real, fake, timings)

    def analyze(self, real: np.ndarray, fake: np.ndarray,
                timings: dict[str, float] | None = None) -> PairResult:
        """uint8 RGB arrays in; never raises for a bad pair, returns a rejected record."""
        timings = {} if timings is None else timings
        located = None
        try:
            check_pair(real, fake)
            located = self.locate(real, fake, timings)
            art = self.artifacts(located, timings)
        except PairRejected as exc:
            extra = {}
            if located is not None:
                extra = {"crop_transform": located.geometry.crop_transform.tolist(),
                         "crop_size": located.geometry.crop_size}
            return PairResult(rejected(exc.reason, exc.detail, **extra), timings,
                              located.geometry if located else None)
        return self.concepts(located, art, timings)

    # The stages after reading (`read_pair`), one method each, so a pipeline can run
    # (and count) them one by one.

    def locate(self, real: np.ndarray, fake: np.ndarray,
               timings: dict[str, float] | None = None) -> LocatedPair:
        """Stage 2: the face on the real image, both images aligned to the crop, and the
        crop's FICT label map; raises FaceRejected."""
        faces = self.faces
        with _timed(timings, "detect"):
            face = faces.the_face(real)
        with _timed(timings, "mesh"):
            landmarks = faces.mesh(real, face)
        with _timed(timings, "align"):
            size = self.config.face.crop_size
            geometry = FaceGeometry(face, landmarks, faces.align(landmarks), (size, size))
            real_crop, fake_crop = geometry.warp(real), geometry.warp(fake)
            valid = geometry.valid_crop_mask((real.shape[1], real.shape[0]))
        with _timed(timings, "segmentation"):
            person = faces.segment(real_crop) > self.config.person_threshold
        with _timed(timings, "label_map"):
            labels = label_map(geometry.landmarks_crop, landmarks[:, 2], person, geometry.crop_size)
        return LocatedPair(geometry, real_crop, fake_crop, valid, labels)

    def artifacts(self, located: LocatedPair, timings: dict[str, float] | None = None) -> ArtifactMask:
        """Stage 3: the whole-crop artifact mask and the pair-level gates; raises
        ArtifactRejected."""
        with _timed(timings, "mask"):
            check_alignment(located.real_crop, located.fake_crop, self.config.mask,
                            located.geometry.scale)
            face_px = self._is_face[located.labels]
            return artifact_mask(located.real_crop, located.fake_crop, located.valid, face_px,
                                 self.config.mask)

    def concepts(self, located: LocatedPair, art: ArtifactMask,
                 timings: dict[str, float] | None = None) -> PairResult:
        """Stages 4-5: coverage of every FICT node and evidence for the flagged ones."""
        geometry, labels = located.geometry, located.labels
        real_crop, fake_crop = located.real_crop, located.fake_crop
        with _timed(timings, "coverage"):
            cov = concept_coverage(self.tree, labels, art.mask, self.config.concepts)
        with _timed(timings, "evidence"):
            evidence = concept_evidence(self.tree, labels, art.mask, real_crop, fake_crop,
                                        art.difference, cov)
        concepts = [
            ConceptCoverage(
                id=node.id, name=node.name, atomic=node.atomic,
                coverage=round(float(cov.coverage[i]), 6), share=round(float(cov.share[i]), 6),
                artifact=bool(cov.artifact[i]), region_px=int(cov.region_px[i]),
                artifact_px=int(cov.artifact_px[i]), evidence=evidence.get(node.id),
            )
            for i, node in enumerate(self.tree.nodes)
        ]
        analysis = PairAnalysis(
            status="ok",
            crop_transform=geometry.crop_transform.tolist(),
            crop_size=geometry.crop_size,
            landmarks=crop_landmarks68(geometry),
            mask_threshold=round(art.threshold, 3),
            changed_face_fraction=round(art.changed_face_fraction, 6),
            artifact_fraction=round(float(art.mask.mean()), 6),
            concepts=concepts,
        )
        return PairResult(analysis, timings if timings is not None else {}, geometry, real_crop,
                          fake_crop, art.difference, art.mask, labels, cov)


def crop_landmarks68(geometry: FaceGeometry) -> list[list[float]]:
    """The face's 68 iBUG points in the crop, normalised to 0..1 and rounded to 1e-4 (a
    twentieth of a pixel at 512 px)."""
    points = ibug68_normalised(ibug68_from_mesh(geometry.landmarks), geometry.crop_transform, geometry.crop_size)
    return np.round(points.astype(np.float64), 4).tolist()


def read_pair(real_path: str | Path, fake_path: str | Path,
              timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: both images as uint8 RGB of one size; raises ImageRejected, its detail
    saying which image (real and fake often share a file name in different folders)."""
    with _timed(timings, "decode"):
        real, fake = _read_side("real", real_path), _read_side("fake", fake_path)
    check_pair(real, fake)
    return real, fake


def _read_side(side: str, path: str | Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"{side} {exc.detail}") from None


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start

"""Face geometry: detection, 478-point mesh, selfie segmentation, canonical alignment.

The mediapipe graphs are the offline default (their models ship inside the
mediapipe 0.10.21 wheel).  Everything here works in the real image's own pixels
until `align` maps it to the canonical crop; the 2x3 transform is kept so that any
crop-space mask can be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from fict.canonical import canonical_crop_points
from pipelines.vision.native_stderr import quiet_native_stderr
from schemas.common import PairRejected, RejectReason

N_MESH = 478  # 468 surface points + 10 iris points (refine_landmarks=True)
N_SURFACE = 468


class FaceRejected(PairRejected):
    """The real image has no usable face; carries a typed reason."""


@dataclass(frozen=True)
class FaceGeometryConfig:
    crop_size: int = 512
    min_face_px: int = 48  # shorter side of the detector's box, original pixels
    detection_confidence: float = 0.5
    # A second face counts when its score reaches this; weaker boxes are noise.
    second_face_confidence: float = 0.7
    mesh_input_px: int = 320  # side of the square face crop the mesh graph sees
    mesh_margin: float = 1.0  # face box grown by this fraction on every side for the mesh


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels
    score: float

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return min(x1 - x0, y1 - y0)


@dataclass
class FaceGeometry:
    """One face: its detection, mesh (original pixels) and the crop it aligns to."""

    detection: Detection
    landmarks: np.ndarray  # (478, 3) float32: x, y in original pixels, z in the same scale
    crop_transform: np.ndarray  # (2, 3) float64: original pixels -> crop pixels
    crop_size: tuple[int, int]  # (w, h)

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.crop_transform[:, :2]))))

    @cached_property
    def landmarks_crop(self) -> np.ndarray:
        """(478, 2) mesh points in crop pixels."""
        return apply_affine(self.crop_transform, self.landmarks[:, :2])

    def warp(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Map an original-pixel image (or mask) into the crop."""
        return cv2.warpAffine(
            image, self.crop_transform, self.crop_size, flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )

    def unwarp(self, crop_image: np.ndarray, original_size: tuple[int, int],
               interpolation: int = cv2.INTER_NEAREST) -> np.ndarray:
        """Map a crop-space image (e.g. a mask) back to original pixels (w, h)."""
        return cv2.warpAffine(
            crop_image, self.crop_transform, original_size,
            flags=interpolation | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )

    def valid_crop_mask(self, original_size: tuple[int, int]) -> np.ndarray:
        """Crop pixels that come from inside the original image (bool)."""
        w, h = self.crop_size
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
        back = apply_affine(cv2.invertAffineTransform(self.crop_transform), corners)
        if (back >= 0).all() and (back[:, 0] <= original_size[0] - 1).all() \
                and (back[:, 1] <= original_size[1] - 1).all():
            return np.ones((h, w), bool)  # the crop lies inside the image
        ones = np.full(original_size[::-1], 255, np.uint8)
        return self.warp(ones, cv2.INTER_NEAREST) > 0


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) src -> dst (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


class FaceAnalyzer:
    """Holds the mediapipe graphs for one worker (they are not thread-safe)."""

    def __init__(self, config: FaceGeometryConfig | None = None):
        self.config = config or FaceGeometryConfig()
        import mediapipe as mp  # heavy import, only where faces are analysed

        solutions = mp.solutions
        # mediapipe's absl and TFLite log every graph start straight to stderr (GLOG_minloglevel
        # does not reach them), on the graphs' own threads as they open their models.
        with quiet_native_stderr():
            # Full-range detector: faces from close-ups to small faces in group photos.
            self._detector = solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.config.detection_confidence
            )
            self._mesh = solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.3,
            )
            self._segmenter = solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            # One blank image through each graph waits until its models are open (and logged).
            blank = np.zeros((64, 64, 3), np.uint8)
            for graph in (self._detector, self._mesh, self._segmenter):
                graph.process(blank)

    def close(self) -> None:
        for graph in (self._detector, self._mesh, self._segmenter):
            graph.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stages ---------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces the detector sees, best first (uint8 RGB in)."""
        h, w = image.shape[:2]
        with quiet_native_stderr():
            result = self._detector.process(image)
        found = []
        for det in result.detections or []:
            box = det.location_data.relative_bounding_box
            x0, y0 = box.xmin * w, box.ymin * h
            found.append(Detection(
                box=(x0, y0, x0 + box.width * w, y0 + box.height * h),
                score=float(det.score[0]),
            ))
        return sorted(found, key=lambda d: -d.score)

    def the_face(self, image: np.ndarray) -> Detection:
        """Exactly one face of a usable size, or `FaceRejected`."""
        faces = self.detect(image)
        if not faces:
            raise FaceRejected(RejectReason.NO_FACE, "the detector found no face")
        strong = [f for f in faces[1:] if f.score >= self.config.second_face_confidence]
        if strong:
            raise FaceRejected(
                RejectReason.MULTIPLE_FACES,
                f"{1 + len(strong)} faces with score >= {self.config.second_face_confidence}",
            )
        face = faces[0]
        if face.size < self.config.min_face_px:
            raise FaceRejected(
                RejectReason.FACE_TOO_SMALL,
                f"face box {face.size:.0f} px < min_face_px {self.config.min_face_px}",
            )
        return face

    def mesh(self, image: np.ndarray, face: Detection) -> np.ndarray:
        """478-point mesh, run on a square crop around the detected face.

        Running on the crop (not the whole photo) keeps small faces in large photos at
        the resolution the mesh model expects.
        """
        x0, y0, x1, y1 = face.box
        side = max(x1 - x0, y1 - y0) * (1 + 2 * self.config.mesh_margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        n = self.config.mesh_input_px
        scale = n / side
        to_crop = np.array([[scale, 0, n / 2 - scale * cx], [0, scale, n / 2 - scale * cy]])
        crop = cv2.warpAffine(image, to_crop, (n, n), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        with quiet_native_stderr():  # the first face mesh logs a landmark-projection warning
            result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            raise FaceRejected(RejectReason.MESH_FAILED, "face mesh found no face in the face crop")
        pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark],
                       np.float64) * n
        out = np.empty((len(pts), 3), np.float32)
        out[:, :2] = (pts[:, :2] - to_crop[:, 2]) / scale
        out[:, 2] = pts[:, 2] / scale
        return out

    def align(self, landmarks: np.ndarray) -> np.ndarray:
        """2x3 similarity from original pixels to the canonical crop."""
        target = canonical_crop_points(self.config.crop_size)
        return similarity_transform(landmarks[:N_SURFACE, :2], target[:N_SURFACE])

    def segment(self, crop: np.ndarray) -> np.ndarray:
        """Person probability (float32, 0..1) for an RGB crop."""
        with quiet_native_stderr():
            mask = self._segmenter.process(crop).segmentation_mask
        return np.asarray(mask, np.float32)

    def geometry(self, image: np.ndarray) -> FaceGeometry:
        face = self.the_face(image)
        landmarks = self.mesh(image, face)
        size = self.config.crop_size
        return FaceGeometry(face, landmarks, self.align(landmarks), (size, size))

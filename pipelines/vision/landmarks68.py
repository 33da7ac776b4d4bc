"""68-point iBUG-300W landmarks: projected from the mediapipe mesh, or from FAN.

FaceInstruct and Face-LLaVA speak the iBUG-300W 68-point scheme.  The default
source is the 478-point mediapipe mesh we already have (`pipelines.vision.faces`),
projected by picking one mesh vertex per iBUG point (`MESH_TO_IBUG68`).  The
optional `FanLandmarker` runs the 2D-FAN network of the `face-alignment` package
instead, but only when its weights are already on disk: nothing is downloaded.

Conventions (image coordinates, y down; "image-left" is the subject's right):

* 0-16   jaw, from the image-left end (about eye level) through the chin (8)
* 17-21  image-left brow, outer to inner; 22-26 image-right brow, inner to outer
* 27-30  nose bridge, top (nasion) to tip; 31-35 lower nose, image-left to right
* 36-41  image-left eye from its outer corner, clockwise on screen (39: inner corner)
* 42-47  image-right eye from its inner corner, clockwise (45: outer corner)
* 48-59  outer lip from the image-left corner, clockwise (54: image-right corner)
* 60-67  inner lip from the image-left corner, clockwise (64: image-right corner)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from pipelines.vision.faces import N_SURFACE, FaceRejected, apply_affine
from schemas.common import RejectReason

N_IBUG = 68

# One mesh vertex per iBUG point.  Checked on the packaged face photos against the
# iBUG conventions and against the mean 68-point shape of dlib's 300W predictor:
# * jaw: vertices of FACEMESH_FACE_OVAL chosen so that 0-8 (and 16-8) sit at about
#   k/8 of the contour from eye level to the chin, as 300W's evenly spaced points do
#   (within 0.05 of the half-contour on both photos).  The widely copied choice
#   (127,234,93,132,58,136,150,176,152) lags by up to 0.10, holding 2-7 too high:
#   its 3/13 sit at the level of the nose base.
# * eyebrows: the mesh's upper brow line (70-63-105-66-107 and its mirror); its
#   middle vertices sit ~0.05-0.08 eye-distances outward of 300W's evenly spaced
#   points, which no vertex choice fixes.
# Every left/right pair maps to mirror vertices of the mesh.
MESH_TO_IBUG68: tuple[int, ...] = (
    # jaw 0-16
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,
    # brows 17-21, 22-26
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    # nose bridge 27-30, lower nose 31-35
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    # image-left eye 36-41, image-right eye 42-47
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    # outer lip 48-59
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # inner lip 60-67
    78, 82, 13, 312, 308, 317, 14, 87,
)

# Named ranges of the 68 points, for readers and tests.
IBUG68_PARTS: dict[str, range] = {
    "jaw": range(17),
    "brow_image_left": range(17, 22),
    "brow_image_right": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_lower": range(31, 36),
    "eye_image_left": range(36, 42),
    "eye_image_right": range(42, 48),
    "lip_outer": range(48, 60),
    "lip_inner": range(60, 68),
}

_MESH_INDEX = np.asarray(MESH_TO_IBUG68, np.int64)


def ibug68_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) float32 iBUG points from a mediapipe mesh ((468|478, 2|3), any pixel frame).

    The points are in whatever frame the mesh is in: pass `FaceGeometry.landmarks` for
    original pixels, `FaceGeometry.landmarks_crop` for crop pixels.
    """
    mesh = np.asarray(landmarks)
    if mesh.ndim != 2 or mesh.shape[0] < N_SURFACE or mesh.shape[1] not in (2, 3):
        raise ValueError(f"expected a (468|478, 2|3) mediapipe mesh, got shape {mesh.shape}")
    return np.ascontiguousarray(mesh[_MESH_INDEX, :2], dtype=np.float32)


def ibug68_normalised(landmarks68: np.ndarray, crop_transform: np.ndarray,
                      crop_size: int | tuple[int, int], clip: bool = False) -> np.ndarray:
    """(68, 2) float32 points in [0, 1] crop coordinates (x / crop width, y / crop height).

    `landmarks68` are in original pixels, `crop_transform` is the 2x3 original -> crop
    affine and `crop_size` the crop side or (w, h) (`FaceGeometry.crop_transform`,
    `FaceGeometry.crop_size`).  Points outside the crop fall outside [0, 1] unless
    `clip` is set.
    """
    points = np.asarray(landmarks68, np.float64)
    if points.shape != (N_IBUG, 2):
        raise ValueError(f"expected (68, 2) points, got shape {points.shape}")
    w, h = (crop_size, crop_size) if np.isscalar(crop_size) else crop_size
    unit = apply_affine(np.asarray(crop_transform, np.float64), points) / np.array([w, h], float)
    if clip:
        unit = np.clip(unit, 0.0, 1.0)
    return unit.astype(np.float32)


# -- optional FAN landmarker ---------------------------------------------------------


class LandmarkerUnavailable(RuntimeError):
    """A landmarker cannot run here: its package or its weight files are missing."""


# Files face-alignment 1.4.1 fetches into the torch hub cache, by name.  (Its other
# 2DFAN4 builds are for torch 1.5/1.6 only; the `fan` extra pins a torch 2 build.)
FAN_WEIGHTS = "2DFAN4-cd938726ad.zip"  # TorchScript 2D-FAN, 68 points
S3FD_WEIGHTS = "s3fd-619a316812.pth"  # S3FD face detector state dict
FAN_WEIGHT_URLS = {
    FAN_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip",
    S3FD_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}
# face-alignment's crop convention: the face box's centre moved up by 12 % of its
# height, side (w + h) / 195 * 200 px, resampled to 256 px (api.py, 1.4.1).
_FAN_REFERENCE_SCALE = 195.0
_FAN_CENTER_SHIFT = 0.12


def torch_hub_checkpoints_dir() -> Path:
    """Where torch (and so face-alignment) caches downloads: $TORCH_HOME/hub/checkpoints.

    Same rule as `torch.hub.get_dir()` without importing torch: $TORCH_HOME, else
    $XDG_CACHE_HOME/torch, else ~/.cache/torch.
    """
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.getenv("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


class FanLandmarker:
    """68-point 2D-FAN landmarks (face-alignment 1.4.1), only from local weights.

    Needs the `fan` extra (``pip install 'facext[fan]'``: face-alignment and torch)
    and these files in `weights_dir` (default: the torch hub cache,
    ``$TORCH_HOME/hub/checkpoints``, normally ``~/.cache/torch/hub/checkpoints``):

    * ``2DFAN4-cd938726ad.zip`` - the landmark network,
      https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip
    * ``s3fd-619a316812.pth`` - the face detector, only when `landmarks` is called
      without a box (skip it with ``with_detector=False``),
      https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth

    Download them on a machine with internet access (or run face-alignment there
    once, which fills its own hub cache) and copy them into `weights_dir`; the
    names must stay as they are.  Everything is checked before anything is built:
    a missing package or file raises `LandmarkerUnavailable` naming what is missing
    and where it belongs, instead of face-alignment's attempt to download.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str = "cpu",
                 with_detector: bool = True):
        self.weights_dir = Path(weights_dir) if weights_dir is not None else torch_hub_checkpoints_dir()
        self.device = device
        self.with_detector = with_detector
        self._check_available()

        try:  # heavy imports only once the files are known to be there
            import torch
            from face_alignment.utils import crop, get_preds_fromhm
        except ImportError as err:  # e.g. a dependency of face-alignment (numba) is missing
            raise LandmarkerUnavailable(f"FAN landmarker unavailable: {err}") from err

        self._torch = torch
        self._crop = crop
        self._preds_from_heatmaps = get_preds_fromhm
        self._net = torch.jit.load(str(self.weights_dir / FAN_WEIGHTS), map_location=device)
        self._net.eval()
        self._detector = None
        if with_detector:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector

            self._detector = SFDDetector(device=device,
                                         path_to_detector=str(self.weights_dir / S3FD_WEIGHTS))

    @property
    def needed_files(self) -> tuple[str, ...]:
        return (FAN_WEIGHTS, S3FD_WEIGHTS) if self.with_detector else (FAN_WEIGHTS,)

    def _check_available(self) -> None:
        problems = []
        missing_packages = [name for name in ("face_alignment", "torch")
                            if importlib.util.find_spec(name) is None]
        if missing_packages:
            problems.append(
                f"Python package(s) not installed: {', '.join(missing_packages)} "
                "(pip install 'facext[fan]', i.e. face-alignment==1.4.1 and torch)."
            )
        missing_files = [name for name in self.needed_files
                         if not (self.weights_dir / name).is_file()]
        if missing_files:
            listing = "; ".join(f"{name} (from {FAN_WEIGHT_URLS[name]})" for name in missing_files)
            problems.append(
                f"Weight file(s) missing from {self.weights_dir}: {listing}. Put them in that "
                "folder under exactly these names, or pass weights_dir= the folder that holds them."
            )
        if problems:
            raise LandmarkerUnavailable("FAN landmarker unavailable. " + " ".join(problems))

    def detect(self, image_rgb: np.ndarray) -> tuple[float, float, float, float]:
        """The S3FD box (x0, y0, x1, y1) of the most confident face, or `FaceRejected`."""
        if self._detector is None:
            raise ValueError("built with with_detector=False: pass the face box")
        boxes = self._detector.detect_from_image(np.ascontiguousarray(image_rgb).copy())
        if len(boxes) == 0:
            raise FaceRejected(RejectReason.NO_FACE, "S3FD found no face")
        best = max(boxes, key=lambda b: b[4])
        return tuple(float(v) for v in best[:4])

    def landmarks(self, image_rgb: np.ndarray,
                  box: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """(68, 2) float32 iBUG points in the image's pixels for one face.

        `box` is (x0, y0, x1, y1) in pixels, in S3FD's convention (a box around
        brows-to-chin; grow tighter boxes a little); without it S3FD finds the face.
        """
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (h, w, 3), got shape {image.shape}")
        x0, y0, x1, y1 = self.detect(image) if box is None else box
        torch = self._torch
        center = torch.tensor([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        center[1] -= (y1 - y0) * _FAN_CENTER_SHIFT
        scale = ((x1 - x0) + (y1 - y0)) / _FAN_REFERENCE_SCALE
        patch = self._crop(image, center, scale)  # 256x256 uint8 RGB
        inp = torch.from_numpy(patch.transpose(2, 0, 1).copy()).float()
        inp = inp.to(self.device).div_(255.0).unsqueeze_(0)
        with torch.no_grad():
            heatmaps = self._net(inp).detach().to("cpu", torch.float32).numpy()
        _, points, _ = self._preds_from_heatmaps(heatmaps, center.numpy(), scale)
        return np.ascontiguousarray(points.reshape(N_IBUG, 2), dtype=np.float32)

"""An independent fidelity set for artifact-mask tools: real/fake face pairs with exact ground truth.

The set measures how well a tool recovers the pixels a fake changed relative to its real image.
It is written separately from the project's own sample generator, on purpose with different code
and different assumptions, so a tool can be scored on data its authors did not make:

* Framing: every pair starts from one of the two offline photos (`astronaut`, `grace_hopper`)
  placed on a fresh canvas (longer side 384-640 px, portrait aspect 1.0-1.25) by a random
  similarity transform: the face is 30-60 % of the canvas width, rotated by up to +-10 degrees,
  shifted, and mirrored half of the time.  The edit is applied to this framed image, so faces
  are never at a fixed size or position.
* Facial parts come from MediaPipe FaceMesh (478 points with irises), run once per photo on the
  original image; the points are carried through the framing transform.
* Local edits (16 families, half of them one-sided) have soft borders (a Gaussian feather of
  1-3 px on the region mask) and are scaled so that their peak change is drawn from 3-30 grey
  levels.  Filters (blur, smoothing, sharpening), textures (lines, wrinkles, freckles), colour
  tints, darkening, a small warp and a small spot are all represented, not one kind of blend:

    lip_recolor      lips (outer minus inner lip contour) tinted to a new lipstick colour
    brow_darken      one eyebrow darkened
    iris_recolor     one iris (clipped to the eye opening) recoloured
    nose_blur        the nose blurred
    forehead_lines   fine wavy horizontal lines darkened into the forehead
    cheek_blush      a soft red blush on one cheek
    mole             one dark spot, 5-12 px across, on one cheek
    lip_corner_lift  one mouth corner warped upwards by a few pixels, faintly tinted
    eye_sharpen      one eye sharpened and brightened
    skin_smooth      chin or both lower cheeks smoothed
    nose_contour     shading bands down both sides of the nose
    crows_feet       a fan of fine wrinkle lines at the outer corner of one eye
    freckles         a scatter of small brown dots over the nose bridge and cheeks
    eye_bag          darkening under one eye
    teeth_whiten     visible teeth whitened (only photos with an open mouth: the astronaut)
    hairline_tint    hair just above the forehead tinted (only the astronaut; Hopper wears a cap)

* Encodings of local pairs: about 70 % JPEG with an independent quality (80-95) per side, 15 %
  lossless PNG, 15 % where both images were downscaled (0.6-0.95, INTER_AREA or INTER_LINEAR)
  after the edit and then JPEG-encoded.  `encoding` reads "jpeg:REAL/FAKE", "png" or
  "resampled:FACTOR:INTERPOLATION+jpeg:REAL/FAKE".
* Negatives (about 10 % `expect: "empty"`): `identical` (one file written twice), `reencode`
  (PNG real, quality-90 JPEG fake) and `recompress` (two different JPEG qualities), all with an
  empty mask.  About 15 % are `expect: "global"`: `global_grade` (hue/saturation/value),
  `global_brightness_contrast` (every other one of these two is a weak change of 6-15 levels),
  `global_resample` (a local edit, then only the fake is scaled down and back up),
  `global_rerender` (blur, unsharp mask and noise over everything) and `entire_synthesis`
  (cartoon, false-colour or sepia+CLAHE restyling of the whole, still aligned image).

Ground-truth rule: a pixel is changed when the fake differs from the real image by more than 4
grey levels in any RGB channel, compared on the uint8 images after the edit (and after the
resampling, for pairs where both images were resampled) but before compression.  The mask is a
single-channel PNG (255 = changed) in the stored real image's coordinates; `gt_pixels` counts it.
Compression noise is therefore never part of the truth, and a local edit whose peak is 4 levels
or less has an empty mask.

Sides: `side` and the `region` text use IMAGE sides as the viewer sees them ("left" = the left
half of the picture, relative to the face's midline), not the person's sides; the person's left
appears on the image right in an unmirrored photo.  `side` is null for two-sided edits.

`amplitude` is the largest |fake - real| over pixels and channels, measured on the uint8 images
before the both-sides resampling and before compression (0 for the empty families).  For local
edits it equals the drawn target except where a filter edit could not reach it without
over-shooting, or where the image clipped at 0/255; colour grades and brightness/contrast are
scaled to a drawn peak; the other global families report whatever peak they produced.

Splits: tune/report alternate within every (family, photo) group, and each group starts on the
half that is short of its family, then its photo, so every family and both photos are split to
within a pair or so.  Every pair has its own random generator seeded by (seed, pair index);
the same seed gives byte-identical files (fixed Pillow JPEG/PNG settings).

Manifest (`manifest.jsonl`, paths relative to the output folder), one row per pair with keys:
pair_id, real, fake, gt_mask, method, family, category, subject_id, split, expect, amplitude,
encoding, gt_pixels, one_sided, side, region.

    python -m build_tools.bench.fidelity_set OUT [--pairs N] [--seed S]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipelines.vision.face_photos import astronaut, grace_hopper

SUBJECTS: tuple[str, ...] = ("astronaut", "grace_hopper")
PHOTO_LOADERS: dict[str, Callable[[], np.ndarray]] = {"astronaut": astronaut, "grace_hopper": grace_hopper}
# Hair is visible just above the forehead only in the astronaut photo (Grace Hopper wears a cap).
HAIRLINE_VISIBLE: tuple[str, ...] = ("astronaut",)

CHANGE_THRESHOLD = 4  # grey levels; strictly more than this in any channel counts as changed
LOCAL_SHARE = 0.75
EMPTY_SHARE = 0.10

# ---------------------------------------------------------------------------------------------
# MediaPipe FaceMesh landmark indices (refine_landmarks=True gives 478 points).
# "A" is MediaPipe's subject-right side (image left when not mirrored), "B" the subject-left side.

LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
NOSE_HULL = [168, 122, 351, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 64, 294, 48, 278]
FOREHEAD_BOTTOM = [70, 63, 105, 66, 107, 9, 336, 296, 334, 293, 300]
FOREHEAD_TOP = [54, 103, 67, 109, 10, 338, 297, 332, 284]
FACE_LEFT_EDGE, FACE_RIGHT_EDGE = 234, 454
NOSE_BRIDGE, NOSE_TIP, CHIN, LOWER_LIP_BOTTOM = 168, 1, 152, 17
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14


@dataclass(frozen=True)
class SideIndices:
    """Landmark indices of one side of the face."""

    eye_ring: tuple[int, ...]
    brow: tuple[int, ...]
    iris_center: int
    iris_ring: tuple[int, ...]
    eye_outer: int
    eye_inner: int
    lower_lid: int
    cheek: int
    lower_cheek: int
    mouth_corner: int
    nose_side_top: int
    nose_side_bottom: int


SIDE_A = SideIndices(
    eye_ring=(33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    brow=(70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    iris_center=468, iris_ring=(469, 470, 471, 472),
    eye_outer=33, eye_inner=133, lower_lid=145, cheek=50, lower_cheek=205, mouth_corner=61,
    nose_side_top=122, nose_side_bottom=129,
)
SIDE_B = SideIndices(
    eye_ring=(263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    brow=(300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
    iris_center=473, iris_ring=(474, 475, 476, 477),
    eye_outer=263, eye_inner=362, lower_lid=374, cheek=280, lower_cheek=425, mouth_corner=291,
    nose_side_top=351, nose_side_bottom=358,
)
SIDES: tuple[SideIndices, SideIndices] = (SIDE_A, SIDE_B)

# ---------------------------------------------------------------------------------------------
# Photos and landmarks


_PHOTO_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def photo_and_landmarks(subject: str) -> tuple[np.ndarray, np.ndarray]:
    """The RGB uint8 photo and its (478, 2) FaceMesh points in pixels; computed once per process."""
    if subject not in _PHOTO_CACHE:
        import mediapipe as mp

        photo = PHOTO_LOADERS[subject]()
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                             refine_landmarks=True) as mesh:
            result = mesh.process(photo)
        if not result.multi_face_landmarks:
            raise RuntimeError(f"FaceMesh found no face in {subject}")
        h, w = photo.shape[:2]
        points = np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark],
                          dtype=np.float64)
        # Rounding guards the set against last-digit differences between inference runs.
        _PHOTO_CACHE[subject] = (photo, np.round(points, 2))
    return _PHOTO_CACHE[subject]


def mouth_is_open(points: np.ndarray) -> bool:
    """True when the inner lips are apart by more than 3 % of the face width (teeth can show)."""
    gap = np.linalg.norm(points[UPPER_LIP_INNER] - points[LOWER_LIP_INNER])
    width = np.linalg.norm(points[FACE_LEFT_EDGE] - points[FACE_RIGHT_EDGE])
    return bool(gap > 0.03 * width)


# ---------------------------------------------------------------------------------------------
# Framing


@dataclass
class Face:
    """Landmarks of the framed face and the face's own axes, all in canvas pixels."""

    points: np.ndarray  # (478, 2)
    width: float  # cheek-to-cheek distance
    down: np.ndarray  # unit vector from forehead towards chin
    across: np.ndarray  # unit vector perpendicular to `down`, pointing to image right

    def pt(self, index: int) -> np.ndarray:
        return self.points[index]

    def image_side(self, xy: np.ndarray) -> str:
        """'left' or 'right': the image half (relative to the face midline) that holds `xy`."""
        offset = float(np.dot(xy - self.points[NOSE_BRIDGE], self.across))
        return "right" if offset > 0 else "left"


def make_face(points: np.ndarray) -> Face:
    width = float(np.linalg.norm(points[FACE_LEFT_EDGE] - points[FACE_RIGHT_EDGE]))
    down = points[CHIN] - points[NOSE_BRIDGE]
    down = down / np.linalg.norm(down)
    across = np.array([-down[1], down[0]])
    if across[0] < 0:
        across = -across
    return Face(points=points, width=width, down=down, across=across)


def frame_photo(photo: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Face]:
    """Place the photo on a new canvas with a random similarity transform (see module docstring)."""
    longer = int(rng.integers(384, 641))
    aspect = float(rng.uniform(1.0, 1.25))  # height / width
    height, width = longer, round(longer / aspect)
    face_fraction = float(rng.uniform(0.30, 0.60))
    angle = math.radians(float(rng.uniform(-10.0, 10.0)))
    flip = bool(rng.random() < 0.5)

    face_width = np.linalg.norm(points[FACE_LEFT_EDGE] - points[FACE_RIGHT_EDGE])
    scale = face_fraction * width / face_width
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0])
    linear = scale * rotation @ mirror
    center = (points.min(axis=0) + points.max(axis=0)) / 2.0
    placed = (points - center) @ linear.T  # face centred on the origin

    # Translation jitter: anywhere the landmarks (plus a margin for hairline edits) stay inside.
    margin_side = 0.05 * face_fraction * width
    margin_top = 0.35 * face_fraction * width
    low = np.array([margin_side - placed[:, 0].min(), margin_top - placed[:, 1].min()])
    high = np.array([width - margin_side - placed[:, 0].max(), height - margin_side - placed[:, 1].max()])
    low, high = np.minimum(low, high), np.maximum(low, high)
    # Prefer shifts where the photo covers the whole canvas, so no border filling (which could
    # mirror a second face into the picture) is needed; otherwise edges are replicated.
    inverse = np.linalg.inv(linear)
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)
    photo_h, photo_w = photo.shape[:2]
    best_shift, best_excess = (low + high) / 2.0, math.inf
    for _ in range(40):
        shift = rng.uniform(low, high)
        source = (corners - shift) @ inverse.T + center
        excess = float(np.maximum(0.0, -source).sum()
                       + np.maximum(0.0, source[:, 0] - (photo_w - 1)).sum()
                       + np.maximum(0.0, source[:, 1] - (photo_h - 1)).sum())
        if excess < best_excess:
            best_shift, best_excess = shift, excess
        if excess == 0.0:
            break
    offset = best_shift - linear @ center
    matrix = np.hstack([linear, offset[:, None]])
    canvas = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    framed_points = points @ linear.T + offset
    return canvas, make_face(framed_points)


# ---------------------------------------------------------------------------------------------
# Mask helpers


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Filled polygon as a float32 0/1 mask (sub-pixel vertices)."""
    mask = np.zeros(shape, np.uint8)
    vertices = np.round(np.asarray(polygon) * 16).astype(np.int32)
    cv2.fillPoly(mask, [vertices], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def hull_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    hull = cv2.convexHull(np.asarray(points, np.float32))[:, 0, :]
    return polygon_mask(shape, hull)


def ellipse_coordinates(shape: tuple[int, int], center: np.ndarray, axes: tuple[float, float],
                        major: np.ndarray) -> np.ndarray:
    """Normalised elliptical radius (1.0 on the ellipse border) of every pixel."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dx, dy = xs - float(center[0]), ys - float(center[1])
    ux, uy = float(major[0]), float(major[1])
    along = dx * ux + dy * uy
    normal = -dx * uy + dy * ux
    return np.sqrt((along / axes[0]) ** 2 + (normal / axes[1]) ** 2)


def ellipse_mask(shape: tuple[int, int], center: np.ndarray, axes: tuple[float, float],
                 major: np.ndarray) -> np.ndarray:
    return (ellipse_coordinates(shape, center, axes, major) <= 1.0).astype(np.float32)


def gaussian_falloff(shape: tuple[int, int], center: np.ndarray, axes: tuple[float, float],
                     major: np.ndarray) -> np.ndarray:
    """1 at the centre, about 0.14 on the ellipse border."""
    radius = ellipse_coordinates(shape, center, axes, major)
    return np.exp(-2.0 * radius ** 2).astype(np.float32)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def grey(image: np.ndarray) -> np.ndarray:
    return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


# ---------------------------------------------------------------------------------------------
# Local edits: each returns a target image, a binary region, an optional per-pixel weight (a
# falloff or a texture) and a description.  `apply_local_edit` turns these into the fake.


@dataclass
class LocalEdit:
    target: np.ndarray  # float32 HxWx3, the fully edited look
    region: np.ndarray  # float32 HxW 0/1 envelope, feathered later
    weight: np.ndarray | None  # float32 HxW in [0, 1] or None
    region_name: str
    side: str | None
    is_filter: bool = False  # blur/sharpen style edits must not be pushed far past the filter
    max_feather: float = 3.0


EditFunction = Callable[[np.ndarray, Face, np.random.Generator], LocalEdit]


def choose_side(rng: np.random.Generator) -> SideIndices:
    return SIDES[int(rng.integers(0, 2))]


def edit_lip_recolor(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    lips = np.clip(polygon_mask(shape, face.points[LIPS_OUTER]) - polygon_mask(shape, face.points[LIPS_INNER]),
                   0, 1)
    colours = [(170, 30, 60), (215, 90, 130), (120, 40, 90), (225, 105, 80)]
    colour = np.array(colours[int(rng.integers(0, len(colours)))], np.float32)
    shade = grey(image)
    mean_shade = max(float(shade[lips > 0].mean()), 1.0)
    target = colour[None, None, :] * (shade / mean_shade)[..., None]
    return LocalEdit(target, lips, None, "lips", None)


def edit_brow_darken(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    brow = polygon_mask(shape, face.points[list(side.brow)])
    grow = max(1, round(0.015 * face.width))
    brow = cv2.dilate(brow, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    target = image * np.array([0.55, 0.5, 0.48], np.float32)
    name = face.image_side(face.points[list(side.brow)].mean(axis=0))
    return LocalEdit(target, brow, None, f"{name} eyebrow", name)


def eye_opening(shape: tuple[int, int], face: Face, side: SideIndices) -> np.ndarray:
    return polygon_mask(shape, face.points[list(side.eye_ring)])


def edit_iris_recolor(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    center = face.pt(side.iris_center)
    radius = float(np.mean(np.linalg.norm(face.points[list(side.iris_ring)] - center, axis=1)))
    circle = ellipse_mask(shape, center, (radius, radius), np.array([1.0, 0.0]))
    opening = cv2.dilate(eye_opening(shape, face, side), np.ones((3, 3), np.uint8))
    iris = circle * opening
    colours = [(60, 120, 210), (70, 150, 90), (190, 130, 40), (150, 160, 175), (130, 80, 170)]
    colour = np.array(colours[int(rng.integers(0, len(colours)))], np.float32)
    shade = grey(image)
    mean_shade = max(float(shade[iris > 0].mean()), 1.0) if iris.any() else 1.0
    target = colour[None, None, :] * (shade / mean_shade)[..., None] * 0.8
    name = face.image_side(center)
    return LocalEdit(target, iris, None, f"{name} iris", name, max_feather=1.5)


def edit_nose_blur(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    nose = hull_mask(shape, face.points[NOSE_HULL])
    sigma = float(rng.uniform(0.02, 0.035)) * face.width
    target = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return LocalEdit(target, nose, None, "nose", None, is_filter=True)


def forehead_polygon(face: Face, top_inset: float) -> np.ndarray:
    bottom = face.points[FOREHEAD_BOTTOM] - face.down * 0.04 * face.width
    top = face.points[FOREHEAD_TOP] + face.down * top_inset * face.width
    return np.vstack([bottom, top[::-1]])


def edit_forehead_lines(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    region = polygon_mask(shape, forehead_polygon(face, 0.06))
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    origin = face.pt(NOSE_BRIDGE)
    along_down = (xs - origin[0]) * face.down[0] + (ys - origin[1]) * face.down[1]
    along_across = (xs - origin[0]) * face.across[0] + (ys - origin[1]) * face.across[1]
    period = max(4.0, float(rng.uniform(0.03, 0.05)) * face.width)
    wave = float(rng.uniform(0.2, 0.6)) * period * np.sin(
        2 * np.pi * along_across / (float(rng.uniform(0.4, 0.8)) * face.width) + float(rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * (along_down + wave) / period
    lines = np.maximum(np.cos(phase), 0.0) ** 8
    target = image * 0.7
    return LocalEdit(target, region, lines.astype(np.float32), "forehead", None)


def edit_cheek_blush(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    center = face.pt(side.cheek) + face.down * 0.03 * face.width
    axes = (0.15 * face.width, 0.10 * face.width)
    region = ellipse_mask(shape, center, axes, face.across)
    falloff = gaussian_falloff(shape, center, axes, face.across)
    target = image + np.array([45.0, -12.0, -6.0], np.float32)
    name = face.image_side(center)
    return LocalEdit(target, region, falloff, f"{name} cheek", name)


def edit_mole(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    anchors = [side.cheek, side.lower_cheek, side.mouth_corner]
    anchor = face.pt(anchors[int(rng.integers(0, len(anchors)))])
    towards_ear = unit(face.pt(side.cheek) - face.pt(NOSE_TIP))
    center = anchor + towards_ear * float(rng.uniform(0.03, 0.07)) * face.width \
        + face.down * float(rng.uniform(-0.03, 0.03)) * face.width
    diameter = float(rng.uniform(5.0, 12.0))
    region = ellipse_mask(shape, center, (diameter / 2, diameter / 2 * 0.85), face.across)
    target = np.empty_like(image)
    target[:] = np.array([75.0, 50.0, 38.0], np.float32)
    name = face.image_side(center)
    return LocalEdit(target, region, None, f"mole on {name} cheek", name, max_feather=1.0)


def edit_lip_corner_lift(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    corner = face.pt(side.mouth_corner)
    reach = 0.05 * face.width
    lift = float(rng.uniform(0.015, 0.03)) * face.width
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    bump = np.exp(-((xs - corner[0]) ** 2 + (ys - corner[1]) ** 2) / (2 * reach ** 2))
    # Content moves up (against `down`): sample from below.
    map_x = (xs + face.down[0] * lift * bump).astype(np.float32)
    map_y = (ys + face.down[1] * lift * bump).astype(np.float32)
    lifted = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    target = lifted * np.array([0.96, 0.92, 0.92], np.float32)  # a faint tint on top of the lift
    region = ellipse_mask(shape, corner, (2.0 * reach, 2.0 * reach), face.across)
    name = face.image_side(corner)
    return LocalEdit(target, region, bump.astype(np.float32), f"{name} mouth corner", name)


def eye_box(face: Face, side: SideIndices) -> tuple[np.ndarray, float, np.ndarray]:
    """Centre, width and long axis of one eye."""
    outer, inner = face.pt(side.eye_outer), face.pt(side.eye_inner)
    return (outer + inner) / 2.0, float(np.linalg.norm(outer - inner)), unit(outer - inner)


def edit_eye_sharpen(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    center, eye_width, axis = eye_box(face, side)
    region = ellipse_mask(shape, center, (0.75 * eye_width, 0.5 * eye_width), axis)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=1.5, sigmaY=1.5)
    target = image + 1.6 * (image - blurred) + 10.0
    name = face.image_side(center)
    return LocalEdit(target, region, None, f"{name} eye", name, is_filter=True)


def edit_skin_smooth(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    if rng.random() < 0.5:
        center = face.pt(LOWER_LIP_BOTTOM) + 0.55 * (face.pt(CHIN) - face.pt(LOWER_LIP_BOTTOM))
        region = ellipse_mask(shape, center, (0.17 * face.width, 0.09 * face.width), face.across)
        name = "chin"
    else:
        region = np.zeros(shape, np.float32)
        for side in SIDES:
            center = face.pt(side.lower_cheek) + face.down * 0.02 * face.width
            region = np.maximum(region, ellipse_mask(shape, center, (0.11 * face.width, 0.09 * face.width),
                                                     face.across))
        name = "both cheeks"
    sigma = float(rng.uniform(0.015, 0.03)) * face.width
    target = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return LocalEdit(target, region, None, name, None, is_filter=True)


def edit_nose_contour(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    lines = np.zeros(shape, np.float32)
    thickness = max(2, round(0.04 * face.width))
    for side in SIDES:
        top = face.pt(side.nose_side_top)
        bottom = face.pt(side.nose_side_bottom)
        start = np.round((top + 0.1 * (bottom - top)) * 16).astype(np.int32)
        end = np.round(bottom * 16).astype(np.int32)
        cv2.line(lines, tuple(int(v) for v in start), tuple(int(v) for v in end), 1.0, thickness,
                 lineType=cv2.LINE_AA, shift=4)
    soft = cv2.GaussianBlur(lines, (0, 0), sigmaX=0.015 * face.width, sigmaY=0.015 * face.width)
    soft = soft / max(float(soft.max()), 1e-6)
    region = (soft > 0.05).astype(np.float32)
    target = image * np.array([0.78, 0.74, 0.74], np.float32)
    return LocalEdit(target, region, soft, "nose sides", None)


def edit_crows_feet(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    outer = face.pt(side.eye_outer)
    outward = unit(outer - face.pt(side.eye_inner))
    origin = outer + outward * 0.03 * face.width
    lines = np.zeros(shape, np.float32)
    count = int(rng.integers(3, 6))
    for angle in np.linspace(-35.0, 35.0, count) + rng.uniform(-6.0, 6.0, size=count):
        theta = math.radians(float(angle))
        direction = np.array([outward[0] * math.cos(theta) - outward[1] * math.sin(theta),
                              outward[0] * math.sin(theta) + outward[1] * math.cos(theta)])
        length = float(rng.uniform(0.06, 0.11)) * face.width
        bend = np.array([-direction[1], direction[0]]) * float(rng.uniform(-0.15, 0.15)) * length
        pts = np.array([origin, origin + direction * length * 0.5 + bend, origin + direction * length])
        cv2.polylines(lines, [np.round(pts * 16).astype(np.int32)], False, 1.0, 1, lineType=cv2.LINE_AA,
                      shift=4)
    lines = cv2.GaussianBlur(lines, (0, 0), sigmaX=0.6, sigmaY=0.6)
    lines = lines / max(float(lines.max()), 1e-6)
    center = origin + outward * 0.05 * face.width
    region = ellipse_mask(shape, center, (0.09 * face.width, 0.09 * face.width), outward)
    target = image * 0.72
    name = face.image_side(outer)
    return LocalEdit(target, region, lines, f"{name} eye corner (crow's feet)", name)


def edit_freckles(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    center = face.pt(NOSE_BRIDGE) + 0.6 * (face.pt(NOSE_TIP) - face.pt(NOSE_BRIDGE))
    axes = (0.30 * face.width, 0.08 * face.width)
    region = ellipse_mask(shape, center, axes, face.across)
    dots = np.zeros(shape, np.float32)
    count = int(rng.integers(20, 45))
    for _ in range(count):
        radius = math.sqrt(float(rng.random()))
        angle = float(rng.uniform(0, 2 * np.pi))
        offset = face.across * axes[0] * radius * math.cos(angle) + face.down * axes[1] * radius * math.sin(angle)
        spot = center + offset
        size = float(rng.uniform(0.8, 2.0))
        strength = float(rng.uniform(0.5, 1.0))
        cv2.circle(dots, (int(np.rint(spot[0] * 16)), int(np.rint(spot[1] * 16))), round(size * 16), strength,
                   -1, lineType=cv2.LINE_AA, shift=4)
    dots = cv2.GaussianBlur(dots, (0, 0), sigmaX=0.7, sigmaY=0.7)
    dots = np.clip(dots / max(float(dots.max()), 1e-6), 0, 1)
    target = image * np.array([0.72, 0.78, 0.88], np.float32)
    return LocalEdit(target, region, dots, "nose bridge and cheeks (freckles)", None)


def edit_eye_bag(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    side = choose_side(rng)
    shape = image.shape[:2]
    _, eye_width, axis = eye_box(face, side)
    center = face.pt(side.lower_lid) + face.down * 0.4 * eye_width
    axes = (0.55 * eye_width, 0.22 * eye_width)
    region = ellipse_mask(shape, center, axes, axis)
    falloff = gaussian_falloff(shape, center, axes, axis)
    target = image * np.array([0.84, 0.8, 0.88], np.float32)
    name = face.image_side(center)
    return LocalEdit(target, region, falloff, f"under {name} eye", name)


def edit_teeth_whiten(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    mouth = polygon_mask(shape, face.points[LIPS_INNER])
    mouth = cv2.erode(mouth, np.ones((3, 3), np.uint8))
    bright = (grey(image) > 100).astype(np.float32)
    teeth = mouth * bright
    if teeth.sum() < 10:
        raise ValueError("no teeth visible")
    target = image + (np.array([248.0, 248.0, 252.0], np.float32) - image) * np.array([0.5, 0.55, 0.7],
                                                                                          np.float32)
    return LocalEdit(target, teeth, None, "teeth", None, max_feather=1.5)


def edit_hairline_tint(image: np.ndarray, face: Face, rng: np.random.Generator) -> LocalEdit:
    shape = image.shape[:2]
    top = face.points[FOREHEAD_TOP]
    lower = top - face.down * 0.02 * face.width
    upper = top - face.down * 0.22 * face.width
    region = polygon_mask(shape, np.vstack([lower, upper[::-1]]))
    tints = [(1.2, 0.9, 0.8), (0.85, 0.92, 1.15), (1.12, 1.05, 0.78)]
    tint = np.array(tints[int(rng.integers(0, len(tints)))], np.float32)
    target = image * tint
    return LocalEdit(target, region, None, "hair at the hairline", None)


LOCAL_FAMILIES: tuple[tuple[str, EditFunction], ...] = (
    ("lip_recolor", edit_lip_recolor),
    ("brow_darken", edit_brow_darken),
    ("iris_recolor", edit_iris_recolor),
    ("nose_blur", edit_nose_blur),
    ("forehead_lines", edit_forehead_lines),
    ("cheek_blush", edit_cheek_blush),
    ("mole", edit_mole),
    ("lip_corner_lift", edit_lip_corner_lift),
    ("eye_sharpen", edit_eye_sharpen),
    ("skin_smooth", edit_skin_smooth),
    ("nose_contour", edit_nose_contour),
    ("crows_feet", edit_crows_feet),
    ("freckles", edit_freckles),
    ("eye_bag", edit_eye_bag),
    ("teeth_whiten", edit_teeth_whiten),
    ("hairline_tint", edit_hairline_tint),
)
LOCAL_EDITS: dict[str, EditFunction] = dict(LOCAL_FAMILIES)
EMPTY_FAMILIES: tuple[str, ...] = ("identical", "reencode", "recompress")
GLOBAL_FAMILIES: tuple[str, ...] = ("global_grade", "global_brightness_contrast", "global_resample",
                                    "global_rerender", "entire_synthesis")


def family_subjects(family: str) -> tuple[str, ...]:
    """The photos a family can be applied to (teeth need an open mouth; hair must be visible)."""
    if family == "teeth_whiten":
        return tuple(s for s in SUBJECTS if mouth_is_open(photo_and_landmarks(s)[1]))
    if family == "hairline_tint":
        return HAIRLINE_VISIBLE
    return SUBJECTS


def apply_local_edit(real: np.ndarray, edit: LocalEdit, amplitude: float, feather_sigma: float) -> np.ndarray:
    """Blend the edit into `real` with a feathered mask, scaled so its peak change is `amplitude`.

    The scale is set from the 98th percentile of the change inside the edit's core, and the
    change is clipped at +-amplitude, so a few extreme pixels cannot make the rest invisible.
    """
    base = real.astype(np.float32)
    sigma = min(feather_sigma, edit.max_feather)
    alpha = feather(edit.region, sigma)
    if edit.weight is not None:
        alpha = alpha * edit.weight
    delta = (edit.target - base) * alpha[..., None]
    magnitude = np.abs(delta).max(axis=2)
    core = magnitude[alpha >= 0.5 * float(alpha.max())]
    reference = float(np.percentile(core, 98)) if core.size else 0.0
    if reference <= 1e-6:
        raise ValueError("edit changed nothing")
    scale = amplitude / reference
    if edit.is_filter:
        scale = min(scale, 2.0)
    delta = np.clip(delta * scale, -amplitude, amplitude)
    return np.clip(np.rint(base + delta), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Global changes


def scale_to_peak(real: np.ndarray, target: np.ndarray, amplitude: float) -> np.ndarray:
    """The fake whose change from `real` is `target - real` scaled to a peak of `amplitude`."""
    base = real.astype(np.float32)
    delta = target - base
    peak = float(np.abs(delta).max())
    if peak > 1e-6:
        delta = delta * (amplitude / peak)
    return np.clip(np.rint(base + delta), 0, 255).astype(np.uint8)


def global_grade(real: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    hsv = cv2.cvtColor(real.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hue_shift = float(rng.uniform(4.0, 14.0)) * (1 if rng.random() < 0.5 else -1)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_shift, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * float(rng.uniform(0.75, 1.3)), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * float(rng.uniform(0.88, 1.12)), 0, 1)
    target = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    return scale_to_peak(real, target, amplitude)


def global_brightness_contrast(real: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    contrast = float(rng.uniform(0.85, 1.2))
    brightness = float(rng.uniform(-20.0, 20.0))
    target = (real.astype(np.float32) - 128.0) * contrast + 128.0 + brightness
    return scale_to_peak(real, target, amplitude)


def global_rerender(real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild blur, an unsharp mask and sensor-like noise over the whole image."""
    image = real.astype(np.float32)
    blur = float(rng.uniform(0.6, 1.2))
    soft = cv2.GaussianBlur(image, (0, 0), sigmaX=blur, sigmaY=blur)
    amount = float(rng.uniform(0.5, 1.2))
    sharp = soft + amount * (soft - cv2.GaussianBlur(soft, (0, 0), sigmaX=2.0, sigmaY=2.0))
    noisy = sharp + rng.normal(0.0, float(rng.uniform(1.0, 3.0)), size=image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def resample_down_up(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    factor = float(rng.uniform(0.35, 0.65))
    down_flag = (cv2.INTER_AREA, cv2.INTER_LINEAR)[int(rng.integers(0, 2))]
    up_flag = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(0, 2))]
    small = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                       interpolation=down_flag)
    return cv2.resize(small, (width, height), interpolation=up_flag)


SYNTHESIS_STYLES: tuple[str, ...] = ("cartoon", "false_colour", "sepia_clahe")


def entire_synthesis(real: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """A whole-image transformation that keeps every facial part where it was."""
    if style == "cartoon":
        smooth = real.copy()
        for _ in range(3):
            smooth = cv2.bilateralFilter(smooth, 7, 40, 7)
        levels = int(rng.integers(5, 10))
        step = 256.0 / levels
        flat = (np.floor(smooth.astype(np.float32) / step) + 0.5) * step
        edges = cv2.adaptiveThreshold(cv2.medianBlur(cv2.cvtColor(real, cv2.COLOR_RGB2GRAY), 5), 255,
                                      cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
        result = flat * (edges[..., None].astype(np.float32) / 255.0 * 0.75 + 0.25)
    elif style == "false_colour":
        hsv = cv2.cvtColor(real.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + float(rng.uniform(90.0, 270.0)), 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * float(rng.uniform(1.2, 1.6)) + 0.1, 0, 1)
        result = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    else:  # sepia tone with strong local contrast
        sepia = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        toned = np.clip(real.astype(np.float32) @ sepia.T, 0, 255).astype(np.uint8)
        lab = cv2.cvtColor(toned, cv2.COLOR_RGB2LAB)
        clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
        lab[..., 0] = clahe.apply(lab[..., 0])
        result = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32)
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Encoding and ground truth


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality), subsampling=2, optimize=False,
                                progressive=False)
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


def change_mask(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """255 where any channel differs by more than CHANGE_THRESHOLD grey levels."""
    difference = np.abs(real.astype(np.int16) - fake.astype(np.int16)).max(axis=2)
    return np.where(difference > CHANGE_THRESHOLD, 255, 0).astype(np.uint8)


def peak_change(real: np.ndarray, fake: np.ndarray) -> int:
    return int(np.abs(real.astype(np.int16) - fake.astype(np.int16)).max())


def resize_both(real: np.ndarray, fake: np.ndarray, factor: float, flag: int) -> tuple[np.ndarray, np.ndarray]:
    height, width = real.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(real, size, interpolation=flag), cv2.resize(fake, size, interpolation=flag)


# ---------------------------------------------------------------------------------------------
# The plan: which family, photo, encoding and split each pair gets


@dataclass
class PlannedPair:
    index: int
    family: str
    expect: str
    subject: str
    encoding_kind: str  # "jpeg", "png" or "resampled"
    occurrence: int  # how many earlier pairs had the same family
    split: str = ""


def family_counts(families: tuple[str, ...], total: int, rng: np.random.Generator) -> list[str]:
    """`total` family names, as even as possible; which families get the remainder is random."""
    names: list[str] = []
    while len(names) < total:
        order = rng.permutation(len(families))
        names.extend(families[int(i)] for i in order)
    return names[:total]


def make_plan(pairs: int, seed: int) -> list[PlannedPair]:
    rng = np.random.default_rng([seed, 7919])
    n_local = round(LOCAL_SHARE * pairs)
    n_empty = round(EMPTY_SHARE * pairs)
    n_global = pairs - n_local - n_empty
    local_names = [name for name, _ in LOCAL_FAMILIES]
    entries = ([(f, "local") for f in family_counts(tuple(local_names), n_local, rng)]
               + [(f, "empty") for f in family_counts(EMPTY_FAMILIES, n_empty, rng)]
               + [(f, "global") for f in family_counts(GLOBAL_FAMILIES, n_global, rng)])

    # Local encodings: 70 % JPEG, 15 % PNG, 15 % resampled, in a random order.
    n_png = round(0.15 * n_local)
    n_resampled = round(0.15 * n_local)
    local_kinds = ["png"] * n_png + ["resampled"] * n_resampled + ["jpeg"] * (n_local - n_png - n_resampled)
    local_kinds = [local_kinds[int(i)] for i in rng.permutation(n_local)]

    order = rng.permutation(len(entries))
    family_index = {name: i for i, name in enumerate(local_names + list(EMPTY_FAMILIES) + list(GLOBAL_FAMILIES))}
    seen: dict[str, int] = {}
    plan: list[PlannedPair] = []
    local_seen = 0
    for position, entry_index in enumerate(order):
        family, expect = entries[int(entry_index)]
        occurrence = seen.get(family, 0)
        seen[family] = occurrence + 1
        allowed = family_subjects(family) if expect == "local" else SUBJECTS
        subject = allowed[(occurrence + family_index[family]) % len(allowed)]
        if expect == "local":
            kind = local_kinds[local_seen]
            local_seen += 1
        else:
            kind = "jpeg" if rng.random() < 0.8 else "png"
        plan.append(PlannedPair(position, family, expect, subject, kind, occurrence))
    assign_splits(plan)
    return plan


def assign_splits(plan: list[PlannedPair]) -> None:
    """Deterministic tune/report halves, balanced over families and photos.

    Pairs of one (family, photo) group alternate between the splits.  A group starts with the
    split that holds fewer pairs of its family so far, then fewer of its photo, then fewer of its
    expect class (ties: "tune"), so odd group sizes do not pile up on one side.
    """
    groups: dict[tuple[str, str], list[PlannedPair]] = {}
    for item in plan:
        groups.setdefault((item.family, item.subject), []).append(item)
    counts: dict[tuple[str, str], int] = {}
    for key in sorted(groups):
        members = groups[key]
        labels = (members[0].family, members[0].subject, members[0].expect)
        load_tune = tuple(counts.get((label, "tune"), 0) for label in labels)
        load_report = tuple(counts.get((label, "report"), 0) for label in labels)
        first = "report" if load_report < load_tune else "tune"
        second = "report" if first == "tune" else "tune"
        for k, item in enumerate(members):
            item.split = first if k % 2 == 0 else second
            for label in labels:
                counts[(label, item.split)] = counts.get((label, item.split), 0) + 1


# ---------------------------------------------------------------------------------------------
# Building one pair


@dataclass
class BuiltPair:
    real: np.ndarray
    fake: np.ndarray
    truth: np.ndarray
    amplitude: int  # measured peak |fake - real|
    region: str
    side: str | None
    real_bytes: bytes
    fake_bytes: bytes
    real_ext: str
    fake_ext: str
    encoding: str


def draw_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(80, 96))


def run_local_edit(framed: np.ndarray, face: Face, family: str, rng: np.random.Generator,
                   amplitude: float) -> tuple[np.ndarray, LocalEdit]:
    edit = LOCAL_EDITS[family](framed.astype(np.float32), face, rng)
    feather_sigma = float(rng.uniform(1.0, 3.0))
    fake = apply_local_edit(framed, edit, amplitude, feather_sigma)
    return fake, edit


def encode_sides(real: np.ndarray, fake: np.ndarray, kind: str, rng: np.random.Generator,
                 prefix: str = "") -> tuple[bytes, bytes, str, str, str]:
    if kind == "png":
        return encode_png(real), encode_png(fake), ".png", ".png", prefix + "png"
    q_real, q_fake = draw_quality(rng), draw_quality(rng)
    return (encode_jpeg(real, q_real), encode_jpeg(fake, q_fake), ".jpg", ".jpg",
            f"{prefix}jpeg:{q_real}/{q_fake}")


def build_pair(item: PlannedPair, seed: int) -> BuiltPair:
    rng = np.random.default_rng([seed, item.index])
    photo, points = photo_and_landmarks(item.subject)
    real, face = frame_photo(photo, points, rng)

    if item.expect == "local":
        amplitude = float(rng.uniform(3.0, 30.0))
        fake, edit = run_local_edit(real, face, item.family, rng, amplitude)
        measured = peak_change(real, fake)
        prefix = ""
        if item.encoding_kind == "resampled":
            factor = float(rng.uniform(0.6, 0.95))
            flag, flag_name = ((cv2.INTER_AREA, "area"), (cv2.INTER_LINEAR, "linear"))[int(rng.integers(0, 2))]
            real, fake = resize_both(real, fake, factor, flag)
            prefix = f"resampled:{factor:.2f}:{flag_name}+"
            kind = "jpeg"
        else:
            kind = item.encoding_kind
        real_bytes, fake_bytes, real_ext, fake_ext, encoding = encode_sides(real, fake, kind, rng, prefix)
        return BuiltPair(real, fake, change_mask(real, fake), measured, edit.region_name, edit.side,
                         real_bytes, fake_bytes, real_ext, fake_ext, encoding)

    if item.expect == "empty":
        empty = np.zeros(real.shape[:2], np.uint8)
        if item.family == "identical":
            if item.encoding_kind == "png":
                data, ext, encoding = encode_png(real), ".png", "png"
            else:
                quality = draw_quality(rng)
                data, ext, encoding = encode_jpeg(real, quality), ".jpg", f"jpeg:{quality}/{quality}"
            return BuiltPair(real, real, empty, 0, "none", None, data, data, ext, ext, encoding)
        if item.family == "reencode":
            return BuiltPair(real, real, empty, 0, "none", None, encode_png(real), encode_jpeg(real, 90),
                             ".png", ".jpg", "png/jpeg:90")
        # recompress: two different JPEG qualities of the same pixels
        q_real = draw_quality(rng)
        q_fake = draw_quality(rng)
        while q_fake == q_real:
            q_fake = draw_quality(rng)
        return BuiltPair(real, real, empty, 0, "none", None, encode_jpeg(real, q_real), encode_jpeg(real, q_fake),
                         ".jpg", ".jpg", f"jpeg:{q_real}/{q_fake}")

    # global families
    region = "whole image"
    weak = item.occurrence % 2 == 1  # every other grade is a weak one
    if item.family == "global_grade":
        amplitude = float(rng.uniform(6.0, 15.0) if weak else rng.uniform(20.0, 45.0))
        fake = global_grade(real, rng, amplitude)
        region = "whole image (weak colour grade)" if weak else "whole image (colour grade)"
    elif item.family == "global_brightness_contrast":
        amplitude = float(rng.uniform(6.0, 15.0) if weak else rng.uniform(20.0, 45.0))
        fake = global_brightness_contrast(real, rng, amplitude)
        region = "whole image (weak brightness/contrast)" if weak else "whole image (brightness/contrast)"
    elif item.family == "global_resample":
        options = [name for name, _ in LOCAL_FAMILIES if item.subject in family_subjects(name)]
        inner = options[int(rng.integers(0, len(options)))]
        edited, _ = run_local_edit(real, face, inner, rng, float(rng.uniform(8.0, 30.0)))
        fake = resample_down_up(edited, rng)
        region = f"whole image (fake resampled after {inner})"
    elif item.family == "global_rerender":
        fake = global_rerender(real, rng)
        region = "whole image (re-rendered)"
    else:
        style = SYNTHESIS_STYLES[item.occurrence % len(SYNTHESIS_STYLES)]
        fake = entire_synthesis(real, style, rng)
        region = f"whole image (stylised: {style})"
    real_bytes, fake_bytes, real_ext, fake_ext, encoding = encode_sides(real, fake, item.encoding_kind, rng)
    return BuiltPair(real, fake, change_mask(real, fake), peak_change(real, fake), region, None,
                     real_bytes, fake_bytes, real_ext, fake_ext, encoding)


def category_of(family: str, expect: str) -> str:
    if family == "entire_synthesis":
        return "entire synthesis"
    if expect == "global":
        return "face editing"
    return "attribute manipulation"


def make_fidelity_set(out: Path, pairs: int = 120, seed: int = 0) -> list[dict]:
    """Write `pairs` pairs, their ground-truth masks and `manifest.jsonl` under `out`; return the rows."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for item in make_plan(pairs, seed):
        built = build_pair(item, seed)
        pair_id = f"fid_{item.index:04d}"
        real_path = f"images/{pair_id}_real{built.real_ext}"
        fake_path = f"images/{pair_id}_fake{built.fake_ext}"
        mask_path = f"masks/{pair_id}_gt.png"
        (out / real_path).write_bytes(built.real_bytes)
        (out / fake_path).write_bytes(built.fake_bytes)
        (out / mask_path).write_bytes(encode_png(built.truth))
        rows.append({
            "pair_id": pair_id,
            "real": real_path,
            "fake": fake_path,
            "gt_mask": mask_path,
            "method": item.family,
            "family": item.family,
            "category": category_of(item.family, item.expect),
            "subject_id": item.subject,
            "split": item.split,
            "expect": item.expect,
            "amplitude": built.amplitude,
            "encoding": built.encoding,
            "gt_pixels": int(np.count_nonzero(built.truth)),
            "one_sided": built.side is not None,
            "side": built.side,
            "region": built.region,
        })
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (created if missing)")
    parser.add_argument("--pairs", type=int, default=120, help="number of pairs (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = make_fidelity_set(args.out, pairs=args.pairs, seed=args.seed)
    elapsed = time.perf_counter() - start
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["expect"]] = counts.get(row["expect"], 0) + 1
    summary = ", ".join(f"{key} {counts[key]}" for key in ("local", "empty", "global") if key in counts)
    print(f"wrote {len(rows)} pairs to {args.out} ({summary}) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()

"""Real/fake face pairs with known ground truth, made from the face photos in packages.

Each good pair is a REAL image (one of the two shipped photos under a random similarity
transform, on a canvas of varied size) and a FAKE made from it by one local attribute
edit (`EDITS`: lips, brows, irises, skin, wrinkles, hair, glasses, blur, sharpening,
eye bags, teeth, blush, stubble) inside a FICT region found on the real image itself
(`fict.regions.label_map`).  The edit is blended in with a soft edge `alpha`, so the
ground truth is exactly known:

    gt_mask = (alpha >= 0.5) & (mean_c |fake - real| >= 6)

taken before any noise is added.  `gt_concepts` are the atomic concepts of the edited
region that hold a clear part of that mask, measured in the aligned crop the analysis
uses.  Some pairs are re-encoded (`ENCODING_CYCLE`).  Bad pairs, one per reject reason
the analysis must give (`BAD_PAIRS`), follow the good ones: misaligned (the real shifted),
size_mismatch (the fake shrunk), not_localized (a face swap), decode_error (a truncated
fake PNG), no_face (a coffee cup), face_too_small (a 44 px face), multiple_faces (both
photos side by side, lips recoloured on one) and missing_file (a manifest row whose fake
file is never written).  Same (n, seed) gives byte-identical files.

    facext sample-data -o DIR [--n 40] [--seed 0]

writes DIR/pairs/NNNN_{real,fake,gt}.png (.jpg for JPEG pairs) and DIR/manifest.jsonl,
one row per pair: pair_id, real, fake, method, category, subject_id, gt_mask,
gt_concepts, expected_reject, encoding, source_photo, seed, and for edits
target_concepts, side (the subject's), edit, size, placement.  The missing_file row's
fake (its path ends in _fake.png) does not exist: readers of every listed file must skip
it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from fict.regions import FACE_OVAL, label_map
from fict.tree import ConceptTree, load_tree
from pipelines.vision.face_photos import PHOTOS
from pipelines.vision.faces import (
    FaceAnalyzer,
    FaceGeometry,
    FaceRejected,
    apply_affine,
    similarity_transform,
)
from schemas.common import RejectReason

CANVASES = ((512, 512), (640, 480), (480, 640), (600, 600))  # (w, h)
# Ground truth: the pixels the edit changed by more than this in some channel, measured
# before compression (the rule of the independent evaluation set, build_tools.bench.fidelity).
GT_MIN_CHANGE = 4
MIN_VISIBLE_DIFF = 14.0  # an edit must change its ground-truth pixels this much on average...
STRONG_DIFF = 14.0  # ...and at least half of them by this much (above the analysis's 12)
OUTSIDE = 255  # label of original pixels the aligned crop does not reach

# gt_concepts, measured in the analysis crop: a concept counts when the edit covers
# this much of it or it holds this much of the edit (and enough pixels).  Stricter
# than the analysis's own flags, so every listed concept is one it can find.
GT_MIN_COVERAGE = 0.15
GT_MIN_SHARE = 0.3
GT_MIN_CROP_PX = 80

# Re-encodings of good pairs, in a cycle whose length (9) is prime to the 14 methods so
# every method meets several of them: plain PNG, Gaussian noise on the fake, JPEG 92 of
# both, grey PNGs, the fake as RGBA, 16-bit PNGs.
ENCODING_CYCLE = ("png", "png", "png_noise", "png", "jpeg", "gray_png", "png", "rgba_png",
                  "png16")
NOISE_SIGMA = 1.5
JPEG_QUALITY = 92
# Face oval width of the face_too_small pair: the detector still finds it (it finds no
# face below about 38 px) but its box stays under FaceGeometryConfig.min_face_px (48).
FACE_TOO_SMALL_PX = 44
# Height both photos are scaled to, side by side, in the multiple_faces pair: their faces
# are then about 100 and 170 px wide and the detector scores both above 0.9.
MULTIPLE_FACES_HEIGHT = 512

# New bad pairs go at the end, so earlier pairs keep their indices and bytes.
BAD_PAIRS = (RejectReason.MISALIGNED, RejectReason.SIZE_MISMATCH, RejectReason.NOT_LOCALIZED,
             RejectReason.DECODE_ERROR, RejectReason.NO_FACE, RejectReason.FACE_TOO_SMALL,
             RejectReason.MULTIPLE_FACES, RejectReason.MISSING_FILE)


# --- regions on a face ---------------------------------------------------------------------


@dataclass
class FaceRegions:
    """The FICT label map of one image, in its own pixels, and what it came from."""

    tree: ConceptTree
    geometry: FaceGeometry
    labels: np.ndarray  # (h, w) uint8 atomic label, OUTSIDE where the crop does not reach
    labels_crop: np.ndarray  # (512, 512) uint8 atomic label in the aligned crop

    @cached_property
    def points(self) -> np.ndarray:
        """(478, 2) mesh points in original pixels."""
        return self.geometry.landmarks[:, :2].astype(np.float64)

    @property
    def eye_distance(self) -> float:
        """Outer eye corner to outer eye corner, original pixels: the face's scale."""
        return float(np.linalg.norm(self.points[263] - self.points[33]))

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors towards the subject's left (image right) and down the face."""
        u = self.points[263] - self.points[33]
        u /= np.linalg.norm(u)
        return u, np.array([-u[1], u[0]])

    @property
    def edge_sigma(self) -> float:
        """Blur of an edit's edge, in pixels: it grows with the face (eye distance / 120)."""
        return float(np.clip(self.eye_distance / 120, 0.5, 1.5))

    def mask(self, *concepts: str) -> np.ndarray:
        ids = [self.tree.atomic_index[a] for c in concepts for a in self.tree.atomic_descendants(c)]
        return np.isin(self.labels, ids)

    def soft(self, *concepts: str, edge: float = 1.0) -> np.ndarray:
        """The concepts' region as a blending weight with a soft edge."""
        return soft_alpha(self.mask(*concepts), edge * self.edge_sigma)


def face_regions(analyzer: FaceAnalyzer, image: np.ndarray, tree: ConceptTree) -> FaceRegions:
    """Geometry and label map of an RGB uint8 image (raises FaceRejected)."""
    h, w = image.shape[:2]
    g = analyzer.geometry(image)
    crop = g.warp(image)
    person = analyzer.segment(crop) > 0.5
    labels_crop = label_map(g.landmarks_crop, g.landmarks[:, 2], person, g.crop_size)
    reach = g.unwarp(np.ones(labels_crop.shape, np.uint8), (w, h)) > 0
    labels = np.where(reach, g.unwarp(labels_crop, (w, h)), OUTSIDE).astype(np.uint8)
    return FaceRegions(tree, g, labels, labels_crop)


# --- edits -----------------------------------------------------------------------------------


@dataclass
class Edit:
    """An edited version of the whole image and where (how much) to take it."""

    edited: np.ndarray  # (h, w, 3) float32 RGB, 0..255
    alpha: np.ndarray  # (h, w) float32 0..1: weight of `edited` in the fake
    targets: tuple[str, ...]  # the FICT nodes edited
    side: str | None  # "left", "right", "both" (subject's) or None
    detail: str  # what was done, for the manifest


def soft_alpha(region: np.ndarray, sigma: float) -> np.ndarray:
    """A region's blending weight: its mask with the edge blurred by `sigma` pixels."""
    return cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigma)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(rgb, np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1) * 255.0


def _sided(rng: np.random.Generator, concept: str, allow_both: bool = True) -> tuple[tuple[str, ...], str]:
    """`left_<concept>`, `right_<concept>` or both, chosen at random."""
    sides = ["left", "right", "both"] if allow_both else ["left", "right"]
    side = str(rng.choice(sides))
    if side == "both":
        return (f"left_{concept}", f"right_{concept}"), side
    return (f"{side}_{concept}",), side


def _side_of(concept: str) -> str | None:
    return next((side for side in ("left", "right") if concept.startswith(side + "_")), None)


def _recolour(image: np.ndarray, a: float, b: float, mix: float, d_l: float = 0.0,
              l_target: float | None = None, l_mix: float = 0.0) -> np.ndarray:
    """Move the chroma towards (a, b); shift L by d_l or pull it towards l_target."""
    lab = to_lab(image)
    lab[..., 1] += (a - lab[..., 1]) * mix
    lab[..., 2] += (b - lab[..., 2]) * mix
    if l_target is not None:
        lab[..., 0] += (l_target - lab[..., 0]) * l_mix
    lab[..., 0] = np.clip(lab[..., 0] + d_l, 0, 100)
    return from_lab(lab)


LIP_COLOURS = {"red": (58, 38, -8), "plum": (42, -4, -14), "pink": (48, 4, 8), "berry": (52, -12, -10)}


def edit_lip_recolor(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                     strength: float) -> Edit:
    """Lipstick: both lips' chroma moved to a lipstick colour, a little lighter or darker."""
    name = str(rng.choice(list(LIP_COLOURS)))
    a, b, d_l = LIP_COLOURS[name]
    region = face.mask("lips")
    edited = _recolour(img, a, b, min(1.0, 0.85 * strength), d_l * strength)
    return Edit(edited, soft_alpha(region, face.edge_sigma), ("lips",), "both", f"lips recoloured {name}")


def edit_brow_darken(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                     strength: float) -> Edit:
    """One or both eyebrows darkened (RGB scaled down)."""
    targets, side = _sided(rng, "eyebrow")
    factor = max(0.15, 1 - 0.45 * strength)
    return Edit(img * factor, face.soft(*targets), targets, side,
                f"eyebrow darkened x{factor:.2f}")


def edit_brow_thicken(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                      strength: float) -> Edit:
    """Both eyebrows filled in to the full brow band with their hair colour: fuller, darker brows."""
    region = face.mask("eyebrows")
    lum = to_lab(img)[..., 0]
    # The brow hairs are the darkest fifth of each brow region; paint the whole band
    # with their colour (a little darker), with a fine hair-like texture.
    edited = img.copy()
    for side in ("left", "right"):
        part = face.mask(f"{side}_eyebrow")
        if not part.any():
            continue
        dark = part & (lum <= np.percentile(lum[part], 20))
        colour = img[dark].mean(0) * max(0.4, 1 - 0.2 * strength)
        edited[part] = colour
    strands = cv2.GaussianBlur(rng.normal(0, 1, img.shape[:2]).astype(np.float32), (0, 0), 0.6)
    edited *= (1 + 0.08 * strands)[..., None]
    return Edit(edited, soft_alpha(region, face.edge_sigma), ("eyebrows",), "both",
                "eyebrows filled in, thicker")


IRIS_COLOURS = {"blue": (-4, -38), "green": (-32, 28), "amber": (16, 58), "violet": (34, -40)}


def edit_iris_recolor(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                      strength: float) -> Edit:
    """One or both irises recoloured (blue, green, amber, violet) and lightened."""
    targets, side = _sided(rng, "iris")
    name = str(rng.choice(list(IRIS_COLOURS)))
    a, b = IRIS_COLOURS[name]
    edited = _recolour(img, a, b, 1.0, 18 * strength)
    return Edit(edited, face.soft(*targets, edge=0.7), targets, side, f"iris recoloured {name}")


def edit_skin_smooth(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                     strength: float) -> Edit:
    """One cheek blurred and brightened, as a beauty filter does."""
    targets, side = _sided(rng, "cheek", allow_both=False)
    sigma = 0.05 * face.eye_distance * strength
    smooth = cv2.GaussianBlur(img, (0, 0), sigma)
    lab = to_lab(smooth)
    lab[..., 0] = np.clip(lab[..., 0] + 9 * strength, 0, 100)  # the glow of a beauty filter
    lab[..., 1] -= 3
    return Edit(from_lab(lab), face.soft(*targets), targets, side,
                "cheek skin smoothed and brightened")


def _draw_lines(shape, polylines: list[np.ndarray], thickness: int) -> np.ndarray:
    """Anti-aliased polylines as a float32 0..1 layer."""
    layer = np.zeros(shape, np.uint8)
    pts = [np.round(p * 16).astype(np.int32).reshape(-1, 1, 2) for p in polylines]
    cv2.polylines(layer, pts, False, 255, thickness, cv2.LINE_AA, shift=4)
    return layer.astype(np.float32) / 255.0


def edit_skin_age(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                  strength: float) -> Edit:
    """Wrinkles drawn: three furrows across the forehead, or crow's feet lines fanning
    out from one or both outer eye corners."""
    u, v = face.axes
    d = face.eye_distance
    thickness = max(2, int(round(d / 50)))
    lines = []
    if rng.random() < 0.5:
        targets, side = ("forehead",), "both"
        region = face.mask("forehead")
        # Three parallel furrows across the forehead, in the face's own frame.
        origin = face.points[168]  # between the eyes
        ys, xs = np.nonzero(region)
        rel = np.stack([xs, ys], 1) - origin
        fx, fy = rel @ u, rel @ v
        top, bottom = np.percentile(fy, 10), np.percentile(fy, 90)
        phase = rng.uniform(0, 2 * np.pi)
        for frac in (0.3, 0.55, 0.8):
            y0 = top + frac * (bottom - top)
            row = np.abs(fy - y0) < 0.03 * d
            half = 0.85 * min(-fx[row].min(), fx[row].max()) if row.any() else 0.4 * d
            x = np.linspace(-half, half, 48)
            y = y0 + 0.08 * d * (x / d) ** 2 + 0.012 * d * np.sin(x / d * 9 + phase)
            lines.append(origin + np.outer(x, u) + np.outer(y, v))
        detail = "forehead furrows drawn"
    else:
        targets, side = _sided(rng, "crows_feet_area")
        region = face.mask(*targets)
        for name in ([side] if side != "both" else ["left", "right"]):
            sign = 1 if name == "left" else -1
            corner = face.points[263 if name == "left" else 33]
            for angle in np.deg2rad([-24, 0, 22]) + rng.uniform(-0.08, 0.08, 3):
                direction = sign * (np.cos(angle) * u) + np.sin(angle) * v
                t = np.linspace(0.08, 0.42, 12) * d
                bend = 0.05 * d * (t / d) ** 2 * (1 if angle > 0 else -1)
                lines.append(corner + np.outer(t, direction) + np.outer(bend, v))
        detail = "crow's feet lines drawn"
    layer = _draw_lines(img.shape[:2], lines, thickness)
    shade = np.roll(layer, thickness, axis=0)  # a faint highlight under each fold
    lab = to_lab(img)
    lab[..., 0] = np.clip(lab[..., 0] - 26 * strength * layer + 6 * shade * (1 - layer), 0, 100)
    return Edit(from_lab(lab), soft_alpha(region, face.edge_sigma), targets, side, detail)


HAIR_COLOURS = {"platinum": (82, 2, 16), "copper": (48, 34, 44), "blue": (42, 8, -46),
                "pink": (62, 48, -2)}


def edit_hair_recolor(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                      strength: float) -> Edit:
    """Hair dyed (platinum, copper, blue, pink): chroma and lightness pulled to the colour."""
    name = str(rng.choice(list(HAIR_COLOURS)))
    l_t, a, b = HAIR_COLOURS[name]
    edited = _recolour(img, a, b, 0.85, l_target=l_t, l_mix=min(0.9, 0.55 * strength))
    # Not `long_hair`: on short hair that region is the collar below the ears.
    targets = ("front_hair", "top_hair", "side_hair")
    return Edit(edited, face.soft(*targets, edge=1.5), targets, "both", f"hair recoloured {name}")


FRAME_COLOURS = {"black": (22, 22, 26), "tortoise": (96, 54, 28), "navy": (28, 34, 80),
                 "red": (150, 28, 36)}

EYE_RING = {"left": [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249],
            "right": [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]}


def edit_glasses_overlay(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                         strength: float) -> Edit:
    """Glasses frames drawn around both eyes, with the bridge and the start of the arms."""
    name = str(rng.choice(list(FRAME_COLOURS)))
    u, v = face.axes
    p = face.points
    d = face.eye_distance
    thickness = max(2, int(round(d * 0.045 * strength)))
    angle = float(np.degrees(np.arctan2(u[1], u[0])))
    frame = np.zeros(img.shape[:2], np.uint8)
    rx, ry = 0.27 * d, 0.19 * d
    inner = {}
    for side in ("left", "right"):
        centre = p[EYE_RING[side]].mean(0) - 0.03 * d * v
        cv2.ellipse(frame, (np.round(centre * 16).astype(int).tolist()),
                    (int(rx * 16), int(ry * 16)), angle, 0, 360, 255, thickness, cv2.LINE_AA, 4)
        sign = 1 if side == "left" else -1
        inner[side] = centre - sign * rx * u
        outer = centre + sign * rx * u
        arm = np.stack([outer, outer + sign * 0.2 * d * u - 0.03 * d * v])
        cv2.polylines(frame, [np.round(arm * 16).astype(np.int32)], False, 255, thickness,
                      cv2.LINE_AA, 4)
    bridge_mid = (inner["left"] + inner["right"]) / 2 - 0.06 * d * v
    bridge = np.stack([inner["left"], bridge_mid, inner["right"]])
    cv2.polylines(frame, [np.round(bridge * 16).astype(np.int32)], False, 255, thickness,
                  cv2.LINE_AA, 4)
    # The frames stop at the face's edge (the arms go behind the hair).
    alpha = frame.astype(np.float32) / 255.0 * face.soft("face")
    edited = np.empty_like(img)
    edited[:] = FRAME_COLOURS[name]
    shade = cv2.GaussianBlur(alpha, (0, 0), 1.0)[..., None]
    edited = edited * (1.15 - 0.3 * shade)  # a little relief along the rim
    return Edit(edited, alpha, ("face",), "both", f"{name} glasses frames drawn")


BLUR_TARGETS = (("nose",), ("left_eye",), ("right_eye",), ("lips",))


def edit_region_blur(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                     strength: float) -> Edit:
    """The nose, one eye or the lips blurred and flattened, as a generator smears detail."""
    targets = BLUR_TARGETS[int(rng.integers(len(BLUR_TARGETS)))]
    side = _side_of(targets[0])
    sigma = 0.045 * face.eye_distance * strength
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    # A blurred region also loses contrast against its surround; flatten it a little.
    mean = img[face.mask(*targets)].mean(0)
    edited = blurred + (mean - blurred) * min(0.5, 0.25 * strength)
    return Edit(edited, face.soft(*targets), targets, side, f"blurred, sigma {sigma:.1f} px")


# Regions with detail to sharpen: on smooth skin sharpening only amplifies noise.
SHARPEN_TARGETS = (("left_eye",), ("right_eye",), ("lips",), ("left_eyebrow",), ("right_eyebrow",))


def edit_region_sharpen(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                        strength: float) -> Edit:
    """One eye, the lips or one eyebrow over-sharpened (unsharp mask)."""
    targets = SHARPEN_TARGETS[int(rng.integers(len(SHARPEN_TARGETS)))]
    side = _side_of(targets[0])
    sigma = max(1.0, 0.025 * face.eye_distance)
    amount = 2.0 * strength
    base = cv2.GaussianBlur(img, (0, 0), sigma)
    edited = img + amount * (img - base)
    return Edit(edited, face.soft(*targets), targets, side, f"unsharp mask x{amount:.1f}")


def edit_eye_bag_darken(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                        strength: float) -> Edit:
    """One or both eye bags darkened with a purple tint: tired eyes."""
    targets, side = _sided(rng, "eye_bag")
    lab = to_lab(img)
    lab[..., 0] = np.clip(lab[..., 0] - 16 * strength, 0, 100)
    lab[..., 1] += 6
    lab[..., 2] -= 7
    return Edit(from_lab(lab), face.soft(*targets), targets, side,
                "eye bags darkened, purple tint")


def edit_teeth_whiten(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                      strength: float) -> Edit:
    """Teeth (bright pixels of the mouth opening) whitened and de-yellowed."""
    lab = to_lab(img)
    # Whiten what is bright (teeth), leave the dark mouth interior and lip seam alone.
    teeth = np.clip((lab[..., 0] - 40) / 25, 0, 1)
    mix = min(0.95, 0.6 * strength) * teeth
    lab[..., 0] += (97 - lab[..., 0]) * mix
    lab[..., 1] *= 1 - mix
    lab[..., 2] += (-3 - lab[..., 2]) * mix
    return Edit(from_lab(lab), face.soft("mouth_opening", edge=0.8), ("mouth_opening",), None,
                "teeth whitened")


def edit_blush(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
               strength: float) -> Edit:
    """Blush: a round pink patch on one or both cheek apples."""
    targets, side = _sided(rng, "cheek_apple")
    if side != "both" and rng.random() < 0.5:  # blush is mostly worn on both cheeks
        targets, side = ("left_cheek_apple", "right_cheek_apple"), "both"
    # A round patch on each cheek apple, fading out before the region's box corners.
    alpha = np.zeros(img.shape[:2], np.float32)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
    for target in targets:
        region = face.mask(target)
        if not region.any():
            continue
        ys, xs = np.nonzero(region)
        radius = np.sqrt(region.sum() / np.pi)
        blob = np.exp(-((xx - xs.mean()) ** 2 + (yy - ys.mean()) ** 2) / (2 * (0.55 * radius) ** 2))
        alpha = np.maximum(alpha, np.clip(1.2 * blob, 0, 1) * soft_alpha(region, face.edge_sigma))
    lab = to_lab(img)
    lab[..., 1] += 26 * strength
    lab[..., 2] += 4
    lab[..., 0] = np.clip(lab[..., 0] - 5 * strength, 0, 100)
    return Edit(from_lab(lab), alpha, targets, side, "blush on the cheek apples")


def edit_beard_shadow(img: np.ndarray, face: FaceRegions, rng: np.random.Generator,
                      strength: float) -> Edit:
    """Stubble shadow: the perioral skin and chin darkened with a speckled texture."""
    targets = ("perioral_skin", "chin")
    dots = rng.random(img.shape[:2]).astype(np.float32)
    dots = cv2.GaussianBlur((dots > 0.55).astype(np.float32), (0, 0), 0.6)
    lab = to_lab(img)
    lab[..., 0] = np.clip(lab[..., 0] - (13 + 14 * dots) * strength, 0, 100)
    lab[..., 1] -= 3
    lab[..., 2] -= 5
    return Edit(from_lab(lab), face.soft(*targets), targets, "both",
                "stubble shadow on the perioral skin and chin")


# edit(image as float32 RGB, regions, rng, strength) -> Edit; strength 1 is the normal
# edit, apply_edit raises it until the change is clearly visible.
EditFn = Callable[[np.ndarray, FaceRegions, np.random.Generator, float], Edit]
EDITS: dict[str, EditFn] = {
    "lip_recolor": edit_lip_recolor,
    "brow_darken": edit_brow_darken,
    "brow_thicken": edit_brow_thicken,
    "iris_recolor": edit_iris_recolor,
    "skin_smooth": edit_skin_smooth,
    "skin_age": edit_skin_age,
    "hair_recolor": edit_hair_recolor,
    "glasses_overlay": edit_glasses_overlay,
    "region_blur": edit_region_blur,
    "region_sharpen": edit_region_sharpen,
    "eye_bag_darken": edit_eye_bag_darken,
    "teeth_whiten": edit_teeth_whiten,
    "blush": edit_blush,
    "beard_shadow": edit_beard_shadow,
}
METHODS = tuple(EDITS)
METHOD_PHOTO = {"teeth_whiten": "astronaut"}  # the one photo that shows teeth


@dataclass
class EditedPair:
    real: np.ndarray  # uint8 RGB
    fake: np.ndarray  # uint8 RGB
    gt: np.ndarray  # bool
    edit: Edit


def blend(real: np.ndarray, edit: Edit) -> np.ndarray:
    a = edit.alpha[..., None]
    out = real.astype(np.float32) * (1 - a) + np.clip(edit.edited, 0, 255) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.float32)
    return diff.mean(-1) if diff.ndim == 3 else diff


def largest_channel_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return diff.max(-1) if diff.ndim == 3 else diff


def ground_truth(real: np.ndarray, fake: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The pixels the edit changed by more than GT_MIN_CHANGE grey levels in some channel
    (`alpha`, the edit's weight, is not needed: a change is a change however it was blended)."""
    return largest_channel_change(real, fake) > GT_MIN_CHANGE


def clearly_visible(real: np.ndarray, fake: np.ndarray, gt: np.ndarray) -> bool:
    diff = mean_abs_diff(real, fake)[gt]
    return diff.size >= 30 and diff.mean() >= MIN_VISIBLE_DIFF and np.mean(diff >= STRONG_DIFF) >= 0.5


def apply_edit(method: str, real: np.ndarray, face: FaceRegions, edit_seed: int) -> EditedPair:
    """The edit at growing strength until its change is clearly visible.

    Every attempt draws its choices (side, colour) from the same seed, so only the
    strength differs between attempts.
    """
    img = real.astype(np.float32)
    for strength in (1.0, 1.5, 2.0, 2.6):
        edit = EDITS[method](img, face, np.random.default_rng(edit_seed), strength)
        fake = blend(real, edit)
        gt = ground_truth(real, fake, edit.alpha)
        if clearly_visible(real, fake, gt):
            break
    else:
        warnings.warn(f"{method}: the edit stays faint even at strength {strength}", stacklevel=2)
    return EditedPair(real, fake, gt, edit)


def mirror_concept(concept: str) -> str | None:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if concept.startswith(a):
            return b + concept[len(a):]
    return None


def gt_concepts(face: FaceRegions, real: np.ndarray, fake: np.ndarray, gt: np.ndarray,
                targets: tuple[str, ...]) -> list[str]:
    """Atomic concepts under `targets` that hold a clear part of the ground truth,
    measured in the analysis crop, in tree order.

    "Clear" counts only the strongly changed ground-truth pixels (STRONG_DIFF), which
    any difference threshold near the analysis default finds.  A left/right concept is
    listed only if its mirror is clearly changed too or barely touched at all: a side
    that is neither is left out rather than guessed.
    """
    tree = face.tree
    n = len(tree.atomic)
    strong = gt & (mean_abs_diff(real, fake) >= STRONG_DIFF)
    labels = face.labels_crop
    region = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)

    def measure(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        crop = face.geometry.warp(mask.astype(np.uint8) * 255, cv2.INTER_LINEAR) >= 128
        changed = np.bincount(labels[crop], minlength=n)
        return changed, changed / region, changed / max(int(crop.sum()), 1)

    changed, coverage, share = measure(strong)
    clear = (changed >= GT_MIN_CROP_PX) & ((coverage >= GT_MIN_COVERAGE) | (share >= GT_MIN_SHARE))
    changed, coverage, share = measure(gt)
    some = (changed >= GT_MIN_CROP_PX / 4) & ((coverage >= GT_MIN_COVERAGE / 3) | (share >= GT_MIN_SHARE / 3))
    wanted = {a for t in targets for a in tree.atomic_descendants(t)}
    keep = []
    for node in tree.atomic:
        k = tree.atomic_index[node.id]
        if node.id not in wanted or not clear[k]:
            continue
        mirror = mirror_concept(node.id)
        if mirror is not None:
            m = tree.atomic_index[mirror]
            if some[m] and not (clear[m] and mirror in wanted):
                continue
        keep.append(node.id)
    return keep


# --- placing a photo on a canvas ----------------------------------------------------------------


@dataclass
class Photo:
    name: str
    image: np.ndarray
    regions: FaceRegions

    @property
    def head(self) -> np.ndarray:
        """Points around the head (face oval grown 1.5x about its centre), photo pixels."""
        oval = self.regions.points[FACE_OVAL]
        centre = oval.mean(0)
        return centre + 1.5 * (oval - centre)


def _similarity(photo_size, canvas, scale, angle, offset) -> np.ndarray:
    w, h = photo_size
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += (canvas[0] / 2 - w / 2 + offset[0], canvas[1] / 2 - h / 2 + offset[1])
    return m


def placement_ok(photo: Photo, m: np.ndarray, canvas: tuple[int, int]) -> bool:
    """The head lies inside the canvas, and the reflected border shows no copy of it."""
    W, H = canvas
    head = apply_affine(m, photo.head)
    margin = 0.02 * min(W, H)
    if head.min() < margin or head[:, 0].max() > W - margin or head[:, 1].max() > H - margin:
        return False
    h, w = photo.image.shape[:2]
    head_mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(photo.head.astype(np.float32))
    cv2.fillConvexPoly(head_mask, np.round(hull).astype(np.int32), 255)
    reflected = cv2.warpAffine(head_mask, m, canvas, flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_REFLECT101)
    direct = cv2.warpAffine(np.full((h, w), 255, np.uint8), m, canvas, flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT)
    return not np.any((reflected > 0) & (direct == 0))


def place_photo(photo: Photo, rng: np.random.Generator, canvas: tuple[int, int],
                analyzer: FaceAnalyzer, tree: ConceptTree) -> tuple[np.ndarray, FaceRegions, dict]:
    """The photo under a random similarity on the canvas, with its label map.

    Scale is relative to the scale at which the photo just covers the canvas.
    """
    h, w = photo.image.shape[:2]
    cover = max(canvas[0] / w, canvas[1] / h)
    tries = 200
    for attempt in range(tries):
        scale = cover * rng.uniform(0.7, 1.3)
        angle = rng.uniform(-12, 12)
        offset = rng.uniform(-0.1, 0.1, 2) * canvas
        last = attempt == tries - 1
        if last:  # give up on randomness: the photo just covering the canvas
            scale, angle, offset = cover, 0.0, np.zeros(2)
        m = _similarity((w, h), canvas, scale, angle, offset)
        if not last and not placement_ok(photo, m, canvas):
            continue
        image = cv2.warpAffine(photo.image, m, canvas, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
        try:
            regions = face_regions(analyzer, image, tree)
        except FaceRejected:
            continue
        info = {"scale": round(scale / cover, 4), "angle": round(float(angle), 3),
                "offset": [round(float(o), 2) for o in offset]}
        return image, regions, info
    raise RuntimeError(f"no usable placement of {photo.name} on a {canvas} canvas")


# --- writing ------------------------------------------------------------------------------------


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"cannot write {path}")


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"cannot write {path}")


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class SampleWriter:
    """Writes the files of each pair and collects the manifest rows."""

    def __init__(self, out_dir: Path, seed: int, progress: bool):
        self.out_dir = out_dir
        self.pairs_dir = out_dir / "pairs"
        self.seed = seed
        self.progress = progress
        self.rows: list[dict] = []

    def path(self, index: int, kind: str, ext: str = "png") -> tuple[Path, str]:
        name = f"{index:04d}_{kind}.{ext}"
        return self.pairs_dir / name, f"pairs/{name}"

    def add(self, index: int, method: str, category: str, subject: str, real_rel: str,
            fake_rel: str, gt: np.ndarray | None, concepts: list[str],
            expected_reject: RejectReason | None, encoding: str, **extra) -> None:
        gt_rel = None
        if gt is not None:
            gt_path, gt_rel = self.path(index, "gt")
            _write_png(gt_path, gt.astype(np.uint8) * 255)
        reason = expected_reject.value if expected_reject else None
        pair_id = f"sample-{index:04d}-{reason or method}"
        row = {"pair_id": pair_id, "real": real_rel, "fake": fake_rel, "method": method,
               "category": category, "subject_id": subject, "gt_mask": gt_rel,
               "gt_concepts": concepts, "expected_reject": reason, "encoding": encoding,
               "seed": self.seed, **extra}
        self.rows.append(row)
        if self.progress:
            print(f"  {pair_id}  {encoding}  {', '.join(concepts)}", flush=True)

    def manifest(self) -> Path:
        path = self.out_dir / "manifest.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        return path


# --- the pairs ------------------------------------------------------------------------------------


class SampleMaker:
    """One face analyzer, the two photos analysed once, and a writer."""

    def __init__(self, analyzer: FaceAnalyzer, writer: SampleWriter, seed: int):
        self.analyzer = analyzer
        self.writer = writer
        self.seed = seed
        self.tree = load_tree()
        self.photos = {}
        for name, load in PHOTOS.items():
            image = load()
            self.photos[name] = Photo(name, image, face_regions(analyzer, image, self.tree))

    def _real(self, rng: np.random.Generator, photo_name: str):
        canvas = CANVASES[int(rng.integers(len(CANVASES)))]
        return place_photo(self.photos[photo_name], rng, canvas, self.analyzer, self.tree)

    def good_pair(self, index: int) -> None:
        rng = np.random.default_rng([self.seed, 0, index])
        method = METHODS[index % len(METHODS)]
        names = list(self.photos)
        photo = METHOD_PHOTO.get(method) or names[(index + index // len(METHODS)) % len(names)]
        real, face, placement = self._real(rng, photo)
        pair = apply_edit(method, real, face, int(rng.integers(2**32)))
        encoding = ENCODING_CYCLE[index % len(ENCODING_CYCLE)]
        real_out, fake_out, gt = pair.real, pair.fake, pair.gt

        if encoding == "gray_png":
            # Ground truth of what the grey images show; colour-only edits stay in colour.
            g_real, g_fake = _gray(real_out), _gray(fake_out)
            g_gt = ground_truth(g_real, g_fake, pair.edit.alpha)
            if g_gt.sum() >= 0.7 * gt.sum() and clearly_visible(g_real, g_fake, g_gt):
                real_out, fake_out, gt = g_real, g_fake, g_gt
            else:
                encoding = "png"
        concepts = gt_concepts(face, real_out, fake_out, gt, pair.edit.targets)

        ext = "jpg" if encoding == "jpeg" else "png"
        real_path, real_rel = self.writer.path(index, "real", ext)
        fake_path, fake_rel = self.writer.path(index, "fake", ext)
        if encoding == "jpeg":
            _write_jpeg(real_path, real_out)
            _write_jpeg(fake_path, fake_out)
        else:
            if encoding == "png_noise":
                noise = rng.normal(0, NOISE_SIGMA, fake_out.shape)
                fake_out = np.clip(np.round(fake_out + noise), 0, 255).astype(np.uint8)
            elif encoding == "rgba_png":
                opaque = np.full(fake_out.shape[:2] + (1,), 255, np.uint8)
                fake_out = np.concatenate([fake_out, opaque], -1)
            elif encoding == "png16":
                real_out, fake_out = (x.astype(np.uint16) * 257 for x in (real_out, fake_out))
            _write_png(real_path, real_out)
            _write_png(fake_path, fake_out)
        self.writer.add(
            index, method, "face editing", photo, real_rel, fake_rel, gt, concepts, None, encoding,
            source_photo=photo, target_concepts=list(pair.edit.targets), side=pair.edit.side,
            edit=pair.edit.detail, size=[real.shape[1], real.shape[0]], placement=placement,
        )

    def bad_pair(self, index: int, k: int, reason: RejectReason) -> None:
        """A pair the analysis must reject with `reason` (the k-th bad pair)."""
        rng = np.random.default_rng([self.seed, 1, k])
        names = list(self.photos)
        photo = names[k % len(names)]
        real_path, real_rel = self.writer.path(index, "real")
        fake_path, fake_rel = self.writer.path(index, "fake")
        if reason == RejectReason.NO_FACE:
            real, fake, gt, row = self._no_face()
        elif reason == RejectReason.FACE_TOO_SMALL:
            real, fake, gt, row = self._face_too_small(self.photos[photo], rng)
        elif reason == RejectReason.MULTIPLE_FACES:
            other = self.photos[names[(k + 1) % len(names)]]
            real, fake, gt, row = self._multiple_faces(self.photos[photo], other, rng)
        elif reason == RejectReason.MISSING_FILE:
            real, _, placement = self._real(rng, photo)
            fake, gt = None, None  # the fake is never written
            row = {"method": "none", "category": "none", "missing": ["fake"],
                   "size": [real.shape[1], real.shape[0]], "placement": placement}
        else:
            real, face, placement = self._real(rng, photo)
            row = {"size": [real.shape[1], real.shape[0]], "placement": placement}
            if reason == RejectReason.MISALIGNED:
                fake, gt, more = self._misaligned(real, rng)
            elif reason == RejectReason.SIZE_MISMATCH:
                pair = apply_edit("brow_darken", real, face, int(rng.integers(2**32)))
                h, w = real.shape[:2]
                fake = cv2.resize(pair.fake, (int(w * 0.8), int(h * 0.8)), interpolation=cv2.INTER_AREA)
                gt, more = None, {"method": "brow_darken", "fake_size": [fake.shape[1], fake.shape[0]]}
            elif reason == RejectReason.NOT_LOCALIZED:
                donor = self.photos[names[(k + 1) % len(names)]]
                fake, alpha = face_swap(real, face, donor)
                gt = ground_truth(real, fake, alpha)
                more = {"method": "face_swap", "category": "face swap", "donor_photo": donor.name,
                        "gt_concepts": gt_concepts(face, real, fake, gt, ("face",))}
            elif reason == RejectReason.DECODE_ERROR:
                fake = apply_edit("lip_recolor", real, face, int(rng.integers(2**32))).fake
                gt, more = None, {"method": "lip_recolor", "encoding": "png_truncated"}
            else:
                raise ValueError(f"no bad pair for {reason}")
            row.update(more)
        _write_png(real_path, real)
        if fake is not None:
            _write_png(fake_path, fake)
        if reason == RejectReason.DECODE_ERROR:
            data = fake_path.read_bytes()
            fake_path.write_bytes(data[: len(data) // 3])  # cut off inside the image data
        self.writer.add(
            index, row.pop("method"), row.pop("category", "face editing"),
            row.pop("subject_id", photo), real_rel, fake_rel, gt, row.pop("gt_concepts", []),
            reason, row.pop("encoding", "png"), source_photo=row.pop("source_photo", photo), **row,
        )

    @staticmethod
    def _no_face() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """skimage's coffee cup with a recoloured patch: an edit, but no face."""
        from skimage import data

        real = np.ascontiguousarray(data.coffee())
        patch = np.zeros(real.shape[:2], np.uint8)
        cv2.circle(patch, (420, 120), 60, 1, -1)
        alpha = soft_alpha(patch, 1.0)
        fake = blend(real, Edit(_recolour(real, 30, -30, 1.0, 10), alpha, (), None, "patch"))
        row = {"method": "patch_recolor", "category": "object editing", "subject_id": "coffee",
               "source_photo": "coffee"}
        return real, fake, ground_truth(real, fake, alpha), row

    @staticmethod
    def _face_too_small(photo: Photo, rng: np.random.Generator):
        """The photo edited at full size, then shrunk onto a grey canvas so that the face
        is FACE_TOO_SMALL_PX wide."""
        pair = apply_edit("hair_recolor", photo.image, photo.regions, int(rng.integers(2**32)))
        canvas = (640, 640)
        scale = FACE_TOO_SMALL_PX / np.ptp(photo.regions.points[FACE_OVAL], axis=0).max()
        h, w = photo.image.shape[:2]
        m = np.array([[scale, 0, (canvas[0] - scale * w) / 2], [0, scale, (canvas[1] - scale * h) / 2]])
        real, fake = (cv2.warpAffine(x, m, canvas, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=(118, 120, 124)) for x in (pair.real, pair.fake))
        alpha = cv2.warpAffine(pair.edit.alpha, m, canvas, flags=cv2.INTER_LINEAR)
        row = {"method": "hair_recolor", "face_px": FACE_TOO_SMALL_PX, "size": list(canvas)}
        return real, fake, ground_truth(real, fake, alpha), row

    @staticmethod
    def _multiple_faces(photo: Photo, other: Photo, rng: np.random.Generator):
        """Two people: `photo` with its lips recoloured and `other` unchanged, both scaled
        to MULTIPLE_FACES_HEIGHT and set side by side (in random order) on one canvas."""
        pair = apply_edit("lip_recolor", photo.image, photo.regions, int(rng.integers(2**32)))
        first = bool(rng.random() < 0.5)  # the edited photo on the left

        def scaled(image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
            h, w = image.shape[:2]
            size = (round(w * MULTIPLE_FACES_HEIGHT / h), MULTIPLE_FACES_HEIGHT)
            return image if size == (w, h) else cv2.resize(image, size, interpolation=interpolation)

        def side_by_side(edited: np.ndarray, unchanged: np.ndarray) -> np.ndarray:
            parts = (edited, unchanged) if first else (unchanged, edited)
            return np.ascontiguousarray(np.concatenate(parts, axis=1))

        second = scaled(other.image)
        real = side_by_side(scaled(pair.real), second)
        fake = side_by_side(scaled(pair.fake), second)
        alpha = side_by_side(scaled(pair.edit.alpha, cv2.INTER_LINEAR),
                             np.zeros(second.shape[:2], np.float32))
        row = {"method": "lip_recolor", "second_photo": other.name,
               "edited_side": "left" if first else "right", "faces": 2,
               "size": [real.shape[1], real.shape[0]]}
        return real, fake, ground_truth(real, fake, alpha), row

    @staticmethod
    def _misaligned(real: np.ndarray, rng: np.random.Generator):
        """The real image itself, shifted by 6-8 px in a random direction."""
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(6, 8)
        shift = np.array([[1, 0, dist * np.cos(angle)], [0, 1, dist * np.sin(angle)]])
        fake = cv2.warpAffine(real, shift, real.shape[1::-1], flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT101)
        more = {"method": "shift", "category": "none",
                "shift_px": [round(float(shift[0, 2]), 2), round(float(shift[1, 2]), 2)]}
        return fake, None, more


def face_swap(real: np.ndarray, face: FaceRegions, donor: Photo) -> tuple[np.ndarray, np.ndarray]:
    """The donor photo's face over the real face oval: an identity swap, not a local edit.

    The donor is warped by the similarity between the two meshes, colour-matched to the
    real face in Lab, and given a little more contrast; alpha is the soft face oval.
    """
    h, w = real.shape[:2]
    m = similarity_transform(donor.regions.points[:468], face.points[:468])
    warped = cv2.warpAffine(donor.image, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT101)
    oval = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(oval, np.round(face.points[FACE_OVAL]).astype(np.int32), 1)
    oval = oval.astype(bool)
    lab_r, lab_d = to_lab(real), to_lab(warped)
    mu_r, sd_r = lab_r[oval].mean(0), lab_r[oval].std(0)
    mu_d, sd_d = lab_d[oval].mean(0), lab_d[oval].std(0)
    lab_d = (lab_d - mu_d) / np.maximum(sd_d, 1e-3) * sd_r * [1.25, 1.0, 1.0] + mu_r
    lab_d[..., 1:] += [8, 10]  # a warmer skin tone than the real one
    alpha = soft_alpha(cv2.erode(oval.astype(np.uint8), np.ones((5, 5), np.uint8)), 3.0)
    fake = blend(real, Edit(from_lab(lab_d), alpha, ("face",), None, "face swap"))
    return fake, alpha


def make_sample_pairs(out_dir: str | Path, n: int = 40, seed: int = 0, progress: bool = False) -> Path:
    """Write n good pairs + the bad pairs, return the manifest path (out_dir/manifest.jsonl)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    out_dir = Path(out_dir)
    writer = SampleWriter(out_dir, seed, progress)
    writer.pairs_dir.mkdir(parents=True, exist_ok=True)
    for old in writer.pairs_dir.glob("[0-9][0-9][0-9][0-9]_*.*"):  # an earlier run's files
        if re.fullmatch(r"\d{4}_(real|fake|gt)\.(png|jpg)", old.name):
            old.unlink()
    with FaceAnalyzer() as analyzer:
        maker = SampleMaker(analyzer, writer, seed)
        for index in range(n):
            maker.good_pair(index)
        for k, reason in enumerate(BAD_PAIRS):
            maker.bad_pair(n + k, k, reason)
    return writer.manifest()

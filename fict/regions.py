"""Where each atomic FICT concept lies on a face: the label map.

The regions are drawn once, as rules in the canonical frontal face (fict/canonical.py),
into a label *atlas*.  A face is then labelled by mapping every crop pixel back into
canonical space, piecewise-affinely through the triangles of its own 478-point mesh
(extended beyond the face oval by two rings of virtual points), and reading the atlas
there.  So the regions follow the face's pose and shape, the atomic regions are
disjoint and cover the whole crop by construction (one label per pixel), and a parent's
region is the union of its children (fict.tree.ConceptTree.membership).

Outside the face the atlas has two answers per pixel, one where the selfie
segmentation sees the person (hair, ears, neck, clothing) and one where it does not
(background).

Left/right are the subject's: the subject's left is +x in canonical space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from fict.canonical import canonical_points, canonical_to_crop
from fict.tree import ConceptTree, load_tree

# --- mediapipe face-mesh topology (subject's left first where sides matter) -------------

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
             378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162,
             21, 54, 103, 67, 109]
EYE_UPPER = {+1: [263, 466, 388, 387, 386, 385, 384, 398, 362],
             -1: [33, 246, 161, 160, 159, 158, 157, 173, 133]}
EYE_LOWER = {+1: [263, 249, 390, 373, 374, 380, 381, 382, 362],
             -1: [33, 7, 163, 144, 145, 153, 154, 155, 133]}
BROW_UPPER = {+1: [336, 296, 334, 293, 300], -1: [107, 66, 105, 63, 70]}  # head -> tail
BROW_LOWER = {+1: [285, 295, 282, 283, 276], -1: [55, 65, 52, 53, 46]}
IRIS = {+1: (473, [474, 475, 476, 477]), -1: (468, [469, 470, 471, 472])}
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]

# Virtual rings beyond the face oval, as multiples of each oval point's distance from
# the oval's centroid: they carry hair, ears and neck along with the head's pose.
RING_SCALES = (1.4, 2.0, 3.0)

# Atlas raster: canonical window and resolution (pixels per canonical unit).
ATLAS_ORIGIN = (-3.0, -3.0)
ATLAS_SIZE = (6.0, 7.5)
ATLAS_RES = 160

SIDES = {+1: "left", -1: "right"}
# Regions measured on each face instead of read from the atlas.
PER_FACE_CONCEPTS = ("left_iris", "right_iris")


# --- the atlas -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Atlas:
    person: np.ndarray  # (H, W) uint8 atomic label where the person is
    scenery: np.ndarray  # (H, W) uint8 atomic label where the background is


class _Painter:
    """Paints atomic labels into the two atlas layers with boolean rules on the grid."""

    def __init__(self, tree: ConceptTree):
        self.tree = tree
        w, h = (int(round(s * ATLAS_RES)) for s in ATLAS_SIZE)
        xs = ATLAS_ORIGIN[0] + (np.arange(w) + 0.5) / ATLAS_RES
        ys = ATLAS_ORIGIN[1] + (np.arange(h) + 0.5) / ATLAS_RES
        self.X, self.Y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        self.person = np.zeros((h, w), np.uint8)
        self.scenery = np.zeros((h, w), np.uint8)
        self.p = canonical_points()

    def label(self, concept_id: str) -> int:
        return self.tree.atomic_index[concept_id]

    def paint(self, concept_id: str, where: np.ndarray, layer: str = "both") -> None:
        value = self.label(concept_id)
        if layer in ("both", "person"):
            self.person[where] = value
        if layer in ("both", "scenery"):
            self.scenery[where] = value

    def polygon(self, points: np.ndarray) -> np.ndarray:
        canvas = np.zeros(self.X.shape, np.uint8)
        px = np.round((points - ATLAS_ORIGIN) * ATLAS_RES * 16).astype(np.int32)
        cv2.fillPoly(canvas, [px], 1, lineType=cv2.LINE_8, shift=4)
        return canvas.astype(bool)

    def curve(self, chain: list[int], side: int = 1) -> callable:
        """y(x) along a landmark chain (mirrored to the given side), NaN outside it."""
        pts = self.p[chain] * [side, 1]
        order = np.argsort(pts[:, 0])
        xs, ys = pts[order, 0], pts[order, 1]

        def y_of(x: np.ndarray) -> np.ndarray:
            y = np.interp(x, xs, ys)
            return np.where((x >= xs[0]) & (x <= xs[-1]), y, np.nan)

        return y_of

    def signed_distance(self, inside: np.ndarray) -> np.ndarray:
        """Canonical distance to a region's boundary: negative inside, positive outside."""
        inside8 = inside.astype(np.uint8)
        d_in = cv2.distanceTransform(inside8, cv2.DIST_L2, 5)
        d_out = cv2.distanceTransform(1 - inside8, cv2.DIST_L2, 5)
        return (d_out - d_in) / ATLAS_RES


def _paint_outside(pt: _Painter, oval_sd: np.ndarray) -> None:
    """Hair, ears, neck, clothing (person layer) and background (scenery layer)."""
    X, Y = pt.X, pt.Y
    ax = np.abs(X)
    outside = oval_sd > 0
    chin_y = pt.p[152, 1]

    # Scenery: split by where it lies around the head.
    pt.paint("lower_background", np.ones_like(outside), "scenery")
    for side, name in SIDES.items():
        pt.paint(f"{name}_background", (X * side > 0) & (Y < chin_y + 0.2), "scenery")
    pt.paint("top_background", Y < pt.p[10, 1] - 0.15, "scenery")

    # Person: clothing below the neck, neck under the jaw, hair and ears around the head.
    pt.paint("neckline", np.ones_like(outside), "person")
    for side, name in SIDES.items():
        pt.paint(f"{name}_shoulder", (X * side > 0.45), "person")
    neck = (Y < chin_y + 0.55) & (ax < 0.6)
    pt.paint("front_neck", neck, "person")
    for side, name in SIDES.items():
        pt.paint(f"{name}_neck_side", neck & (X * side > 0.2), "person")
    pt.paint("submental_area", neck & (oval_sd < 0.22) & (ax < 0.42) & (Y > 0.9), "person")

    ear_top, ear_bottom = -0.12, 0.5
    for side, name in SIDES.items():
        lateral = (X * side > 0.35) & outside
        pt.paint(f"{name}_long_hair", outside & (X * side > 0.6) & (X * side < 1.05) & (Y >= ear_bottom) & (Y < chin_y), "person")
        pt.paint(f"{name}_side_hair", lateral & (Y < ear_bottom), "person")
        ear_band = lateral & (oval_sd < 0.32) & (Y >= ear_top) & (Y < ear_bottom)
        pt.paint(f"{name}_upper_ear", ear_band & (Y < 0.22), "person")
        pt.paint(f"{name}_earlobe", ear_band & (Y >= 0.22), "person")
        pt.paint(f"{name}_preauricular_area", ear_band & (oval_sd < 0.09), "person")
    above = outside & (Y < ear_top) & (ax < 0.62)
    pt.paint("top_hair", above, "person")
    pt.paint("front_hair", above & (oval_sd < 0.2) & (ax < 0.55), "person")


def _paint_face(pt: _Painter, oval: np.ndarray) -> None:
    """Skin areas, then features on top, inside the face oval (both layers)."""
    X, Y, p = pt.X, pt.Y, pt.p
    ax = np.abs(X)
    face = oval  # every rule below stays inside the face oval

    # Base skin, coarse to fine; later rules overwrite earlier ones.
    brow_top = min(p[BROW_UPPER[1], 1])  # highest brow point
    fh_split = (p[10, 1] + brow_top) / 2
    forehead = face & (Y < brow_top + 0.02)
    for rows, cond in (("upper", Y < fh_split), ("lower", Y >= fh_split)):
        pt.paint(f"middle_{rows}_forehead", forehead & cond)
        for side, name in SIDES.items():
            pt.paint(f"{name}_{rows}_forehead", forehead & cond & (X * side > 0.2))

    mid = face & (Y >= brow_top + 0.02)
    mouth_y = p[61, 1]
    for side, name in SIDES.items():
        s = X * side
        half = mid & (s >= 0)
        # Rows of skin from the brows down; features are painted over them below.
        pt.paint(f"{name}_temple", half & (Y < -0.1))
        pt.paint(f"{name}_supraorbital_area", half & (Y < 0.0) & (s < 0.56))
        pt.paint(f"{name}_crows_feet_area", half & (Y >= -0.1) & (Y < 0.16) & (s >= 0.56))
        pt.paint(f"{name}_eye_bag", half & (Y >= 0.0) & (Y < 0.16) & (s < 0.56))
        pt.paint(f"{name}_cheekbone", half & (Y >= 0.16) & (Y < 0.42))
        pt.paint(f"{name}_cheek_apple", half & (s > 0.2) & (s < 0.46) & (Y >= 0.16) & (Y < 0.42))
        pt.paint(f"{name}_mid_cheek", half & (Y >= 0.42) & (Y < mouth_y))
        pt.paint(f"{name}_lower_cheek", half & (Y >= mouth_y) & (Y < 0.9))
        pt.paint(f"{name}_jaw", half & (Y >= 0.9))
        # Nasolabial fold: a band from the nose wing down past the mouth corner.
        a, b = np.array([0.27, 0.40]), np.array([0.43, 0.80])
        t = np.clip(((s - a[0]) * (b - a)[0] + (Y - a[1]) * (b - a)[1]) / ((b - a) ** 2).sum(), 0, 1)
        fold_x = a[0] + t * (b - a)[0]
        dist = np.hypot(s - fold_x, Y - (a[1] + t * (b - a)[1]))
        pt.paint(f"{name}_nasolabial_fold", half & (dist < 0.04) & (t > 0) & (t < 1))
        medial = (dist >= 0.04) & (s < fold_x)
        # Skin beside the philtrum above the lip, the marionette area below the corner.
        pt.paint(f"{name}_upper_lip_skin", half & medial & (s > 0.07) & (Y > 0.47) & (Y < 0.68))
        pt.paint(f"{name}_marionette_area", half & medial & (s > 0.2) & (Y >= 0.72) & (Y < 0.98))
        pt.paint(f"{name}_chin", half & (s > 0.13) & (s < 0.34) & (Y >= 0.98))

    pt.paint("glabella", mid & (ax < 0.14) & (Y < -0.1))
    pt.paint("philtrum", face & (ax <= 0.07) & (Y > 0.47) & (Y < 0.68))
    pt.paint("mentolabial_sulcus", face & (ax <= 0.2) & (Y > 0.76) & (Y < 0.98))
    pt.paint("chin_center", face & (ax <= 0.13) & (Y >= 0.98))

    # Nose.
    pt.paint("nasal_root", face & (ax < 0.11) & (Y >= -0.1) & (Y < 0.08))
    pt.paint("nose_bridge", face & (ax < 0.085) & (Y >= 0.08) & (Y < 0.23))
    for side, name in SIDES.items():
        s = X * side
        pt.paint(f"{name}_nasal_sidewall", face & (s >= 0.085) & (s < 0.2 + 0.1 * Y) & (Y >= -0.02) & (Y < 0.36))
    pt.paint("nose_supratip", face & (ax < 0.09) & (Y >= 0.23) & (Y < 0.31))
    pt.paint("nose_tip", face & (((X / 0.12) ** 2 + ((Y - 0.37) / 0.07) ** 2) < 1))
    for side, name in SIDES.items():
        s = X * side
        pt.paint(f"{name}_nose_wing", face & (((s - 0.215) / 0.07) ** 2 + ((Y - 0.39) / 0.07) ** 2 < 1))
        pt.paint(f"{name}_nostril", face & (((s - 0.12) / 0.065) ** 2 + ((Y - 0.44) / 0.035) ** 2 < 1))
    pt.paint("columella", face & (ax < 0.04) & (Y >= 0.42) & (Y < 0.48))

    # Eyes and brows.
    for side, name in SIDES.items():
        s = X * side
        up = pt.curve(EYE_UPPER[1], side)(X)
        lo = pt.curve(EYE_LOWER[1], side)(X)
        inner, outer = p[362, 0], p[263, 0]
        span = (s > inner - 0.03) & (s < outer + 0.03)
        up = np.where(np.isnan(up), np.nanmean(up), up)
        lo = np.where(np.isnan(lo), np.nanmean(lo), lo)
        brow_lo = pt.curve(BROW_LOWER[1], side)(X)
        brow_up = pt.curve(BROW_UPPER[1], side)(X)
        crease = up - 0.06
        pt.paint(f"{name}_supraorbital_area", face & span & (Y < crease) & (Y > brow_lo))
        pt.paint(f"{name}_upper_eyelid", face & span & (Y >= crease) & (Y < up))
        pt.paint(f"{name}_lower_eyelid", face & span & (Y > lo) & (Y <= lo + 0.055))
        pt.paint(f"{name}_eye_bag", face & span & (Y > lo + 0.055) & (Y <= lo + 0.16) & (s < outer))
        opening = pt.polygon(p[EYE_UPPER[1] + EYE_LOWER[1][::-1]] * [side, 1])
        iris_x = (inner + outer) / 2
        pt.paint(f"{name}_inner_sclera", opening & (s < iris_x))
        pt.paint(f"{name}_outer_sclera", opening & (s >= iris_x))
        for corner, idx in (("inner", 362), ("outer", 263)):
            cx, cy = p[idx] * [side, 1]
            pt.paint(f"{name}_{corner}_eye_corner", face & (np.hypot(X - cx, Y - cy) < 0.05))
        # Eyebrow, in thirds along its length.
        head, tail = p[BROW_LOWER[1][0], 0] - 0.02, p[BROW_UPPER[1][-1], 0] + 0.02
        brow = face & (s >= head) & (s <= tail) & (Y >= brow_up - 0.015) & (Y <= brow_lo + 0.015)
        third = (tail - head) / 3
        pt.paint(f"{name}_eyebrow_head", brow & (s < head + third))
        pt.paint(f"{name}_eyebrow_body", brow & (s >= head + third) & (s < head + 2 * third))
        pt.paint(f"{name}_eyebrow_tail", brow & (s >= head + 2 * third))

    # Lips, corners and the mouth opening.
    upper = pt.polygon(p[LIPS_OUTER_UPPER + LIPS_INNER_UPPER[::-1]])
    lower = pt.polygon(p[LIPS_OUTER_LOWER + LIPS_INNER_LOWER[::-1]])
    top_edge = pt.curve(LIPS_OUTER_UPPER)(X)
    bottom_edge = pt.curve(LIPS_OUTER_LOWER)(X)
    for side, name in SIDES.items():
        s = X * side
        pt.paint(f"{name}_upper_lip", upper & (s >= 0))
        pt.paint(f"{name}_upper_lip_edge", upper & (s >= 0) & (Y < top_edge + 0.035))
        pt.paint(f"{name}_lower_lip", lower & (s > 0))
        pt.paint(f"{name}_lower_lip_edge", lower & (s > 0) & (Y > bottom_edge - 0.035))
    pt.paint("cupids_bow", upper & (ax < 0.07) & (Y < top_edge + 0.035))
    opening = pt.polygon(p[LIPS_INNER_UPPER + LIPS_INNER_LOWER[::-1]])
    seam = cv2.dilate(opening.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    pt.paint("mouth_opening", seam & (ax < p[308, 0]))
    for side, name in SIDES.items():
        cx, cy = p[291] * [side, 1]
        pt.paint(f"{name}_mouth_corner", face & (np.hypot(X - cx, Y - cy) < 0.055))


def _paint_contour(pt: _Painter, oval_sd: np.ndarray) -> None:
    """The face contour edge: a band across the oval's boundary, split along it."""
    X, Y = pt.X, pt.Y
    ax = np.abs(X)
    band = (oval_sd > -0.05) & (oval_sd < 0.035)
    chin_y = pt.p[152, 1]
    for side, name in SIDES.items():
        s = X * side
        half = band & (s >= 0)
        pt.paint(f"{name}_jawline", half & (Y >= 0.68))
        pt.paint(f"{name}_cheek_edge", half & (Y >= 0.12) & (Y < 0.68))
        pt.paint(f"{name}_temple_edge", half & (Y >= -0.3) & (Y < 0.12))
        pt.paint(f"{name}_hairline", half & (Y < -0.3) & (s >= 0.2))
    pt.paint("middle_hairline", band & (Y < -0.3) & (ax < 0.2))
    pt.paint("chin_edge", band & (ax < 0.24) & (Y > chin_y - 0.3))


@lru_cache(maxsize=1)
def atlas() -> Atlas:
    """The label atlas in canonical space (built once per process, under a second)."""
    pt = _Painter(load_tree())
    oval = pt.polygon(pt.p[FACE_OVAL])
    oval_sd = pt.signed_distance(oval)
    _paint_outside(pt, oval_sd)
    _paint_face(pt, oval)
    _paint_contour(pt, oval_sd)
    return Atlas(person=pt.person, scenery=pt.scenery)


# --- mesh triangles --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(T, 3) triangles over the 468 surface points, the eye and mouth openings, and
    the virtual rings (indices >= 468: ring r, oval point k -> 468 + r*len(FACE_OVAL) + k)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a in adj for b in adj[a] if b > a
            for c in adj[a] & adj[b] if c > b}
    tris = [list(t) for t in sorted(tris)]
    # Openings: strips between the upper and lower contours.
    for up, lo in [(EYE_UPPER[1], EYE_LOWER[1]), (EYE_UPPER[-1], EYE_LOWER[-1]),
                   (LIPS_INNER_UPPER, LIPS_INNER_LOWER)]:
        for i in range(len(up) - 1):
            tris.append([up[i], up[i + 1], lo[i + 1]])
            tris.append([up[i], lo[i + 1], lo[i]])
    n = len(FACE_OVAL)
    rings = [FACE_OVAL] + [[468 + r * n + k for k in range(n)] for r in range(len(RING_SCALES))]
    for inner, outer in zip(rings, rings[1:]):
        for k in range(n):
            j = (k + 1) % n
            tris.append([inner[k], inner[j], outer[j]])
            tris.append([inner[k], outer[j], outer[k]])
    return np.asarray(tris, np.int32)


def with_rings(points: np.ndarray) -> np.ndarray:
    """Append the virtual ring points to (468+, 2) mesh points."""
    oval = points[FACE_OVAL]
    centre = oval.mean(0)
    rings = [centre + scale * (oval - centre) for scale in RING_SCALES]
    return np.concatenate([points[:468], *rings])


@lru_cache(maxsize=1)
def _canonical_vertices() -> np.ndarray:
    return with_rings(canonical_points())


# --- labelling a face ------------------------------------------------------------------------


def rasterize_triangles(vertices: np.ndarray, depth: np.ndarray, shape: tuple[int, int],
                        background: int = -1) -> np.ndarray:
    """Triangle index per pixel (`background` where none), nearer triangles drawn over
    farther ones."""
    tris = mesh_triangles()
    ids = np.full(shape, background, np.int32)
    order = np.argsort(-depth[tris].mean(1), kind="stable")  # far (large z) first
    fixed = np.round(vertices * 16).astype(np.int32)
    for t in order:
        cv2.fillConvexPoly(ids, fixed[tris[t]], int(t), lineType=cv2.LINE_8, shift=4)
    return ids


@lru_cache(maxsize=4)
def _pixel_centres(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx.ravel(), yy.ravel()


def canonical_coordinates(landmarks_crop: np.ndarray, depth: np.ndarray,
                          crop_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) canonical position of every crop pixel (piecewise affine on the mesh)."""
    w, h = crop_size
    verts = with_rings(landmarks_crop[:, :2])
    tris = mesh_triangles()
    depth_all = np.concatenate([depth[:468], np.full(len(verts) - 468, depth[:468].max() + 1)])
    tid = rasterize_triangles(verts, depth_all, (h, w), background=len(tris)).ravel()

    # One affine per triangle, crop pixel -> canonical: rows [x y 1] @ coef.
    src = np.concatenate([verts[tris], np.ones((len(tris), 3, 1))], -1)  # (T, 3, 3)
    dst = _canonical_vertices()[tris]  # (T, 3, 2)
    ok = np.abs(np.linalg.det(src)) > 1e-6
    # Pixels outside every triangle (the extra last entry) and degenerate, collapsed
    # triangles use the crop frame itself, which is a scaled canonical frame.
    m = canonical_to_crop(w)
    outside = [[1 / m[0, 0], 0], [0, 1 / m[1, 1]], [-m[0, 2] / m[0, 0], -m[1, 2] / m[1, 1]]]
    coef = np.empty((len(tris) + 1, 3, 2))
    coef[:] = outside
    coef[:-1][ok] = np.linalg.solve(src[ok], dst[ok])
    x, y = _pixel_centres(w, h)
    uv = np.empty((h, w, 2), np.float32)
    for k in range(2):
        cx, cy, c1 = (np.ascontiguousarray(coef[:, r, k], np.float32) for r in range(3))
        uv[..., k] = (np.take(cx, tid) * x + np.take(cy, tid) * y + np.take(c1, tid)).reshape(h, w)
    return uv


def label_map(landmarks_crop: np.ndarray, depth: np.ndarray, person: np.ndarray,
              crop_size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 atomic label (index into ConceptTree.atomic) of every crop pixel.

    `landmarks_crop`: (478, 2) mesh in crop pixels; `depth`: (478,) mesh z (smaller is
    nearer); `person`: (H, W) bool selfie segmentation of the crop.
    """
    at = atlas()
    uv = canonical_coordinates(landmarks_crop, depth, crop_size)
    col = np.clip(((uv[..., 0] - ATLAS_ORIGIN[0]) * ATLAS_RES).astype(np.int32), 0, at.person.shape[1] - 1)
    row = np.clip(((uv[..., 1] - ATLAS_ORIGIN[1]) * ATLAS_RES).astype(np.int32), 0, at.person.shape[0] - 1)
    labels = np.where(person, at.person[row, col], at.scenery[row, col])
    _paint_irises(labels, landmarks_crop)
    return labels


def _paint_irises(labels: np.ndarray, landmarks_crop: np.ndarray) -> None:
    """The iris is measured per face: its circle, where the eyelids leave it visible."""
    tree = load_tree()
    for side, name in SIDES.items():
        centre_idx, ring = IRIS[side]
        if len(landmarks_crop) <= max(ring):
            continue
        cx, cy = landmarks_crop[centre_idx]
        r = np.linalg.norm(landmarks_crop[ring] - landmarks_crop[centre_idx], axis=1).mean()
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, labels.shape[1]))
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, labels.shape[0]))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        window = labels[y0:y1, x0:x1]
        sclera = np.isin(window, [tree.atomic_index[f"{name}_inner_sclera"],
                                  tree.atomic_index[f"{name}_outer_sclera"]])
        disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        window[sclera & disc] = tree.atomic_index[f"{name}_iris"]

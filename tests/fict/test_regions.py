"""The label map: disjoint atomic regions covering the crop, in the right places."""

import cv2
import numpy as np
import pytest
from mediapipe.python.solutions import face_mesh_connections as mp_conn

from fict import regions
from fict.canonical import CROP_SPAN


def _chain_edges(chain):
    return {tuple(sorted(e)) for e in zip(chain, chain[1:])}


def test_topology_constants_match_mediapipe():
    def edges(conn):
        return {tuple(sorted(e)) for e in conn}

    oval = regions.FACE_OVAL + regions.FACE_OVAL[:1]
    assert _chain_edges(oval) == edges(mp_conn.FACEMESH_FACE_OVAL)
    assert _chain_edges(regions.EYE_UPPER[1]) | _chain_edges(regions.EYE_LOWER[1]) == edges(mp_conn.FACEMESH_LEFT_EYE)
    assert _chain_edges(regions.EYE_UPPER[-1]) | _chain_edges(regions.EYE_LOWER[-1]) == edges(mp_conn.FACEMESH_RIGHT_EYE)
    lips = (regions.LIPS_OUTER_UPPER, regions.LIPS_OUTER_LOWER, regions.LIPS_INNER_UPPER, regions.LIPS_INNER_LOWER)
    assert set().union(*map(_chain_edges, lips)) == edges(mp_conn.FACEMESH_LIPS)
    brows = edges(mp_conn.FACEMESH_LEFT_EYEBROW)
    assert _chain_edges(regions.BROW_UPPER[1]) | _chain_edges(regions.BROW_LOWER[1]) == brows


def test_every_atomic_region_is_measurable_at_512(tree):
    """In the canonical atlas each atomic region spans enough 512-px crop pixels."""
    at = regions.atlas()
    crop_px_per_atlas_px = (512 / CROP_SPAN / regions.ATLAS_RES) ** 2
    for k, node in enumerate(tree.atomic):
        if node.id in regions.PER_FACE_CONCEPTS:
            continue
        area = np.count_nonzero((at.person == k) | (at.scenery == k)) * crop_px_per_atlas_px
        assert area >= 40, f"{node.id}: {area:.0f} crop px"


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_label_map_is_a_partition_of_the_crop(photo_results, tree, name):
    labels = photo_results[name].labels
    assert labels.shape == (512, 512)
    counts = np.bincount(labels.ravel(), minlength=len(tree.atomic))
    assert len(counts) == len(tree.atomic)  # no value outside the atomic concepts
    assert counts.sum() == labels.size  # every pixel in exactly one atomic region
    present = np.count_nonzero(counts)
    assert present >= 105, f"only {present} of 112 atomic regions on {name}"
    face = [tree.atomic_index[a] for a in tree.atomic_descendants("face")]
    assert all(counts[k] >= 30 for k in face), [tree.atomic[k].id for k in face if counts[k] < 30]


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_regions_sit_on_their_landmarks(photo_results, tree, name):
    result = photo_results[name]
    lm = result.geometry.landmarks_crop
    labels = result.labels

    def concept_at(index):
        x, y = np.round(lm[index]).astype(int)
        return tree.atomic[labels[y, x]].id

    def within(index, parent):
        return concept_at(index) in tree.atomic_descendants(parent)

    assert concept_at(473) == "left_iris" and concept_at(468) == "right_iris"
    assert within(4, "nose_tip_area")
    assert within(13, "mouth_region") and within(14, "mouth_region")
    assert within(334, "left_eyebrow") and within(105, "right_eyebrow")
    assert within(10, "face_contour_edge") or within(10, "forehead")
    assert within(152, "chin_edge") or within(152, "chin")
    assert within(61, "right_mouth_corner") and within(291, "left_mouth_corner")

    def centroid(concept):
        ys, xs = np.nonzero(np.isin(labels, [tree.atomic_index[a] for a in tree.atomic_descendants(concept)]))
        return xs.mean(), ys.mean()

    # Subject's left is the image right; features stack from forehead to chin.
    assert centroid("left_eye")[0] > centroid("right_eye")[0]
    assert centroid("left_cheek")[0] > centroid("nose")[0] > centroid("right_cheek")[0]
    ys = [centroid(c)[1] for c in ("forehead", "eyebrows", "eye_region", "nose", "lips", "chin", "neck")]
    assert ys == sorted(ys)


def test_label_map_follows_head_rotation(analyzer, photos, photo_results, tree):
    """Rotating the photo must not move the regions on the face: both crops are aligned,
    so their label maps agree on the face."""
    image = photos["grace_hopper"]
    h, w = image.shape[:2]
    rot = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 14, 1.0), (w, h),
                         borderMode=cv2.BORDER_REFLECT101)
    turned = analyzer.analyze(rot, rot.copy())
    assert turned.ok
    base = photo_results["grace_hopper"].labels
    face = np.isin(base, [tree.atomic_index[a] for a in tree.atomic_descendants("face")])
    agreement = np.mean(turned.labels[face] == base[face])
    assert agreement >= 0.85, agreement

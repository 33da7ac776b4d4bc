"""The canonical frontal face: mediapipe mesh points in a symmetric, upright frame.

Units: the distance between the two outer eye corners is 1; the origin is their
midpoint; x grows towards the subject's left (image right), y downwards.  The data
file is made by `python -m build_tools.canonical_face` from the face photos that ship
with scikit-image and matplotlib.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

# Canonical window the aligned crop shows: 3 eye-corner distances wide, eyes at
# 42 % of the height.  Leaves room for hair above and the neck below.
CROP_SPAN = 3.0
CROP_ORIGIN = (-1.5, -1.25)


@lru_cache(maxsize=1)
def _data() -> dict:
    text = resources.files("fict").joinpath("data/canonical_face.json").read_text()
    return json.loads(text)


def canonical_points() -> np.ndarray:
    """(468, 2) float64 canonical positions of the mesh surface points."""
    return np.asarray(_data()["points"], np.float64)


def mirror_index() -> np.ndarray:
    """(468,) index of each point's mirror partner (midline points map to themselves)."""
    return np.asarray(_data()["mirror"], np.int64)


def canonical_to_crop(crop_size: int) -> np.ndarray:
    """2x3 affine from canonical units to crop pixels."""
    s = crop_size / CROP_SPAN
    return np.array([[s, 0.0, -CROP_ORIGIN[0] * s], [0.0, s, -CROP_ORIGIN[1] * s]])


def canonical_crop_points(crop_size: int) -> np.ndarray:
    m = canonical_to_crop(crop_size)
    return canonical_points() @ m[:, :2].T + m[:, 2]

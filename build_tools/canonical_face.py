"""Rebuild fict/data/canonical_face.json from the face photos shipped in packages.

Each photo's 3-D mesh is rotated into an upright frontal frame (eye-corner axis = x,
forehead-to-chin = y), scaled to unit eye-corner distance, mirrored, matched to its
mirror image point by point, and the photos are averaged into one symmetric face.

    python -m build_tools.canonical_face
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipelines.vision.face_photos import PHOTOS
from pipelines.vision.faces import N_SURFACE, FaceAnalyzer

OUT = Path(__file__).resolve().parents[1] / "fict" / "data" / "canonical_face.json"


def frontal_frame(points: np.ndarray) -> np.ndarray:
    """Rotate a (468, 3) mesh so the face looks down +z, eyes on the x axis."""
    p = points
    x = (p[263] - p[33]) + (p[362] - p[133]) + (p[291] - p[61])
    x /= np.linalg.norm(x)
    y = p[152] - p[10]
    y -= x * (y @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    q = (p - (p[33] + p[263]) / 2) @ np.stack([x, y, z]).T
    return q / np.linalg.norm(q[263] - q[33])


def build() -> dict:
    shapes = []
    with FaceAnalyzer() as faces:
        for load in PHOTOS.values():
            image = load()
            shapes.append(frontal_frame(faces.mesh(image, faces.the_face(image))[:N_SURFACE]))
    mean = np.mean(shapes, axis=0)
    mirrored = mean * [-1, 1, 1]
    cost = ((mean[:, None, :] - mirrored[None]) ** 2).sum(-1)
    _, mirror = linear_sum_assignment(cost)
    symmetric = (mean + mirrored[mirror]) / 2
    return {
        "about": "mediapipe face-mesh surface points, frontal, unit outer-eye-corner distance; "
                 "x to the subject's left, y down. Built by build_tools/canonical_face.py.",
        "points": np.round(symmetric[:, :2], 5).tolist(),
        "depth": np.round(symmetric[:, 2], 5).tolist(),
        "mirror": mirror.tolist(),
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build()) + "\n")
    print(f"wrote {OUT}")

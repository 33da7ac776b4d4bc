"""Stage 5: measured evidence for each artifact-existing concept.

Every number is a mean or ratio over the concept's regional artifact mask A∩R,
computed for all concepts at once: per-atomic sums by `bincount` over the changed
pixels, then summed up the tree.  Descriptions rest on these numbers.
"""

from __future__ import annotations

import cv2
import numpy as np

from fict.coverage import Coverage, per_node
from fict.tree import ConceptTree
from schemas.analysis import ConceptEvidence


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _gradient_and_laplacian(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 8.0, cv2.Laplacian(grey, cv2.CV_32F, ksize=3)


def concept_evidence(tree: ConceptTree, labels: np.ndarray, mask: np.ndarray,
                     real: np.ndarray, fake: np.ndarray, difference: np.ndarray,
                     coverage: Coverage) -> dict[str, ConceptEvidence]:
    """Evidence for every flagged node, keyed by node id."""
    flagged = np.flatnonzero(coverage.artifact)
    if flagged.size == 0:
        return {}
    n = len(tree.atomic)
    ys, xs = np.nonzero(mask)
    lab = labels[ys, xs]
    # Filters and colour conversion only over the mask's box (+2 px so the 3x3 kernels
    # see the same neighbours as on the whole crop).
    y0, x0 = max(ys.min() - 2, 0), max(xs.min() - 2, 0)
    y1, x1 = min(ys.max() + 3, mask.shape[0]), min(xs.max() + 3, mask.shape[1])
    real, fake = real[y0:y1, x0:x1], fake[y0:y1, x0:x1]
    ys_box, xs_box = ys - y0, xs - x0

    def node_sums(values: np.ndarray) -> np.ndarray:
        return per_node(tree, np.bincount(lab, weights=values, minlength=n))

    lab_real, lab_fake = _lab(real)[ys_box, xs_box], _lab(fake)[ys_box, xs_box]
    grad_real, lap_real = _gradient_and_laplacian(real)
    grad_fake, lap_fake = _gradient_and_laplacian(fake)
    gr, gf = grad_real[ys_box, xs_box], grad_fake[ys_box, xs_box]
    lr, lf = lap_real[ys_box, xs_box], lap_fake[ys_box, xs_box]

    count = np.maximum(coverage.artifact_px, 1).astype(np.float64)
    mean = {name: node_sums(v) / count for name, v in {
        "dL": lab_fake[:, 0] - lab_real[:, 0],
        "da": lab_fake[:, 1] - lab_real[:, 1],
        "db": lab_fake[:, 2] - lab_real[:, 2],
        "diff": difference[ys, xs],
        "grad_real": gr, "grad_fake": gf, "texture": np.abs(gf - gr),
        "lap_real": lr, "lap_fake": lf, "lap_real2": lr * lr, "lap_fake2": lf * lf,
    }.items()}
    var_real = np.maximum(mean["lap_real2"] - mean["lap_real"] ** 2, 0)
    var_fake = np.maximum(mean["lap_fake2"] - mean["lap_fake"] ** 2, 0)

    # Bounding boxes: per atomic label, then the union over each node's atomic labels.
    big = np.iinfo(np.int64).max
    lo_x, lo_y = np.full(n, big), np.full(n, big)
    hi_x, hi_y = np.full(n, -1), np.full(n, -1)
    np.minimum.at(lo_x, lab, xs)
    np.minimum.at(lo_y, lab, ys)
    np.maximum.at(hi_x, lab, xs)
    np.maximum.at(hi_y, lab, ys)

    area = float(labels.size)
    out = {}
    for i in flagged:
        node = tree.nodes[i]
        member = tree.membership[i].astype(bool)
        px = int(coverage.artifact_px[i])
        if px == 0:
            continue
        bbox = (int(lo_x[member].min()), int(lo_y[member].min()),
                int(hi_x[member].max()) + 1, int(hi_y[member].max()) + 1)
        out[node.id] = ConceptEvidence(
            area_px=px,
            area_fraction=round(px / area, 6),
            bbox=bbox,
            delta_l=round(float(mean["dL"][i]), 3),
            delta_a=round(float(mean["da"][i]), 3),
            delta_b=round(float(mean["db"][i]), 3),
            mean_abs_rgb_diff=round(float(mean["diff"][i]), 3),
            sharpness_ratio=round(float((var_fake[i] + 1e-3) / (var_real[i] + 1e-3)), 4),
            edge_ratio=round(float((mean["grad_fake"][i] + 1e-3) / (mean["grad_real"][i] + 1e-3)), 4),
            texture_change=round(float(mean["texture"][i]), 3),
        )
    return out

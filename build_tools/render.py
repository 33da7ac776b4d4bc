"""Pictures a person looks at: the FICT label map over a face, the pair overlay."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from fict.tree import ConceptTree, load_tree


def concept_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours, neighbours in tree order far apart in hue."""
    golden = 0.618033988749895
    colours = []
    for i in range(n):
        hue = (i * golden) % 1.0
        light = 0.45 + 0.2 * ((i * 7) % 3) / 2
        colours.append(colorsys.hls_to_rgb(hue, light, 0.75))
    return (np.array(colours) * 255).astype(np.uint8)


def region_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Image with the label map blended over it and region borders drawn dark."""
    palette = concept_palette(int(labels.max()) + 1 if labels.size else 1)
    blended = (image.astype(np.float32) * (1 - alpha) + palette[labels] * alpha).astype(np.uint8)
    blended[region_boundaries(labels)] = (20, 20, 20)
    return blended


def region_centres(labels: np.ndarray, n: int) -> dict[int, tuple[float, float]]:
    """A point inside each present region (the pixel deepest inside it)."""
    centres = {}
    for k in np.unique(labels):
        mask = (labels == k).astype(np.uint8)
        dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        centres[int(k)] = (float(x), float(y))
    return centres


def render_label_map(image: np.ndarray, labels: np.ndarray, path: str,
                     tree: ConceptTree | None = None, title: str = "") -> None:
    """Write a PNG: the crop with numbered atomic regions, and a legend of their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree = tree or load_tree()
    n = len(tree.atomic)
    palette = concept_palette(n)
    fig = plt.figure(figsize=(22, 12), dpi=100)
    ax = fig.add_axes([0.0, 0.0, 0.5, 0.95])
    ax.imshow(label_overlay(image, labels))
    ax.set_axis_off()
    ax.set_title(title or "FICT atomic regions", fontsize=14)
    for k, (x, y) in region_centres(labels, n).items():
        ax.text(x, y, str(k), fontsize=6, ha="center", va="center", color="white",
                bbox=dict(boxstyle="round,pad=0.1", fc="black", alpha=0.55, lw=0))
    counts = np.bincount(labels.ravel(), minlength=n)
    legend = fig.add_axes([0.51, 0.0, 0.49, 0.97])
    legend.set_axis_off()
    rows = (n + 3) // 4
    for k, node in enumerate(tree.atomic):
        col, row = divmod(k, rows)
        x, y = col * 0.25, 1 - (row + 1) / (rows + 1)
        legend.add_patch(plt.Rectangle((x, y - 0.008), 0.015, 0.016, color=palette[k] / 255,
                                       transform=legend.transAxes))
        style = "normal" if counts[k] else "italic"
        legend.text(x + 0.02, y, f"{k} {node.name}" + ("" if counts[k] else " (absent)"),
                    fontsize=7.5, va="center", style=style, transform=legend.transAxes)
    fig.savefig(path)
    plt.close(fig)

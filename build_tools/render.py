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


def region_centres(labels: np.ndarray) -> dict[int, tuple[float, float]]:
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
    for k, (x, y) in region_centres(labels).items():
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


def difference_heatmap(difference: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGB heat map of a grey-level difference (0 -> dark, vmax and above -> bright).

    By default vmax is the 99.9th percentile (at least 16), so small edits show up.
    """
    if vmax is None:
        vmax = max(16.0, float(np.percentile(difference, 99.9)))
    scaled = np.clip(difference / vmax * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def mask_overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 40, 40), alpha=0.55) -> np.ndarray:
    out = image.copy()
    out[mask] = (out[mask] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def flagged_overlay(image: np.ndarray, labels: np.ndarray, flagged_atomic: list[int]) -> np.ndarray:
    """The face with only the artifact-existing atomic regions coloured in."""
    palette = concept_palette(int(labels.max()) + 1)
    out = (image.astype(np.float32) * 0.6).astype(np.uint8)
    for k in flagged_atomic:
        region = labels == k
        out[region] = (image[region] * 0.4 + palette[k] * 0.6).astype(np.uint8)
    edge = region_boundaries(np.where(np.isin(labels, flagged_atomic), labels, -1))
    out[edge] = (255, 255, 255)
    return out


def render_pair_overlay(result, path: str, tree: ConceptTree | None = None, title: str = "") -> None:
    """real | fake | difference heat map | artifact mask | flagged concepts, with a list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree = tree or load_tree()
    flagged = [c for c in result.analysis.concepts if c.artifact]
    flagged_atomic = [tree.atomic_index[c.id] for c in flagged if c.atomic]
    panels = [
        ("real", result.real_crop),
        ("fake", result.fake_crop),
        ("|fake - real|", difference_heatmap(result.difference)),
        (f"artifact mask (> {result.analysis.mask_threshold:g})", mask_overlay(result.fake_crop, result.artifact_mask)),
        ("artifact-existing atomic concepts", flagged_overlay(result.real_crop, result.labels, flagged_atomic)),
    ]
    fig = plt.figure(figsize=(26, 6.6), dpi=90)
    for i, (name, panel) in enumerate(panels):
        ax = fig.add_axes([i * 0.167, 0.05, 0.16, 0.85])
        ax.imshow(panel)
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()
    text = fig.add_axes([5 * 0.167, 0.02, 0.165, 0.93])
    text.set_axis_off()
    lines = [title, "", "concept  coverage  share"] if title else ["concept  coverage  share"]
    atomic = sorted((c for c in flagged if c.atomic), key=lambda c: -c.share)
    for c in atomic[:30]:
        lines.append(f"{c.name}  {c.coverage:.2f}  {c.share:.2f}")
    parents = [c.name for c in flagged if not c.atomic]
    if parents:
        lines += ["", "parents: " + ", ".join(parents[:14]) + (" ..." if len(parents) > 14 else "")]
    text.text(0, 1, "\n".join(lines), va="top", fontsize=9, family="monospace", wrap=True)
    fig.savefig(path)
    plt.close(fig)


def truth_overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mask against truth on a dimmed image: both green, mask only red, truth only blue."""
    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    out[mask & truth] = (40, 220, 40)
    out[mask & ~truth] = (255, 40, 40)
    out[~mask & truth] = (60, 110, 255)
    return out


def render_mask_steps(pairs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: str,
                      config=None) -> None:
    """The hysteresis mask step by step, one row per pair (title, real crop, fake crop,
    valid crop pixels, truth in the crop), zoomed on the truth: the difference, the seeds,
    the grown mask, the final mask against the truth (docs/masks.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.fifa.artifacts import MaskConfig, hysteresis_steps

    config = config or MaskConfig()
    fig, axes = plt.subplots(len(pairs), 5, figsize=(17, 3.6 * len(pairs)), dpi=80, squeeze=False)
    for row, (title, real, fake, valid, truth) in zip(axes, pairs, strict=True):
        steps = hysteresis_steps(real, fake.astype(np.float32) - real.astype(np.float32), valid, config)
        ys, xs = np.nonzero(truth)
        pad = 24
        y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad, truth.shape[0])
        x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad, truth.shape[1])
        zoom = (slice(y0, y1), slice(x0, x1))
        inter = np.count_nonzero(steps.mask & truth)
        iou = inter / max(np.count_nonzero(steps.mask | truth), 1)
        panels = [(f"{title}: fake", fake[zoom]),
                  ("largest channel change", difference_heatmap(steps.difference[zoom], vmax=24.0)),
                  ("seeds (above the pair's noise)", mask_overlay(fake[zoom], steps.seeds[zoom].astype(bool))),
                  ("grown through the soft border", mask_overlay(fake[zoom], steps.grown[zoom].astype(bool))),
                  (f"mask vs truth, IoU {iou:.2f}", truth_overlay(fake[zoom], steps.mask[zoom], truth[zoom]))]
        for ax, (name, panel) in zip(row, panels, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=10)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_label_png(labels: np.ndarray, path: str) -> None:
    """Label map as a palette PNG: pixel values are atomic indices, viewers show colours."""
    from PIL import Image

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = concept_palette(256)
    im.putpalette(palette.ravel().tolist())
    im.save(path, optimize=False)

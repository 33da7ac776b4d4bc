"""Stage 3: the whole-image artifact mask from the per-pixel RGB difference, and the
pair-level gates that say when the difference method does not hold.

FiFa (arXiv 2510.20531) marks the top 5 % of per-pixel differences between a real
image and its attribute-edited fake.  Here that is the `percentile` mode; the default
`absolute` mode thresholds the difference in grey levels instead, which does not force
5 % of every crop to be "artifact" whether the edit covers 1 % or 20 % of it.  Both
modes share a noise floor, measured on the pair itself, so re-encoding noise is not an
artifact and an identical pair gives an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from schemas.common import PairRejected, RejectReason

MASK_MODES = ("absolute", "percentile")


class ArtifactRejected(PairRejected):
    """The pair fails an artifact-stage gate (misaligned, not localized)."""


@dataclass(frozen=True)
class MaskConfig:
    mode: str = "absolute"
    threshold: float = 12.0  # absolute mode: mean |fake - real| over RGB, grey levels 0..255
    percentile: float = 95.0  # percentile mode: keep differences above this percentile
    noise_floor: float = 4.0  # never mark a difference at or below this (grey levels)
    noise_k: float = 8.0  # and never below median + k * MAD of the crop's differences
    smooth_sigma: float = 1.0  # Gaussian blur of the difference before thresholding
    open_px: int = 3  # morphological opening removes isolated specks...
    close_px: int = 5  # ...closing fills pin-holes inside a changed area
    min_component_px: int = 24  # connected changes smaller than this are dropped
    max_face_change: float = 0.5  # not_localized: more of the face than this changed
    max_shift_px: float = 2.0  # misaligned: the fake is shifted by more than this (original px)
    min_shift_response: float = 0.3  # ...and the shifted copy explains the fake this well

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}, not {self.mode!r}")
        if not 0 < self.percentile < 100:
            raise ValueError("percentile must be in (0, 100)")


def rgb_difference(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Mean absolute difference over R, G, B per pixel, float32 in 0..255."""
    diff = cv2.absdiff(real, fake).astype(np.float32)
    return cv2.transform(diff, _CHANNEL_MEAN)


_CHANNEL_MEAN = np.full((1, 3), 1 / 3, np.float32)


def noise_threshold(diff: np.ndarray, valid: np.ndarray, config: MaskConfig) -> float:
    """Grey level below which a difference is treated as encoding noise.

    The median and MAD are taken over the crop: for a localized edit most pixels are
    unchanged, so they describe the noise of the pair (0 for a lossless pair).
    """
    # Every second pixel in each direction: the same statistics at a quarter of the cost.
    values = diff[::2, ::2][valid[::2, ::2]]
    if values.size == 0:
        return config.noise_floor
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return max(config.noise_floor, median + config.noise_k * 1.4826 * mad)


@dataclass
class ArtifactMask:
    difference: np.ndarray  # (H, W) float32, smoothed mean |Δ| in grey levels
    mask: np.ndarray  # (H, W) bool
    threshold: float  # grey level used
    noise: float  # the noise threshold part of it
    changed_face_fraction: float  # face pixels above the noise threshold


def artifact_mask(real: np.ndarray, fake: np.ndarray, valid: np.ndarray,
                  face: np.ndarray, config: MaskConfig) -> ArtifactMask:
    """Whole-image artifact mask for aligned crops; raises ArtifactRejected at a gate.

    `valid`: crop pixels that come from the image (not the border fill);
    `face`: crop pixels of the face (FICT `face` node), for the localisation gate.
    """
    diff = rgb_difference(real, fake)
    if config.smooth_sigma > 0:
        diff = cv2.GaussianBlur(diff, (0, 0), config.smooth_sigma)
    noise = noise_threshold(diff, valid, config)
    if config.mode == "percentile":
        wanted = float(np.percentile(diff[valid], config.percentile)) if valid.any() else 0.0
    else:
        wanted = config.threshold
    threshold = max(wanted, noise)

    changed = (diff > noise) & valid
    face_px = int(np.count_nonzero(face & valid))
    changed_face = np.count_nonzero(changed & face) / face_px if face_px else 0.0
    if changed_face > config.max_face_change:
        raise ArtifactRejected(
            RejectReason.NOT_LOCALIZED,
            f"{changed_face:.0%} of the face changed (max {config.max_face_change:.0%}): "
            "identity/expression swap or misaligned pair, not a local attribute edit",
        )

    mask = (diff > threshold) & valid
    mask = clean_mask(mask, config)
    return ArtifactMask(diff, mask, threshold, noise, changed_face)


def clean_mask(mask: np.ndarray, config: MaskConfig) -> np.ndarray:
    m = mask.astype(np.uint8)
    if config.open_px > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(config.open_px))
    if config.close_px > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(config.close_px))
    if config.min_component_px > 0 and m.any():
        n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < config.min_component_px
        small[0] = False
        if small.any():
            m[small[comp]] = 0
    return m.astype(bool)


def _disk(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def global_shift(real: np.ndarray, fake: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel translation of the fake relative to the real, and the strength of the
    phase-correlation peak (1 for a pure shift, near 0 or negative when the images do
    not match as shifted copies, e.g. a swapped identity).

    Measured at half resolution, which keeps sub-pixel precision at a quarter of the cost.
    """
    h, w = real.shape[:2]
    half = (w // 2, h // 2)
    a = cv2.resize(cv2.cvtColor(real, cv2.COLOR_RGB2GRAY), half, interpolation=cv2.INTER_AREA)
    b = cv2.resize(cv2.cvtColor(fake, cv2.COLOR_RGB2GRAY), half, interpolation=cv2.INTER_AREA)
    window = cv2.createHanningWindow(half, cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), window)
    return 2 * float(dx), 2 * float(dy), float(response)


def check_alignment(real: np.ndarray, fake: np.ndarray, config: MaskConfig,
                    crop_scale: float = 1.0) -> None:
    """Reject a fake that is translated against the real image.

    `crop_scale`: crop pixels per original pixel, so the limit holds in original pixels.
    """
    dx, dy, response = global_shift(real, fake)
    dx, dy = dx / crop_scale, dy / crop_scale
    if response >= config.min_shift_response and float(np.hypot(dx, dy)) > config.max_shift_px:
        raise ArtifactRejected(
            RejectReason.MISALIGNED,
            f"fake is shifted by ({dx:+.1f}, {dy:+.1f}) px relative to the real image",
        )

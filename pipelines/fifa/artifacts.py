"""Stage 3: the whole-image artifact mask from the per-pixel RGB difference, and the
pair-level gates that say when the difference method does not hold.

FiFa (arXiv 2510.20531) marks the top 5 % of per-pixel differences between a real
image and its attribute-edited fake.  Here that is the `percentile` mode; `absolute`
thresholds the mean difference over RGB in grey levels.  The default, `hysteresis`,
finds what an edit changed without taking in the noise of re-encoding (docs/masks.md):

* the noise of the pair is measured on the pair itself, per level of image texture
  (JPEG and resampling errors grow with texture): the median and MAD of each signal in
  each of 16 texture levels, most pixels being unchanged;
* seeds are changes clearly above that noise: the largest channel difference (smoothed
  over ~1 px) above max(`threshold`, noise), a consistent shift of colour or tone (the
  signed difference averaged over ~3 px, where zero-mean compression noise cancels)
  above max(`shift_threshold`, noise), or the change's local energy (fine textures)
  above max(`texture_threshold`, noise); a seed region must have `min_seed_px` pixels,
  or `min_strong_seed_px` when it stands twice above its level;
* a seed grows by up to `grow_px` pixels into neighbours that changed by more than
  `grow_level` grey levels, which recovers the soft, low-amplitude border of an edit
  (blending, blur, colour grading) while noise far from any seed stays out;
* the mask keeps the pixels whose own largest channel change exceeds `trim_level` (the
  rule of the ground truth the mask is measured against).

Before the mask, `global_change` rejects a fake whose whole image changed (a colour
grade, brightness or contrast, a re-render or resample of the whole image): a median
colour or tone shift, or a change of fine detail, over the face and over the rest of
the crop.  Such a fake has no local artifact to explain, and the old noise floor rose
with it and hid it (an `ok` pair with nothing flagged).  Identical pairs and pure
re-compression give an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from schemas.common import PairRejected, RejectReason

MASK_MODES = ("hysteresis", "absolute", "percentile")


# `threshold` when none is given: the seed level (hysteresis) and the whole threshold
# (absolute) are different things, in different units (largest channel, mean of RGB).
DEFAULT_THRESHOLDS = {"hysteresis": 6.0, "absolute": 12.0, "percentile": 12.0}


class ArtifactRejected(PairRejected):
    """The pair fails an artifact-stage gate (misaligned, global change, not localized)."""


@dataclass(frozen=True)
class MaskConfig:
    mode: str = "hysteresis"
    # absolute mode: mean |fake - real| over RGB; hysteresis mode: the seed level of the
    # largest channel difference; grey levels 0..255
    threshold: float = 6.0
    percentile: float = 95.0  # percentile mode: keep differences above this percentile
    # absolute and percentile modes: never mark a difference at or below `noise_floor`
    # grey levels, nor below median + `noise_k` * MAD of the crop's differences
    noise_floor: float = 4.0
    noise_k: float = 8.0
    smooth_sigma: float = 1.0  # Gaussian blur of the difference before thresholding
    open_px: int = 3  # absolute and percentile: morphological opening removes isolated specks...
    close_px: int = 5  # ...closing fills pin-holes inside a changed area
    min_component_px: int = 24  # connected changes smaller than this are dropped
    max_face_change: float = 0.5  # not_localized: more of the face than this changed
    max_shift_px: float = 2.0  # misaligned: the fake is shifted by more than this (original px)
    min_shift_response: float = 0.3  # ...and the shifted copy explains the fake this well
    # hysteresis mode (tuned on the `tune` half of the independent evaluation set)
    shift_threshold: float = 4.0  # seed level of a colour or tone shift averaged over ~3 px
    noise_bins: int = 16  # texture levels the noise is measured in
    seed_noise_k: float = 7.5  # a seed is above median + k * MAD of its texture level
    min_seed_px: int = 40  # a seed region smaller than this is noise...
    min_strong_seed_px: int = 8  # ...unless it is this large and twice above its level
    grow_level: float = 5.0  # seeds grow into neighbours changed by more than this...
    grow_px: int = 4  # ...by at most this many pixels
    texture_sigma: float = 3.0  # a third seed: the change's energy averaged over ~this many px (0: off)
    texture_threshold: float = 3.0  # ...above max(this, noise): fine textures (lines, freckles)
    # A fourth seed: the unsmoothed largest change above max(this, noise), for lines one or
    # two pixels wide that the 1 px smoothing halves (0: off).
    raw_seed_floor: float = 4.0
    trim_level: float = 4.0  # the mask keeps pixels whose own largest channel change exceeds this
    # global change: the face's median colour or tone shift, or its fine-detail ratio
    max_face_shift: float = 2.0  # grey levels
    detail_ratio_range: tuple[float, float] = (0.8, 1.4)  # fake / real Laplacian energy

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}, not {self.mode!r}")
        if not 0 < self.percentile < 100:
            raise ValueError("percentile must be in (0, 100)")


def mask_config(mode: str = "hysteresis", threshold: float | None = None,
                percentile: float | None = None) -> MaskConfig:
    """The mask settings of a mode, with its own default threshold unless one is given."""
    return MaskConfig(mode=mode, threshold=DEFAULT_THRESHOLDS[mode] if threshold is None else threshold,
                      **({} if percentile is None else {"percentile": percentile}))


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
    difference: np.ndarray  # (H, W) float32, smoothed |Δ| in grey levels (largest channel in hysteresis mode)
    mask: np.ndarray  # (H, W) bool
    threshold: float  # grey level used
    noise: float  # the noise threshold part of it
    changed_face_fraction: float  # face pixels above the noise threshold


def artifact_mask(real: np.ndarray, fake: np.ndarray, valid: np.ndarray,
                  face: np.ndarray, config: MaskConfig) -> ArtifactMask:
    """Whole-image artifact mask for aligned crops; raises ArtifactRejected at a gate.

    `valid`: crop pixels that come from the image (not the border fill);
    `face`: crop pixels of the face (FICT `face` node), for the localisation gates.
    The global-change gate holds in every mode: a graded image is never `ok`.
    """
    signed = cv2.subtract(fake, real, dtype=cv2.CV_32F)
    raw = channel_max(cv2.absdiff(fake, real)).astype(np.float32)
    check_global_change(real, fake, signed, raw, face & valid, valid, config)
    if config.mode == "hysteresis":
        return hysteresis_mask(real, signed, raw, valid, face, config)
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
    changed_face = _face_share(changed, face & valid)
    _check_localized(changed_face, config)
    mask = (diff > threshold) & valid
    mask = clean_mask(mask, config)
    return ArtifactMask(diff, mask, threshold, noise, changed_face)


def _face_share(mask: np.ndarray, face: np.ndarray) -> float:
    face_px = int(np.count_nonzero(face))
    return np.count_nonzero(mask & face) / face_px if face_px else 0.0


def _check_localized(changed_face: float, config: MaskConfig) -> None:
    if changed_face > config.max_face_change:
        raise ArtifactRejected(
            RejectReason.NOT_LOCALIZED,
            f"{changed_face:.0%} of the face changed (max {config.max_face_change:.0%}): "
            "identity/expression swap or misaligned pair, not a local attribute edit",
        )


def channel_max(image: np.ndarray) -> np.ndarray:
    """The largest of an (H, W, 3) image's channels, per pixel (numpy's max over the last
    axis is several times slower on these strided arrays)."""
    r, g, b = cv2.split(image)
    return np.maximum(np.maximum(r, g), b)


class NoiseModel:
    """The pair's own noise, per texture level.

    Each pixel gets a level 0..bins-1: quantiles of the real image's smoothed gradient
    magnitude, the largest of its three channels' (a colour edge of even brightness is
    where JPEG's subsampled chroma errs most).  `noise(signal, k)` is, per level, median +
    k * MAD of the signal over the valid pixels, made non-decreasing with texture (more
    texture never has less noise).  Levels are read at half resolution (the texture is
    smoothed over 2 px anyway), statistics on every fourth pixel in each direction,
    sorted by level once per pair.
    """

    def __init__(self, real: np.ndarray, valid: np.ndarray, bins: int):
        self.bins, self.shape = bins, valid.shape
        half = (valid.shape[1] // 2, valid.shape[0] // 2)
        small = cv2.resize(real, half, interpolation=cv2.INTER_AREA)
        gx = channel_max(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 1, 0)))
        gy = channel_max(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 0, 1)))
        texture = cv2.GaussianBlur(cv2.add(gx, gy, dtype=cv2.CV_32F), (0, 0), 1.0)
        # Statistics on every fourth pixel in each direction (every second of the half grid).
        self._sampled = np.zeros(texture.shape, bool)
        self._sampled[::2, ::2] = valid[::4, ::4][:(texture.shape[0] + 1) // 2, :(texture.shape[1] + 1) // 2]
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if not self._sampled.any():
            levels, scale = np.zeros(texture.shape, np.uint8), np.ones(texture.shape, np.float32)
            self._order, self._bounds = np.zeros(0, np.intp), np.zeros(bins + 1, np.intp)
        else:
            inside = texture[self._sampled]
            edges = np.quantile(inside, np.linspace(0, 1, bins + 1)[1:-1]).astype(np.float32)
            levels = np.searchsorted(edges, texture, side="right").astype(np.uint8)
            ids = levels[self._sampled]
            # The top level is open-ended: its strongest edges err more than its typical pixel.
            top_inside = inside[ids == bins - 1]
            typical_top = max(float(np.median(top_inside)), 1.0) if top_inside.size else 1.0
            scale = np.where(levels == bins - 1, np.maximum(1.0, texture / typical_top), 1.0).astype(np.float32)
            self._order = np.argsort(ids, kind="stable")
            self._bounds = np.searchsorted(ids[self._order], np.arange(bins + 1))
        size = valid.shape[::-1]
        self.levels = cv2.resize(levels, size, interpolation=cv2.INTER_NEAREST)
        self.scale = cv2.resize(scale, size, interpolation=cv2.INTER_LINEAR)

    def _median_mad(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per level, the median and the MAD of `signal` (cached per signal)."""
        if id(signal) not in self._stats:
            values = signal[::2, ::2][:self._sampled.shape[0], :self._sampled.shape[1]][self._sampled][self._order]
            median, mad = np.zeros(self.bins, np.float32), np.zeros(self.bins, np.float32)
            for b in range(self.bins):
                x = values[self._bounds[b]:self._bounds[b + 1]]
                if x.size:
                    median[b] = np.median(x)
                    mad[b] = np.median(np.abs(x - median[b]))
            self._stats[id(signal)] = median, mad
        return self._stats[id(signal)]

    def noise(self, signal: np.ndarray, k: float) -> np.ndarray:
        """(bins,) float32: median + k * MAD of `signal` per level, non-decreasing."""
        median, mad = self._median_mad(signal)
        return np.maximum.accumulate(median + np.float32(k * 1.4826) * mad)

    def level_map(self, signal: np.ndarray, k: float, floor: float, scaled: bool = True) -> np.ndarray:
        """Per pixel, max(floor, the noise of its level), grown within the top level."""
        lut = np.zeros(256, np.float32)
        lut[:self.bins] = self.noise(signal, k)
        per_pixel = cv2.LUT(self.levels, lut)
        if scaled:
            per_pixel = cv2.multiply(per_pixel, self.scale)
        return np.maximum(per_pixel, np.float32(floor))


@dataclass
class HysteresisSteps:
    """The intermediate masks of the hysteresis mode (docs/masks.md draws them)."""

    difference: np.ndarray  # (H, W) float32: largest channel change, smoothed over ~1 px
    seeds: np.ndarray  # (H, W) uint8: changes clearly above the pair's noise
    around: np.ndarray  # (H, W) uint8: pixels a seed may grow into
    grown: np.ndarray  # (H, W) uint8: seeds grown, closed
    mask: np.ndarray  # (H, W) bool: grown, trimmed to pixels changed beyond `trim_level`
    noise: float  # the highest seed level the noise set


def hysteresis_mask(real: np.ndarray, signed: np.ndarray, raw: np.ndarray, valid: np.ndarray,
                    face: np.ndarray, config: MaskConfig) -> ArtifactMask:
    """`signed`: fake - real; `raw`: its largest channel change."""
    face_valid = face & valid
    steps = hysteresis_steps(real, signed, valid, config, raw)
    # The gate counts every pixel that changed beyond its texture's typical difference,
    # not only the mask: a swapped face changes everywhere a little.
    changed_face = _face_share(steps.around.astype(bool), face_valid)
    _check_localized(changed_face, config)
    return ArtifactMask(steps.difference, steps.mask, max(config.threshold, steps.noise), steps.noise,
                        changed_face)


def _shift(signed: np.ndarray) -> np.ndarray:
    """The largest channel of the signed difference averaged over ~3 px (at half
    resolution, which a 3 px blur does not need: a quarter of the cost)."""
    h, w = signed.shape[:2]
    half = cv2.resize(signed, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    blurred = channel_max(np.abs(cv2.GaussianBlur(half, (0, 0), 1.5)))
    return cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)


def hysteresis_steps(real: np.ndarray, signed: np.ndarray, valid: np.ndarray,
                     config: MaskConfig, raw: np.ndarray | None = None) -> HysteresisSteps:
    """Seeds above the pair's noise, grown through the soft border; `signed` is fake - real,
    `raw` its largest channel change (computed when not given)."""
    raw = channel_max(np.abs(signed)) if raw is None else raw
    largest = cv2.GaussianBlur(raw, (0, 0), config.smooth_sigma)
    shift = _shift(signed)
    model = NoiseModel(real, valid, config.noise_bins)
    k = config.seed_noise_k
    level = model.level_map(largest, k, config.threshold)
    level_shift = model.level_map(shift, k, config.shift_threshold)
    seeds = (largest > level) | (shift > level_shift)
    if config.texture_sigma > 0:
        h, w = raw.shape
        energy = cv2.resize(cv2.GaussianBlur(cv2.resize(raw, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
                                             (0, 0), config.texture_sigma / 2), (w, h), interpolation=cv2.INTER_LINEAR)
        seeds |= energy > model.level_map(energy, k, config.texture_threshold)
    if config.raw_seed_floor > 0:
        seeds |= raw > model.level_map(raw, k, config.raw_seed_floor)
    strong = (largest > 2 * level) | (shift > 2 * level_shift)
    # A small change that stands far above the noise (a mole, an iris) is kept.
    seeds = _drop_small((seeds & valid).astype(np.uint8), config.min_seed_px) \
        | _drop_small((strong & valid).astype(np.uint8), config.min_strong_seed_px)
    # Grow through pixels above the level and above the typical difference of their texture.
    around = (((largest > model.level_map(largest, 0.0, config.grow_level, scaled=False))
               | (shift > model.level_map(shift, 0.0, config.grow_level, scaled=False))) & valid).astype(np.uint8)
    grown = seeds
    step = np.ones((3, 3), np.uint8)
    for _ in range(config.grow_px):
        grown = cv2.dilate(grown, step) & around | seeds
    if config.close_px > 1:
        grown = cv2.morphologyEx(grown, cv2.MORPH_CLOSE, _disk(config.close_px))
    mask = grown & (raw > config.trim_level).astype(np.uint8) if config.trim_level > 0 else grown.copy()
    mask = _drop_small(mask, config.min_component_px).astype(bool) & valid
    return HysteresisSteps(largest, seeds, around, grown, mask, float(model.noise(largest, k).max()))


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """uint8 mask without its 8-connected components smaller than `min_px`."""
    if min_px > 0 and mask.any():
        _, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < min_px
        small[0] = False
        if small.any():
            mask[small[comp]] = 0
    return mask


def check_global_change(real: np.ndarray, fake: np.ndarray, signed: np.ndarray, raw: np.ndarray,
                        face: np.ndarray, valid: np.ndarray, config: MaskConfig) -> None:
    """Reject a fake whose whole image changed (`global_change`), before any mask.

    Two measures, each robust to a local edit that covers less than half of the area
    measured: the median of the signed difference per channel (a colour grade, brightness
    or contrast moves it; compression noise has median 0), and the median over 16 px
    blocks of the fake's fine-detail (Laplacian) energy over the real's (a blur, resample
    or re-render of the whole image moves it; re-encoding at JPEG 80-95 keeps it within
    about 10 %).  A measure must be off on the face and, where the crop shows enough of
    it, on the rest of the image too: a change of the face alone is a swap or a
    reenactment, which the localisation gate rejects as `not_localized`.  Medians are
    read on every second pixel in each direction."""
    if np.count_nonzero(face) < 256:
        return
    rest = valid & ~face
    enough_rest = np.count_nonzero(rest) >= 0.05 * rest.size
    sampled, face_s, rest_s = signed[::2, ::2], face[::2, ::2], rest[::2, ::2]

    shift = np.abs(np.median(sampled[face_s], axis=0))
    worst = int(np.argmax(shift))
    rest_shift = float(np.abs(np.median(sampled[rest_s], axis=0)).max()) if enough_rest else None
    if shift[worst] >= config.max_face_shift and (rest_shift is None or rest_shift >= config.max_face_shift / 2):
        raise ArtifactRejected(
            RejectReason.GLOBAL_CHANGE,
            f"the whole image changed: the face's median {'RGB'[worst]} shifted by {shift[worst]:.1f} "
            f"grey levels (at most {config.max_face_shift:g} for a local edit), and the rest of the image "
            f"too; {_changed_share(raw, face):.0%} of the face changed by more than 4 levels. A colour grade, "
            "brightness or contrast change, or an entire synthesis: no local artifact to explain",
        )
    low, high = config.detail_ratio_range
    energy = detail_energy(real), detail_energy(fake)
    ratio = detail_ratio(*energy, face)
    rest_ratio = detail_ratio(*energy, rest) if enough_rest else None
    if not low <= ratio <= high and (rest_ratio is None or not low <= rest_ratio <= high):
        raise ArtifactRejected(
            RejectReason.GLOBAL_CHANGE,
            f"the whole image changed: the face's fine detail is x{ratio:.2f} the real image's (local "
            f"edits keep it within x{low:g}-x{high:g}), and the rest of the image's too; "
            f"{_changed_share(raw, face):.0%} of the face changed by more than 4 levels. A blur, resample or "
            "re-render of the whole image: no local artifact to explain",
        )


def _changed_share(raw: np.ndarray, face: np.ndarray) -> float:
    return _face_share(cv2.GaussianBlur(raw, (0, 0), 1.0) > 4.0, face)


DETAIL_BLOCK = 16


def detail_energy(image: np.ndarray) -> np.ndarray:
    """Mean squared Laplacian of the grey image per 16 px block."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    return cv2.resize(lap * lap, (grey.shape[1] // DETAIL_BLOCK, grey.shape[0] // DETAIL_BLOCK),
                      interpolation=cv2.INTER_AREA)


def detail_ratio(real_energy: np.ndarray, fake_energy: np.ndarray, area: np.ndarray) -> float:
    """Median over the area's textured blocks of fake / real detail energy (1: detail
    unchanged, also when the area has too little texture to tell)."""
    inside = cv2.resize(area.astype(np.float32), real_energy.shape[::-1], interpolation=cv2.INTER_AREA) > 0.99
    textured = inside & (real_energy > 4.0)  # flat blocks carry no detail to compare
    if np.count_nonzero(textured) < 8:
        return 1.0
    return float(np.median(fake_energy[textured] / real_energy[textured]))


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

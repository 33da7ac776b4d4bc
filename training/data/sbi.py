"""Self-Blended Images (SBI) in numpy/cv2: a fake made from one real face crop, and its mask.

SBI (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022; code
`mapooon/SelfBlendedImages`, `src/utils/sbi.py:SBI_Dataset.self_blending` and
`src/utils/blend.py:dynamic_blend`) blends a slightly altered copy of a face into the face
itself.  CoRIT trains on the (real, SBI(real)) pairs and reads its K=3 regions (face, face
boundary, background) off the blend mask (`region_masks`).  This module rewrites the
algorithm from its description (../shared/references/training.md §4) without albumentations;
every random number comes from the `numpy.random.Generator` passed in, so a seed fixes the
output byte for byte.

`self_blend(image, landmarks, rng)`, in the reference's order of random draws:

1. **Landmarks.**  81 points (iBUG-68 + 13 forehead points) are cut to the 68 iBUG points
   with p = 0.25 (the forehead then stays out of the mask).  68 points are used as given.
2. **Hull mask.**  The filled convex hull of the points (a 0/1 mask).
3. **Source-target generator.**  ``source = target = image``; the generator is applied to
   the source with p = 0.5, otherwise to the target.  It is
   RGB shift (±20 per channel, p = 0.3) -> hue/saturation/value shift (±0.3, p = 1) ->
   brightness/contrast (±0.1 each, p = 1) -> one of {down-scale by 2 or 4 (nearest) and back
   up (bilinear), sharpen (alpha U(0.2, 0.5), lightness U(0.5, 1))}, each with p = 1/2.
4. **randaffine.**  The source and the mask go through the same affine warp: translation
   U(±3 %) of the width and U(±1.5 %) of the height, scale U(0.95, 1/0.95) drawn for x and
   y apart (albumentations' `Affine` default), about the image centre, black outside.  Then
   an elastic deformation (alpha 50, sigma 7, in pixels) of the **mask only** (SBI warps the
   source too, then throws that copy away).
5. **Blend mask** (`blend.get_blend_mask`): resize the mask to a random (h, w) in
   [192, 256]^2; Gaussian blur with an odd kernel k1 in 5..25 (sigma from the kernel);
   divide by the max; set values < 1 to 0; Gaussian blur with an odd kernel k2 in 5..25 and
   an integer sigma in [5, 45]; divide by the max; resize back to (H, W).
6. **Dynamic blend.**  ratio drawn from [0.25, 0.5, 0.75, 1, 1, 1] (so P(1) = 1/2);
   ``mask *= ratio``; ``fake = mask * source + (1 - mask) * target``; ``real = target``.

Left out, as the inputs are already aligned face crops: SBI's hflip, its loose face crop
before blending and its tight crop after.  Also left out: the post-blend JPEG compression.
Kept as an option (`SbiConfig.post_jitter`, off by default so that `real` is exactly SBI's
``img_r``): SBI's joint post-colour-jitter (RGB shift ±20, HSV ±0.3, brightness/contrast
±0.3, each p = 0.3), the same draw applied to `real` and `fake`.  Every step of it is a
per-pixel function of the pixel's value, so `fake` still equals `real` wherever the mask is 0.

Differences from the reference, on purpose:

* **First blur on a 0/1 uint8 mask** (`SbiConfig.binary_first_blur`, default True).  SBI's
  mask is uint8 (``np.zeros_like(img[:, :, 0])``), so the resize and the first blur round to
  0 or 1 and "set < 1 to 0" keeps the pixels where the blurred mask is >= 0.5: a smoothing of
  the hull's outline, not an erosion.  That is what SBI trained with, and the default here.
  With False the mask is blurred in float and "< 1 -> 0" (up to 1e-6) erodes it by about
  k1 / 2 pixels of the resized mask, which is how the write-up describes the step.
* **Rounding.**  albumentations' uint8 look-up tables and SBI's ``astype(np.uint8)`` after the
  blend truncate; here every uint8 result is rounded to the nearest value (no systematic
  darkening of blended pixels, which a detector could learn as a shortcut).
* **HSV units.**  The hue/saturation/value limits are in the units albumentations applies to
  uint8 images: hue in OpenCV's 0..179 scale, saturation and value in 0..255.  SBI's ±0.3
  therefore moves no value by a whole step; the step's visible effect is the RGB -> HSV ->
  RGB round trip's quantisation, as in the reference.  Raise the limits to make it count.
* **Landmark checks.**  Points that do not round to a pixel of the image, NaN/inf, or a hull
  of zero area raise ValueError; SBI would silently blend an empty or clipped mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SbiConfig", "SelfBlend", "region_masks", "self_blend"]

_NUM_IBUG = 68
_LANDMARK_COUNTS = (68, 81)
_MIN_HULL_AREA = 0.5  # square pixels; a smaller hull counts as zero area
_FLOAT_ONE_TOLERANCE = 1e-6  # float first blur: "< 1 -> 0" counts 1 - 1e-6 as 1


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SbiConfig:
    """The numbers of SBI's pipeline; the defaults are those of `mapooon/SelfBlendedImages`.

    Landmarks
        p_only_68: with this probability 81 points are cut to the 68 iBUG points.
    Source-target generator (step 3 of the module docstring)
        p_transform_source: the generator goes to the source with this probability, else to
            the target.
        p_rgb_shift, rgb_shift: RGB shift U(±rgb_shift) per channel, in 0..255 units.
        p_hsv, hue_shift, sat_shift, val_shift: HSV shifts U(±limit); hue in OpenCV's 0..179
            scale, saturation and value in 0..255 (albumentations' uint8 units).
        p_brightness_contrast, brightness, contrast: ``img * (1 + c) + 255 * b`` with
            b ~ U(±brightness), c ~ U(±contrast).
        p_downscale: the last step is the down-scale with this probability, else sharpen
            (albumentations' `OneOf` of two p=1 transforms).
        downscale_factors: the down-scale factor, drawn uniformly from these.
        sharpen_alpha, sharpen_lightness: U ranges of albumentations' `Sharpen`.
    randaffine (step 4)
        translate_x, translate_y: translation U(±t) as a fraction of the width / height.
        scale: U range of the scale, drawn for x and y apart.
        elastic_alpha, elastic_sigma: elastic deformation of the mask: a displacement field of
            U(-1, 1) noise, Gaussian-smoothed with sigma, times alpha (pixels).
    Blend mask (step 5)
        blend_size: (low, high) of the random size h and w (inclusive) the mask is blurred at.
        blur_kernel: (low, high) of the odd Gaussian kernel sizes k1 and k2 (inclusive).
        blur_sigma: (low, high) of the integer sigma of the second blur (inclusive).
        binary_first_blur: blur the mask as uint8 0/1 first, as SBI does (see the module
            docstring); False blurs it in float, which erodes it.
    Dynamic blend (step 6)
        blend_ratios: the ratio is drawn uniformly from this list.
    Joint post-colour-jitter (optional; SBI's training transform without its JPEG step)
        post_jitter: apply it (default False).
        post_p, post_rgb_shift, post_hsv_shift, post_brightness, post_contrast: each of the
            three steps is applied with probability post_p, with these limits.
    """

    p_only_68: float = 0.25
    p_transform_source: float = 0.5
    p_rgb_shift: float = 0.3
    rgb_shift: float = 20.0
    p_hsv: float = 1.0
    hue_shift: float = 0.3
    sat_shift: float = 0.3
    val_shift: float = 0.3
    p_brightness_contrast: float = 1.0
    brightness: float = 0.1
    contrast: float = 0.1
    p_downscale: float = 0.5
    downscale_factors: tuple[int, ...] = (2, 4)
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)
    translate_x: float = 0.03
    translate_y: float = 0.015
    scale: tuple[float, float] = (0.95, 1 / 0.95)
    elastic_alpha: float = 50.0
    elastic_sigma: float = 7.0
    blend_size: tuple[int, int] = (192, 256)
    blur_kernel: tuple[int, int] = (5, 25)
    blur_sigma: tuple[int, int] = (5, 45)
    binary_first_blur: bool = True
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    post_jitter: bool = False
    post_p: float = 0.3
    post_rgb_shift: float = 20.0
    post_hsv_shift: float = 0.3
    post_brightness: float = 0.3
    post_contrast: float = 0.3

    def __post_init__(self) -> None:
        probabilities = ("p_only_68", "p_transform_source", "p_rgb_shift", "p_hsv", "p_brightness_contrast",
                         "p_downscale", "post_p")
        for name in probabilities:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SbiConfig.{name} must lie in [0, 1]")
        ranges = ("sharpen_alpha", "sharpen_lightness", "scale", "blend_size", "blur_kernel", "blur_sigma")
        for name in ranges:
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"SbiConfig.{name} must be (low, high) with low <= high")
        k_low, k_high = self.blur_kernel
        if k_low < 1 or k_low % 2 == 0 or k_high % 2 == 0:
            raise ValueError("SbiConfig.blur_kernel bounds must be positive odd numbers")
        if self.blend_size[0] < 1 or self.blur_sigma[0] <= 0:
            raise ValueError("SbiConfig.blend_size and blur_sigma must be positive")
        if not self.downscale_factors or min(self.downscale_factors) < 1:
            raise ValueError("SbiConfig.downscale_factors must be a non-empty list of factors >= 1")
        if not self.blend_ratios or not all(0.0 <= r <= 1.0 for r in self.blend_ratios):
            raise ValueError("SbiConfig.blend_ratios must be a non-empty list of values in [0, 1]")


@dataclass(frozen=True, eq=False)
class SelfBlend:
    """One SBI sample.

    real: (H, W, 3) uint8, the target after the generator (SBI's ``img_r``).
    fake: (H, W, 3) uint8, ``mask * source + (1 - mask) * real``, rounded (then the same
        post jitter as `real` when `SbiConfig.post_jitter`); equal to `real` where mask == 0.
    mask: (H, W) float32 in [0, 1], the blend weights (blend mask times `ratio`).
    ratio: the dynamic blend ratio drawn.
    source_transformed: True when the generator went to the source (then `real` is the
        input image unchanged, unless `post_jitter`), False when it went to the target.
    num_landmarks: the number of landmarks the hull was built from (68 or 81).
    """

    real: np.ndarray
    fake: np.ndarray
    mask: np.ndarray
    ratio: float = 1.0
    source_transformed: bool = True
    num_landmarks: int = _NUM_IBUG


# --------------------------------------------------------------------------- inputs
def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be an (H, W, 3) uint8 RGB array")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is too small: {image.shape[:2]}")


def _check_landmarks(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """The landmarks as float64 (N, 2), after checking shape, finiteness and bounds."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in _LANDMARK_COUNTS:
        raise ValueError(f"landmarks must have shape (68, 2) or (81, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or inf")
    # A point is inside the image when it rounds to one of its pixels (pixel centres at integers).
    x, y = points[:, 0], points[:, 1]
    outside = (x < -0.5) | (x >= width - 0.5) | (y < -0.5) | (y >= height - 0.5)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{int(outside.sum())} landmark(s) lie outside the {width}x{height} image "
                         f"(first: index {first} at x={x[first]:.1f}, y={y[first]:.1f}); "
                         "landmarks are (x=column, y=row) in pixels of the image")
    return points


def _hull(points: np.ndarray) -> np.ndarray:
    """The convex hull of the points, (M, 1, 2) float32; ValueError when it has no area (below
    `_MIN_HULL_AREA` square pixels, so that float round-off on collinear points still counts
    as zero)."""
    hull = cv2.convexHull(points.astype(np.float32))
    if len(hull) < 3 or cv2.contourArea(hull) < _MIN_HULL_AREA:
        raise ValueError("the landmarks' convex hull is degenerate (zero area): "
                         "the points are all equal or collinear")
    return hull


def _hull_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """The filled convex hull of (x, y) points as an (H, W) uint8 0/1 mask, at 1/16-pixel
    precision (cv2's fixed-point `shift`)."""
    fixed = np.round(_hull(points) * 16.0).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, fixed, 1, lineType=cv2.LINE_8, shift=4)
    return mask


# --------------------------------------------------------------------------- colour steps
@dataclass(frozen=True)
class _Jitter:
    """One draw of the colour steps; None = the step is skipped."""

    rgb: np.ndarray | None  # (3,) shifts in 0..255 units
    hsv: np.ndarray | None  # (3,) hue (0..179 scale), saturation, value shifts
    alpha_beta: tuple[float, float] | None  # contrast gain, brightness in 0..1


def _uniform(rng: np.random.Generator, limit: float, size: int | None = None):
    return rng.uniform(-limit, limit, size)


def _draw_jitter(rng: np.random.Generator, p: tuple[float, float, float], rgb: float,
                 hsv: tuple[float, float, float], brightness: float, contrast: float) -> _Jitter:
    """Draws RGB shift, HSV shift and brightness/contrast, each with its probability in `p`."""
    rgb_shift = _uniform(rng, rgb, 3) if rng.random() < p[0] else None
    hsv_shift = np.array([_uniform(rng, limit) for limit in hsv]) if rng.random() < p[1] else None
    alpha_beta = None
    if rng.random() < p[2]:
        beta = float(_uniform(rng, brightness))
        alpha_beta = (1.0 + float(_uniform(rng, contrast)), beta)
    return _Jitter(rgb_shift, hsv_shift, alpha_beta)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _apply_jitter(image: np.ndarray, jitter: _Jitter) -> np.ndarray:
    """RGB shift -> HSV shift -> brightness/contrast; each a per-pixel function of the value
    (the same input pixel always gives the same output pixel)."""
    levels = np.arange(256, dtype=np.float64)
    out = image
    if jitter.rgb is not None:
        luts = [_to_uint8(levels + shift) for shift in jitter.rgb]
        out = np.stack([cv2.LUT(out[..., c], luts[c]) for c in range(3)], axis=-1)
    if jitter.hsv is not None:
        hsv = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2HSV)
        hue_lut = np.mod(np.rint(levels + jitter.hsv[0]), 180).astype(np.uint8)
        sat_lut, val_lut = _to_uint8(levels + jitter.hsv[1]), _to_uint8(levels + jitter.hsv[2])
        hsv = np.stack([cv2.LUT(hsv[..., 0], hue_lut), cv2.LUT(hsv[..., 1], sat_lut),
                        cv2.LUT(hsv[..., 2], val_lut)], axis=-1)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if jitter.alpha_beta is not None:
        alpha, beta = jitter.alpha_beta
        out = cv2.LUT(out, _to_uint8(levels * alpha + 255.0 * beta))
    return np.ascontiguousarray(out)


def _downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest down-scale by `factor`, bilinear back to the input size (SBI's RandomDownScale)."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, int(width / factor)), max(1, int(height / factor))),
                       interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _sharpen(image: np.ndarray, alpha: float, lightness: float) -> np.ndarray:
    """albumentations' Sharpen: identity blended with a Laplacian-like kernel by `alpha`."""
    identity = np.zeros((3, 3), np.float64)
    identity[1, 1] = 1.0
    effect = -np.ones((3, 3), np.float64)
    effect[1, 1] = 8.0 + lightness
    kernel = ((1.0 - alpha) * identity + alpha * effect).astype(np.float32)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _generator(image: np.ndarray, rng: np.random.Generator, cfg: SbiConfig) -> np.ndarray:
    """SBI's source-target generator (`source_transforms`) on a uint8 image."""
    jitter = _draw_jitter(rng, (cfg.p_rgb_shift, cfg.p_hsv, cfg.p_brightness_contrast), cfg.rgb_shift,
                          (cfg.hue_shift, cfg.sat_shift, cfg.val_shift), cfg.brightness, cfg.contrast)
    out = _apply_jitter(image, jitter)
    if rng.random() < cfg.p_downscale:
        factor = cfg.downscale_factors[int(rng.integers(len(cfg.downscale_factors)))]
        return _downscale(out, factor)
    alpha = rng.uniform(*cfg.sharpen_alpha)
    lightness = rng.uniform(*cfg.sharpen_lightness)
    return _sharpen(out, alpha, lightness)


# --------------------------------------------------------------------------- deformation
def _random_affine(source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   cfg: SbiConfig) -> tuple[np.ndarray, np.ndarray]:
    """The same random translation + per-axis scale about the centre on source (bilinear) and
    mask (nearest); black / 0 outside."""
    height, width = mask.shape
    tx = rng.uniform(-cfg.translate_x, cfg.translate_x) * width
    ty = rng.uniform(-cfg.translate_y, cfg.translate_y) * height
    sx, sy = rng.uniform(*cfg.scale), rng.uniform(*cfg.scale)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    matrix = np.array([[sx, 0.0, cx - sx * cx + tx], [0.0, sy, cy - sy * cy + ty]])
    warp = {"dsize": (width, height), "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    source = cv2.warpAffine(source, matrix, flags=cv2.INTER_LINEAR, **warp)
    mask = cv2.warpAffine(mask, matrix, flags=cv2.INTER_NEAREST, **warp)
    return source, mask


def _elastic(mask: np.ndarray, rng: np.random.Generator, cfg: SbiConfig) -> np.ndarray:
    """Elastic deformation (Simard et al.): smoothed U(-1, 1) displacements times alpha."""
    height, width = mask.shape
    noise = rng.uniform(-1.0, 1.0, (2, height, width)).astype(np.float32)
    dx, dy = (cv2.GaussianBlur(n, (0, 0), cfg.elastic_sigma) * cfg.elastic_alpha for n in noise)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(mask, grid_x + dx, grid_y + dy, interpolation=cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REFLECT_101)


# --------------------------------------------------------------------------- blend mask
def _odd_in(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.choice(np.arange(bounds[0], bounds[1] + 1, 2)))


def _normalise(values: np.ndarray) -> np.ndarray:
    peak = float(values.max())
    if peak <= 0.0:
        raise ValueError("the landmarks' hull is too small to blend: the blend mask vanished")
    return values / peak


def _blend_mask(mask: np.ndarray, rng: np.random.Generator, cfg: SbiConfig) -> np.ndarray:
    """SBI's `get_blend_mask`: a 0/1 (H, W) uint8 mask -> soft (H, W) float64 mask, max 1."""
    height, width = mask.shape
    size_h = int(rng.integers(cfg.blend_size[0], cfg.blend_size[1] + 1))
    size_w = int(rng.integers(cfg.blend_size[0], cfg.blend_size[1] + 1))
    k1, k2 = _odd_in(rng, cfg.blur_kernel), _odd_in(rng, cfg.blur_kernel)
    sigma = int(rng.integers(cfg.blur_sigma[0], cfg.blur_sigma[1] + 1))

    start = mask if cfg.binary_first_blur else mask.astype(np.float64)
    resized = cv2.resize(start, (size_w, size_h), interpolation=cv2.INTER_LINEAR)
    blurred = _normalise(cv2.GaussianBlur(resized, (k1, k1), 0).astype(np.float64))
    one = 1.0 if cfg.binary_first_blur else 1.0 - _FLOAT_ONE_TOLERANCE
    core = np.where(blurred >= one, 1.0, 0.0)
    soft = _normalise(cv2.GaussianBlur(core, (k2, k2), sigma))
    return np.clip(cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


# --------------------------------------------------------------------------- SBI
def _blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * source + (1 - mask) * target`` rounded; exactly `target` where mask == 0."""
    weight = mask.astype(np.float64)[..., None]
    return _to_uint8(weight * source + (1.0 - weight) * target)


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               config: SbiConfig | None = None) -> SelfBlend:
    """One Self-Blended Image from an aligned face crop (see the module docstring).

    image: (H, W, 3) uint8 RGB.  landmarks: (68, 2) or (81, 2), (x=column, y=row) in pixels
    of `image`.  All randomness comes from `rng`: the same inputs and the same generator state
    give byte-identical outputs.  Raises ValueError for a bad image, landmarks outside the
    image, NaN/inf landmarks, a hull of zero area, or a hull too small to survive the blur.
    """
    cfg = config if config is not None else SbiConfig()
    _check_image(image)
    height, width = image.shape[:2]
    points = _check_landmarks(landmarks, height, width)
    _hull(points)  # both sets the draw below may pick must span an area: no seed-dependent error
    _hull(points[:_NUM_IBUG])

    if len(points) > _NUM_IBUG and rng.random() < cfg.p_only_68:
        points = points[:_NUM_IBUG]
    mask = _hull_mask(points, height, width)

    source = target = np.ascontiguousarray(image)
    source_transformed = bool(rng.random() < cfg.p_transform_source)
    if source_transformed:
        source = _generator(source, rng, cfg)
    else:
        target = _generator(target, rng, cfg)

    source, mask = _random_affine(source, mask, rng, cfg)
    mask = _elastic(mask, rng, cfg)

    soft = _blend_mask(mask, rng, cfg)
    ratio = float(cfg.blend_ratios[int(rng.integers(len(cfg.blend_ratios)))])
    weights = (soft * ratio).astype(np.float32)
    fake = _blend(source, target, weights)
    real = target.copy() if target is image else target

    if cfg.post_jitter:
        hsv = (cfg.post_hsv_shift,) * 3
        jitter = _draw_jitter(rng, (cfg.post_p,) * 3, cfg.post_rgb_shift, hsv, cfg.post_brightness,
                              cfg.post_contrast)
        real, fake = _apply_jitter(real, jitter), _apply_jitter(fake, jitter)
    return SelfBlend(real=real, fake=fake, mask=weights, ratio=ratio, source_transformed=source_transformed,
                     num_landmarks=len(points))


# --------------------------------------------------------------------------- CoRIT regions
def _patch_shares(labels: np.ndarray, grid: int, num_regions: int) -> np.ndarray:
    """(num_regions, grid, grid): the fraction of each patch's pixels in each region.  Patch
    edges are ``round(linspace(0, size, grid + 1))`` on each axis."""
    height, width = labels.shape
    rows = np.round(np.linspace(0, height, grid + 1)).astype(int)
    cols = np.round(np.linspace(0, width, grid + 1)).astype(int)
    shares = np.zeros((num_regions, grid, grid), np.float64)
    for i in range(grid):
        for j in range(grid):
            patch = labels[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            shares[:, i, j] = np.bincount(patch.ravel(), minlength=num_regions) / patch.size
    return shares


def _fill_empty_regions(assigned: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Gives each region without a patch the patch with the largest share of it, taken from a
    region that keeps at least one patch; ties go to the most mixed patch (the smallest share
    of its current region), then to the first in row-major order."""
    assigned = assigned.copy()
    num_regions = shares.shape[0]
    for region in range(num_regions):
        if (assigned == region).any():
            continue
        counts = np.bincount(assigned.ravel(), minlength=num_regions)
        flat = assigned.ravel()
        own_share = np.take_along_axis(shares.reshape(num_regions, -1), flat[None], axis=0)[0]
        candidates = np.flatnonzero(counts[flat] > 1)
        order = np.lexsort((candidates, own_share[candidates], -shares[region].ravel()[candidates]))
        flat = flat.copy()
        flat[candidates[order[0]]] = region
        assigned = flat.reshape(assigned.shape)
    return assigned


def region_masks(mask: np.ndarray, grid: int, *, inner: float = 0.9, outer: float = 0.05) -> np.ndarray:
    """CoRIT's K=3 regions of a blend mask on a `grid` x `grid` patch grid: (3, grid, grid) bool,
    in the order face, face boundary, background.

    Pixels, with m = mask.max(): face where ``mask >= inner * m``; background where
    ``mask <= outer * m``; boundary (the soft band) in between.  The thresholds are relative,
    so a blend at ratio 0.25 gives the same regions as at ratio 1.

    Patches: the image is cut into grid x grid patches (edges ``round(linspace(0, size,
    grid + 1))``), and each patch goes to exactly one region:

    1. the region holding the largest share of its pixels.  A region with at least half of a
       patch's pixels therefore gets it; an exact tie goes to the region that comes first
       (face, then boundary, then background);
    2. a region left without a patch gets the patch with the largest share of it, taken from a
       region that keeps another patch (ties: the most mixed patch, then row-major order).
       This also gives a patch to a region with no pixel at all (e.g. the boundary of a hard
       0/1 mask): it gets the most mixed patch, which lies on the face's outline.

    The three masks never overlap and together cover every patch, and none is empty.

    Raises ValueError for an all-zero (or negative) mask, which holds no face to split, for a
    mask that is not 2-D and finite, for grid < 2 (3 regions need at least 3 patches), for a
    grid finer than the mask, and unless 0 <= outer < inner <= 1.
    """
    values = np.asarray(mask, dtype=np.float64)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ValueError("mask must be a finite (H, W) array")
    if grid < 2 or grid > min(values.shape):
        raise ValueError(f"grid must lie in [2, min(H, W)] = [2, {min(values.shape)}], got {grid}")
    if not 0.0 <= outer < inner <= 1.0:
        raise ValueError("region thresholds must satisfy 0 <= outer < inner <= 1")
    peak = float(values.max())
    if peak <= 0.0:
        raise ValueError("the mask is all zero: no face region to split")

    labels = np.full(values.shape, 1, np.int64)  # boundary
    labels[values >= inner * peak] = 0
    labels[values <= outer * peak] = 2
    shares = _patch_shares(labels, grid, 3)
    assigned = _fill_empty_regions(np.argmax(shares, axis=0), shares)
    return np.stack([assigned == region for region in range(3)])

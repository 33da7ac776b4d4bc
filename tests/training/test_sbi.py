"""Self-Blended Images (`training.data.sbi`) on a real face photo: the astronaut of
`skimage.data` (Eileen Collins), cropped around the face, with 81 landmarks in iBUG order
placed by hand on the crop.  The tests measure properties of the outputs (where the blend
lands, which pixels change, how often each branch is taken), not just that the code runs."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from training.data.sbi import SbiConfig, SelfBlend, region_masks, self_blend

CROP = (slice(20, 220), slice(140, 340))  # rows, cols of the 512x512 astronaut: the face
SEEDS = range(12)


# --------------------------------------------------------------------------- fixtures
def _ellipse(cx: float, cy: float, rx: float, ry: float, angles: np.ndarray) -> np.ndarray:
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _landmarks_81() -> np.ndarray:
    """81 points (x, y) on the 200x200 crop, in iBUG-68 order plus 13 forehead points.  The
    face spans about x 45..132 and y 55..160 in the crop; eyes at y 81, mouth at y 126."""
    # outer corner, upper lid, inner corner, lower lid
    eye_angles = np.array([np.pi, 4.2, 5.2, 0.0, 1.1, 2.1])
    parts = [
        _ellipse(88, 88, 44, 72, np.linspace(np.pi + 0.15, -0.15, 17)),  # 0-16 jaw, left to right via chin
        _ellipse(64, 74, 15, 6, np.linspace(np.pi, 2 * np.pi, 5)),  # 17-21 left brow
        _ellipse(111, 74, 15, 6, np.linspace(np.pi, 2 * np.pi, 5)),  # 22-26 right brow
        np.stack([np.full(4, 86.0), np.linspace(80, 102, 4)], axis=1),  # 27-30 nose bridge
        np.stack([np.linspace(76, 96, 5), np.array([107, 109, 110, 109, 107.0])], axis=1),  # 31-35 nostrils
        _ellipse(63, 81, 8, 3, eye_angles),  # 36-41 left eye
        _ellipse(109, 81, 8, 3, eye_angles),  # 42-47 right eye
        _ellipse(88, 126, 22, 9, np.linspace(np.pi, -np.pi, 13)[:-1]),  # 48-59 outer lips
        _ellipse(88, 126, 14, 4, np.linspace(np.pi, -np.pi, 9)[:-1]),  # 60-67 inner lips
        _ellipse(88, 70, 42, 30, np.linspace(np.pi + 0.1, 2 * np.pi - 0.1, 13)),  # 68-80 forehead arc
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """(200x200x3 uint8 crop, (81, 2) landmarks)."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[CROP])
    landmarks = _landmarks_81()
    assert image.shape == (200, 200, 3) and landmarks.shape == (81, 2)
    return image, landmarks


@pytest.fixture(scope="module")
def small_face(face) -> tuple[np.ndarray, np.ndarray]:
    """The crop resized to 64x64, landmarks scaled with it."""
    image, landmarks = face
    return cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA), landmarks * (64 / 200)


@pytest.fixture(scope="module")
def blends(face) -> list[SelfBlend]:
    image, landmarks = face
    return [self_blend(image, landmarks, np.random.default_rng(seed)) for seed in SEEDS]


def _hull(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask.astype(bool)


def _size(hull: np.ndarray) -> int:
    """The larger side of the hull's bounding box, in pixels."""
    rows, cols = np.nonzero(hull)
    return max(np.ptp(rows), np.ptp(cols)) + 1


def _dilated(hull: np.ndarray, fraction: float) -> np.ndarray:
    """The hull grown by `fraction` of its size."""
    distance = cv2.distanceTransform((~hull).astype(np.uint8), cv2.DIST_L2, 5)
    return distance <= fraction * _size(hull)


def _eroded(hull: np.ndarray, fraction: float) -> np.ndarray:
    """The hull shrunk by `fraction` of its size."""
    distance = cv2.distanceTransform(hull.astype(np.uint8), cv2.DIST_L2, 5)
    return distance > fraction * _size(hull)


# --------------------------------------------------------------------------- 1. determinism
def test_same_seed_gives_identical_bytes(face):
    image, landmarks = face
    for seed in (0, 7):
        a = self_blend(image, landmarks, np.random.default_rng(seed))
        b = self_blend(image, landmarks, np.random.default_rng(seed))
        for name in ("real", "fake", "mask"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
        for name in ("ratio", "source_transformed", "num_landmarks"):
            assert getattr(a, name) == getattr(b, name), name


def test_different_seeds_differ(blends):
    fakes = {b.fake.tobytes() for b in blends}
    masks = {b.mask.tobytes() for b in blends}
    assert len(fakes) == len(blends) and len(masks) == len(blends)


def test_uses_no_global_random_state(face):
    image, landmarks = face
    np.random.seed(123)
    random.seed(123)
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    first = self_blend(image, landmarks, np.random.default_rng(3))
    np.random.seed(999)  # a different global state changes nothing either
    random.seed(999)
    second = self_blend(image, landmarks, np.random.default_rng(3))
    assert first.fake.tobytes() == second.fake.tobytes()
    np.random.seed(123)
    random.seed(123)
    self_blend(image, landmarks, np.random.default_rng(3))
    assert (np.random.get_state()[1] == numpy_state).all() and random.getstate() == python_state


def test_input_is_not_modified(face):
    image, landmarks = face
    image_before, landmarks_before = image.copy(), landmarks.copy()
    for seed in range(4):
        self_blend(image, landmarks, np.random.default_rng(seed))
    assert (image == image_before).all() and (landmarks == landmarks_before).all()


# --------------------------------------------------------------------------- 2. blend confined to the mask
def test_fake_equals_real_outside_the_mask(blends):
    for b in blends:
        outside = b.mask == 0
        assert outside.mean() > 0.3  # a face crop has background
        assert (b.fake[outside] == b.real[outside]).all()


def test_fake_differs_from_real_inside_the_mask(blends):
    for b in blends:
        assert b.ratio > 0
        changed = (b.fake != b.real).any(axis=-1)
        inside = b.mask >= 0.5 * b.mask.max()
        assert changed[inside].mean() > 0.2, b.ratio
        # |fake - real| = mask * |source - real| <= mask * 255, up to rounding
        difference = np.abs(b.fake.astype(np.float64) - b.real).max(axis=-1)
        assert (difference <= b.mask * 255 + 0.5 + 1e-6).all()


def test_real_is_the_input_exactly_when_the_generator_went_to_the_source(face, blends):
    image, _ = face
    assert {b.source_transformed for b in blends} == {True, False}  # both branches among the seeds
    for b in blends:
        assert (b.real == image).all() == b.source_transformed


# --------------------------------------------------------------------------- 3. mask support near the hull
@pytest.mark.parametrize("which", ["face", "small_face"])
def test_mask_lies_on_the_landmark_hull(which, request):
    image, landmarks = request.getfixturevalue(which)
    inside = support = 0
    for seed in range(16):
        b = self_blend(image, landmarks, np.random.default_rng(seed))
        hull = _hull(landmarks[:b.num_landmarks], image.shape[:2])
        near = _dilated(hull, 0.15)
        positive = b.mask > 0
        inside, support = inside + (positive & near).sum(), support + positive.sum()
        # the soft band reaches past the hull by the second blur (<= 12 px at 192..256) plus the
        # affine shift: a few % of the support may stick out of a 15 % dilation in one sample
        assert (positive & near).sum() / positive.sum() >= 0.9, seed
        strong = b.mask >= 0.5 * b.mask.max()
        assert (strong & hull).sum() / hull.sum() >= 0.5, seed  # the mask covers the hull
        assert strong.sum() <= 1.5 * hull.sum()
    assert inside / support >= 0.95


def test_float_first_blur_erodes_the_mask(face):
    """Same seed, same draws: blurring the first mask in float erodes it (it lies inside the
    uint8 version's support and is smaller)."""
    image, landmarks = face
    for seed in range(4):
        binary = self_blend(image, landmarks, np.random.default_rng(seed))
        eroded = self_blend(image, landmarks, np.random.default_rng(seed), SbiConfig(binary_first_blur=False))
        assert eroded.ratio == binary.ratio
        assert (eroded.mask > 0).sum() < (binary.mask > 0).sum()
        assert not ((eroded.mask > 0) & (binary.mask == 0)).any()


# --------------------------------------------------------------------------- 4. types, shapes, sizes
@pytest.mark.parametrize("size", [(200, 200), (64, 64), (32, 32), (48, 80), (320, 256)])
@pytest.mark.parametrize("count", [68, 81])
def test_shapes_dtypes_and_range(face, size, count):
    image, landmarks = face
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    points = landmarks[:count] * np.array([width / 200, height / 200])
    for seed in range(3):
        b = self_blend(resized, points, np.random.default_rng(seed))
        assert b.real.shape == b.fake.shape == (height, width, 3)
        assert b.real.dtype == b.fake.dtype == np.uint8
        assert b.mask.shape == (height, width) and b.mask.dtype == np.float32
        assert b.mask.min() >= 0.0 and b.mask.max() <= 1.0
        assert b.mask.max() == pytest.approx(b.ratio, abs=1e-3)  # normalised, then times the ratio
        assert b.ratio in SbiConfig().blend_ratios
        assert b.num_landmarks in ((68,) if count == 68 else (68, 81))
        assert (b.fake[b.mask == 0] == b.real[b.mask == 0]).all()


def test_post_jitter_is_joint_and_keeps_the_mask(face):
    """With the post jitter forced on, the same draws up to the blend give the same mask; the
    jitter changes `real`, and `fake` still equals `real` wherever the mask is 0."""
    image, landmarks = face
    jitter = SbiConfig(post_jitter=True, post_p=1.0)
    for seed in range(4):
        plain = self_blend(image, landmarks, np.random.default_rng(seed))
        jittered = self_blend(image, landmarks, np.random.default_rng(seed), jitter)
        assert jittered.mask.tobytes() == plain.mask.tobytes()
        assert (jittered.real != plain.real).any()
        outside = jittered.mask == 0
        assert (jittered.fake[outside] == jittered.real[outside]).all()


# --------------------------------------------------------------------------- 5. region masks
def _check_partition(regions: np.ndarray, grid: int) -> None:
    assert regions.shape == (3, grid, grid) and regions.dtype == bool
    assert (regions.sum(axis=0) == 1).all()  # each patch in exactly one region
    assert regions.reshape(3, -1).any(axis=1).all()  # no region empty


@pytest.mark.parametrize("grid", [16, 7, 14])
def test_regions_partition_a_realistic_blend(face, blends, grid):
    image, landmarks = face
    for b in blends:
        regions = region_masks(b.mask, grid)
        _check_partition(regions, grid)
        # The face patches lie on the face.  The mask moves with the source in randaffine (up to
        # 3 % of the width, 5 % scale), so the hull is grown by 10 % before the check.
        hull = _hull(landmarks[:b.num_landmarks], image.shape[:2])
        face_pixels, _, background_pixels = (
            cv2.resize(r.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
            for r in regions)
        assert (face_pixels & _dilated(hull, 0.1)).sum() / face_pixels.sum() >= 0.9
        core = _eroded(hull, 0.1)
        assert (face_pixels & core).sum() / core.sum() >= 0.7  # and cover most of its core
        # the background patches lie off it
        assert (background_pixels & hull).sum() / background_pixels.sum() <= 0.2


def test_regions_do_not_depend_on_the_blend_ratio(blends):
    for b in blends[:4]:
        assert (region_masks(b.mask, 16) == region_masks(b.mask * 0.25, 16)).all()


def test_regions_of_a_hand_made_mask():
    """A 4x4 grid of 10x10 patches.  Row 0: face; row 1: boundary (0.5); row 2: background;
    row 3: patch (3, 0) is 60 % face and 40 % background, (3, 1) is half face half boundary
    (a tie: face wins), the rest background."""
    mask = np.zeros((40, 40), np.float32)
    mask[0:10] = 1.0
    mask[10:20] = 0.5
    mask[30:40, 0:6] = 1.0
    mask[30:35, 10:20] = 1.0
    mask[35:40, 10:20] = 0.5
    face, boundary, background = region_masks(mask, 4)
    expected_face = np.zeros((4, 4), bool)
    expected_face[0] = True
    expected_face[3, :2] = True
    assert (face == expected_face).all()
    expected_boundary = np.zeros((4, 4), bool)
    expected_boundary[1] = True
    assert (boundary == expected_boundary).all()
    assert (background == ~(face | boundary)).all()


def test_regions_fill_an_empty_region_with_the_best_patch():
    """A hard 0/1 mask has no boundary pixel: the boundary gets the most mixed patch, which lies
    on the face's outline, and face and background keep the rest."""
    mask = np.zeros((40, 40), np.float32)
    mask[0:16, 0:16] = 1.0  # face covers patch (0, 0) fully and 60 % of (0, 1), (1, 0), 36 % of (1, 1)
    regions = region_masks(mask, 4)
    _check_partition(regions, 4)
    face, boundary, _ = regions
    # (0, 1) and (1, 0) are 60 % face, the most mixed patches; (0, 1) comes first in row-major order
    assert boundary.sum() == 1 and boundary[0, 1]
    assert face[0, 0] and face[1, 0] and not face[1, 1]
    # a mask with a single patch of face: the face keeps it, the boundary takes the most mixed one
    single = np.zeros((40, 40), np.float32)
    single[12:18, 12:18] = 1.0  # inside patch (1, 1), 36 % of it
    regions = region_masks(single, 4)
    _check_partition(regions, 4)
    assert regions[0, 1, 1]


def test_regions_reject_bad_input():
    with pytest.raises(ValueError, match="all zero"):
        region_masks(np.zeros((32, 32), np.float32), 4)
    with pytest.raises(ValueError, match="grid"):
        region_masks(np.ones((32, 32), np.float32), 1)
    with pytest.raises(ValueError, match="grid"):
        region_masks(np.ones((8, 8), np.float32), 16)
    with pytest.raises(ValueError, match="thresholds"):
        region_masks(np.ones((32, 32), np.float32), 4, inner=0.1, outer=0.5)
    with pytest.raises(ValueError):
        region_masks(np.ones((32, 32, 1), np.float32), 4)


# --------------------------------------------------------------------------- 6. bad landmarks
def test_bad_landmarks_raise(face):
    image, landmarks = face
    rng = np.random.default_rng(0)
    outside = landmarks.copy()
    outside[8] = (100.0, 230.0)  # chin below the 200-row crop
    with pytest.raises(ValueError, match="outside"):
        self_blend(image, outside, rng)
    negative = landmarks.copy()
    negative[0, 0] = -3.0
    with pytest.raises(ValueError, match="outside"):
        self_blend(image, negative, rng)
    nan = landmarks.copy()
    nan[30, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        self_blend(image, nan, rng)
    line = np.stack([np.linspace(20, 180, 68), np.linspace(30, 150, 68)], axis=1)  # collinear
    with pytest.raises(ValueError, match="degenerate"):
        self_blend(image, line, rng)
    with pytest.raises(ValueError, match="degenerate"):
        self_blend(image, np.full((68, 2), 100.0), rng)
    with pytest.raises(ValueError, match=r"\(68, 2\) or \(81, 2\)"):
        self_blend(image, landmarks[:70], rng)
    with pytest.raises(ValueError, match="uint8"):
        self_blend(image.astype(np.float32), landmarks, rng)


def test_landmarks_on_the_border_are_accepted(face):
    image, landmarks = face
    edge = landmarks.copy()
    edge[0] = (0.0, 88.0)
    edge[16] = (199.4, 88.0)
    b = self_blend(image, edge, np.random.default_rng(0))
    assert b.mask.max() > 0


def test_bad_config_raises():
    with pytest.raises(ValueError, match="p_transform_source"):
        SbiConfig(p_transform_source=1.5)
    with pytest.raises(ValueError, match="blur_kernel"):
        SbiConfig(blur_kernel=(4, 25))


# --------------------------------------------------------------------------- statistics
def test_branch_frequencies_over_seeds(face):
    """Over 60 seeds: the generator goes to the source ~1/2 of the time, the ratio is 1 ~1/2 of
    the time, and 81 points are cut to 68 ~1/4 of the time.  Bounds are ~3.5 standard
    deviations wide (the seeds are fixed, so the test is deterministic anyway)."""
    image, landmarks = face
    n = 60
    to_source = full_ratio = only_68 = 0
    ratios = set()
    for seed in range(1000, 1000 + n):
        b = self_blend(image, landmarks, np.random.default_rng(seed))
        # measured on the outputs: `real` is the untouched input iff the source got the generator
        measured_source = bool((b.real == image).all())
        assert measured_source == b.source_transformed
        to_source += measured_source
        full_ratio += bool(np.isclose(b.mask.max(), 1.0, atol=1e-4))
        only_68 += b.num_landmarks == 68
        ratios.add(b.ratio)
    assert 16 <= to_source <= 44
    assert 16 <= full_ratio <= 44
    assert 4 <= only_68 <= 27
    assert ratios == {0.25, 0.5, 0.75, 1.0}

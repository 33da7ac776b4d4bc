"""COCO compressed-RLE mask codec (schemas.masks): round trips, known strings, errors."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.masks import decode_mask, encode_mask, mask_area, mask_bbox


def _blobs(h: int, w: int, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """A few filled discs and rectangles: the few-runs masks the pipeline produces."""
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), dtype=bool)
    for _ in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(1, max(2, min(h, w) // 4))
        if rng.random() < 0.5:
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        else:
            m[max(0, cy - r) : cy + r, max(0, cx - 2 * r) : cx + r] = True
    return m


def _random_masks(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        kind = i % 3
        if kind == 0:
            m = rng.random((h, w)) < rng.random()  # noise at a random density
        elif kind == 1:
            m = _blobs(h, w, rng)
        else:  # long runs -> multi-character, negative deltas
            m = np.zeros(h * w, dtype=bool)
            cuts = np.sort(rng.choice(h * w + 1, size=min(h * w + 1, 7), replace=False))
            for a, b in zip(cuts[::2], cuts[1::2]):
                m[a:b] = True
            m = m.reshape((h, w), order="F")
        out.append(m)
    return out


SPECIAL = {
    "1x1_zero": np.zeros((1, 1), dtype=bool),
    "1x1_one": np.ones((1, 1), dtype=bool),
    "3x5_all_zero": np.zeros((3, 5), dtype=bool),
    "3x5_all_one": np.ones((3, 5), dtype=bool),
    "3x5_first_pixel": np.arange(15).reshape(3, 5) == 0,
    "3x5_last_pixel": np.arange(15).reshape(3, 5) == 14,
    "3x5_checker": (np.indices((3, 5)).sum(0) % 2).astype(bool),
    "1x64_row": np.arange(64)[None, :] % 7 < 3,
    "64x1_col": np.arange(64)[:, None] % 5 < 2,
    "512x512_zero": np.zeros((512, 512), dtype=bool),
    "512x512_one": np.ones((512, 512), dtype=bool),
    "512x512_blobs": _blobs(512, 512, np.random.default_rng(7), n=6),
    "512x512_blobs_first_set": _blobs(512, 512, np.random.default_rng(8), n=6)
    | (np.arange(512 * 512).reshape(512, 512) == 0),
    "empty_0x5": np.zeros((0, 5), dtype=bool),
}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_round_trip_special(name):
    m = SPECIAL[name]
    rle = encode_mask(m)
    assert rle["size"] == list(m.shape)
    assert all(type(v) is int for v in rle["size"])
    assert isinstance(rle["counts"], str)
    back = decode_mask(rle)
    assert back.dtype == bool and back.shape == m.shape
    np.testing.assert_array_equal(back, m)
    assert (
        decode_mask({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
        == m.tolist()
    )
    assert mask_area(rle) == int(m.sum())


def test_round_trip_random():
    for m in _random_masks(seed=1, count=120):
        rle = encode_mask(m)
        np.testing.assert_array_equal(decode_mask(rle), m)
        assert mask_area(rle) == int(m.sum())


def test_uint8_input_matches_bool():
    m = _blobs(40, 30, np.random.default_rng(3))
    assert encode_mask(m.astype(np.uint8)) == encode_mask(m)
    # Fortran-ordered and non-contiguous views encode the same pixels.
    assert encode_mask(np.asfortranarray(m)) == encode_mask(m)
    big = np.zeros((80, 60), dtype=bool)
    big[::2, ::2] = m
    assert encode_mask(big[::2, ::2]) == encode_mask(m)


# Known strings, worked by hand from maskApi.c (rleEncode + rleToString):
#
# 2x3 [[0,1,1],[1,1,0]] -> column-major 0,1 | 1,1 | 1,0 -> runs [1, 4, 1]
#   (no deltas for i <= 2); 1 -> '1', 4 -> '4'                       => "141"
#
# 1x100, ones at x in [3, 43) and [93, 100) -> runs [3, 40, 50, 7]; stored
#   numbers [3, 40, 50, 7 - 40 = -33] (only i > 2 is a delta):
#   3   -> 3 (bit 0x10 clear, rest 0)                                  -> '3'
#   40  -> low 5 bits 8, rest 1: 8|0x20=40 -> chr(88) 'X'; then 1      -> 'X1'
#   50  -> low 5 bits 18 (0x10 set, rest 1 != -1 so go on): 18|0x20=50
#          -> chr(98) 'b'; then 1                                      -> 'b1'
#   -33 -> low 5 bits 31 (0x10 set, rest -2 != -1): 31|0x20=63 -> 'o';
#          then -2 -> low bits 30 (0x10 set, rest -1: stop) -> chr(78) 'N' -> 'oN'
#                                                                   => "3X1b1oN"
# 2x2 all ones -> runs [0, 4] (leading empty zeros run)             => "04"
# 2x2 [[1,0],[0,1]] -> 1,0,0,1 -> runs [0,1,2,1] -> stored [0,1,2,0] => "0120"
# 3x5 all zero -> runs [15]; 15 -> '?' (chr(63), bit 0x10 clear)      => "?"
# 1x16 all zero -> runs [16]; 16 has 0x10 set, rest 0 != -1: 16|0x20=48
#   -> chr(96) '`', then 0 -> '0'                                     => "`0"
def _row(width: int, *spans: tuple[int, int]) -> np.ndarray:
    m = np.zeros((1, width), dtype=bool)
    for a, b in spans:
        m[0, a:b] = True
    return m


KNOWN = [
    (np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8), "141"),
    (_row(100, (3, 43), (93, 100)), "3X1b1oN"),
    (np.ones((2, 2), dtype=bool), "04"),
    (np.array([[1, 0], [0, 1]], dtype=bool), "0120"),
    (np.zeros((3, 5), dtype=bool), "?"),
    (np.zeros((1, 16), dtype=bool), "`0"),
]


@pytest.mark.parametrize("mask,counts", KNOWN, ids=[k[1] for k in KNOWN])
def test_known_strings(mask, counts):
    rle = encode_mask(mask)
    assert rle == {"size": list(mask.shape), "counts": counts}
    np.testing.assert_array_equal(decode_mask(rle), mask.astype(bool))


def test_encoding_is_deterministic():
    m = SPECIAL["512x512_blobs"]
    first = encode_mask(m)
    for _ in range(3):
        assert encode_mask(m.copy()) == first
    assert encode_mask(decode_mask(first)) == first


def test_uncompressed_rle():
    m = np.array([[0, 1, 1], [1, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(decode_mask({"size": [2, 3], "counts": [1, 4, 1]}), m)
    np.testing.assert_array_equal(
        decode_mask({"size": (2, 3), "counts": np.array([1, 4, 1])}), m
    )
    np.testing.assert_array_equal(
        decode_mask({"size": [2, 2], "counts": [0, 4]}), np.ones((2, 2), bool)
    )
    assert mask_area({"size": [2, 3], "counts": [1, 4, 1]}) == 4


@pytest.mark.parametrize(
    "rle,match",
    [
        ({"size": [2, 3], "counts": "14"}, "sum to 5"),  # too short
        ({"size": [2, 3], "counts": "1411"}, "sum to 11"),  # too long: 4th run is 1 + 4
        ({"size": [2, 3], "counts": "1 41"}, "invalid character"),  # below '0'
        ({"size": [2, 3], "counts": "14p"}, "invalid character"),  # above 'o'
        ({"size": [2, 3], "counts": "14\u00e9"}, "non-ASCII"),
        ({"size": [2, 3], "counts": b"14\xff"}, "invalid character"),
        (
            {"size": [2, 3], "counts": "14X"},
            "middle of a number",
        ),  # dangling continuation
        ({"size": [1, 4], "counts": "O5"}, "negative"),  # -1, then 5
        ({"size": [1, 4], "counts": "h" * 13 + "0"}, "longer than"),
        ({"size": [2, 3], "counts": [1, 4]}, "sum to 5"),
        ({"size": [2, 3], "counts": [1, -1, 6]}, "negative"),
        ({"size": [2, 3], "counts": [1.0, 4.0, 1.0]}, "list of ints"),
        ({"size": [2, 3], "counts": [[1, 4, 1]]}, "list of ints"),
        ({"size": [2, 3], "counts": None}, "list of ints"),
        ({"size": [2], "counts": "6"}, "'size'"),
        ({"size": [2, -3], "counts": "0"}, "'size'"),
        ({"size": [2.5, 3], "counts": "141"}, "'size'"),
        ({"counts": "141"}, "'size' and 'counts'"),
        ("141", "mapping"),
    ],
)
def test_decode_rejects_malformed(rle, match):
    with pytest.raises(ValueError, match=match):
        decode_mask(rle)


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 2, 1), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="0 and 1"):
        encode_mask(np.array([[0, 2]], dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        encode_mask(np.array([[0.0, 1.0]]))


def test_area_and_bbox():
    m = np.zeros((10, 12), dtype=bool)
    m[2:5, 3:9] = True
    m[7, 1] = True
    rle = encode_mask(m)
    assert mask_area(rle) == 19
    assert mask_bbox(rle) == (1, 2, 9, 8)
    assert mask_bbox(m) == (1, 2, 9, 8)
    assert mask_area(m) == 19
    assert mask_bbox(encode_mask(np.zeros((4, 4), bool))) is None
    assert mask_bbox(encode_mask(np.ones((4, 6), bool))) == (0, 0, 6, 4)
    assert mask_bbox(encode_mask(np.zeros((0, 3), bool))) is None
    for m in _random_masks(seed=5, count=30):
        ys, xs = np.nonzero(m)
        want = (
            None if ys.size == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        )
        assert mask_bbox(encode_mask(m)) == want


def test_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    masks = _random_masks(seed=11, count=47) + [
        SPECIAL["512x512_blobs"],
        SPECIAL["512x512_blobs_first_set"],
        SPECIAL["3x5_first_pixel"],
    ]
    assert len(masks) == 50
    for m in masks:
        theirs = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = encode_mask(m)
        # ours -> theirs: same size and byte-identical counts
        assert ours["size"] == [int(v) for v in theirs["size"]]
        assert ours["counts"] == theirs["counts"].decode("ascii")
        # theirs -> ours: we decode their RLE (bytes counts) to the same pixels
        np.testing.assert_array_equal(decode_mask(theirs), m)
        # and they decode ours (str counts, as after a JSON round trip)
        back = mask_utils.decode({"size": ours["size"], "counts": ours["counts"]})
        np.testing.assert_array_equal(back.astype(bool), m)
        assert mask_area(ours) == int(mask_utils.area(theirs))
        if m.any():
            x, y, bw, bh = (int(v) for v in mask_utils.toBbox(theirs))
            assert mask_bbox(ours) == (x, y, x + bw, y + bh)


def _reference_runs(mask: np.ndarray) -> list[int]:
    """Run lengths the plain way: column-major pixels grouped, zeros first."""
    import itertools

    pixels = [bool(v) for v in mask.T.ravel()]
    runs = [len(list(group)) for _, group in itertools.groupby(pixels)]
    return ([0] + runs if pixels and pixels[0] else runs) or [0]


@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 0.98, 1.0])
def test_run_lengths_match_a_plain_count_on_every_shape(density):
    """Both ways of finding runs (row-major differences and seams; the transposed copy for
    masks with very many runs) give the plain count, on edge shapes and both sides of
    the switch between them."""
    from schemas import masks

    rng = np.random.default_rng(int(density * 100))
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (7, 5), (33, 64), (200, 300)]
    for h, w in shapes:
        for _ in range(5):
            m = rng.random((h, w)) < density
            assert masks._run_lengths(m).tolist() == _reference_runs(m), (h, w)
    noisy = rng.random((300, 300)) < 0.5  # far more runs than the switch: the transposed path
    assert np.flatnonzero(noisy[1:] != noisy[:-1]).size > masks._MANY_RUNS
    assert masks._run_lengths(noisy).tolist() == _reference_runs(noisy)

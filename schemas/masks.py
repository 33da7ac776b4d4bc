"""Binary masks as COCO compressed RLE, with numpy only (no pycocotools).

The wire format is the one ``pycocotools.mask.encode`` writes and ``decode`` reads::

    {"size": [h, w], "counts": "<ascii>"}

* Pixels are read in column-major (Fortran) order and turned into alternating run
  lengths, starting with a run of zeros (so a mask whose first pixel is set starts
  with a count of 0).  An h*w == 0 mask has the single count ``[0]``.
* For i > 2 the i-th count is stored as the difference from count i-2 (counts 0, 1
  and 2 are stored as they are), so the stored numbers may be negative.
* Each stored number is written as a little-endian run of 5-bit groups, one ASCII
  character per group: ``char = 48 + (bits & 0x1f) | (0x20 if more groups follow)``.
  The last group's bit 0x10 is the sign bit (the number is sign-extended from it),
  so the writer keeps emitting groups until the remaining value is 0 (bit 0x10
  clear) or -1 (bit 0x10 set).  All characters lie in ``'0'`` (48) .. ``'o'`` (111).

``decode_mask`` also reads *uncompressed* RLE, where ``counts`` is a list of run
lengths (no deltas).  Both directions are vectorised with numpy, so neither the
number of runs nor the mask size costs a Python loop per pixel or per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["decode_mask", "encode_mask", "mask_area", "mask_bbox"]

_BASE = 48  # ord("0")
_MAX_CHAR = _BASE + 63  # ord("o")
# A group of 12 characters holds 60 bits, which already covers any count an int64
# can hold; longer groups only appear in corrupt strings (and would overflow).
_MAX_GROUP = 12


# --------------------------------------------------------------------------- encode
def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Alternating run lengths of the column-major flattened mask, zeros first.

    Found from the row-major mask without transposing it (a strided copy costs most of
    an encode): a run ends between rows i and i+1 of column j, at column-major position
    j*h + i + 1, or at a seam between the last pixel of column j and the first of j + 1.
    A mask with very many runs (noise) takes the transposed path, whose cost does not
    grow with them."""
    h, w = mask.shape
    n = h * w
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    inside = np.flatnonzero(mask[1:] != mask[:-1])  # row-major over the (h-1, w) differences
    if inside.size > _MANY_RUNS:
        flat = mask.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    else:
        rows, cols = np.divmod(inside, w)
        seams = (np.flatnonzero(mask[-1, :-1] != mask[0, 1:]) + 1) * h
        change = np.sort(np.concatenate((cols * h + rows + 1, seams)))
    first = [0] if mask[0, 0] else []  # first pixel set -> an empty leading run of zeros
    edges = np.concatenate(([0], first, change, [n]))
    return np.diff(edges).astype(np.int64)


_MANY_RUNS = 16384  # above this, sorting the run ends costs more than transposing


def _counts_to_string(counts: np.ndarray) -> str:
    x = counts.astype(np.int64, copy=True)
    if x.size > 3:
        x[3:] -= counts[1:-2]
    m = x.size
    chars: list[np.ndarray] = []
    emitted: list[np.ndarray] = []
    active = np.ones(m, dtype=bool)
    while active.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift: keeps the sign
        more = np.where(c & 0x10, x != -1, x != 0)
        chars.append((c | np.where(more, 0x20, 0)) + _BASE)
        emitted.append(active.copy())
        active &= more
    # Row i holds the characters of number i in order; keep the emitted ones.
    table = np.stack(chars, axis=1)
    keep = np.stack(emitted, axis=1)
    return table[keep].astype(np.uint8).tobytes().decode("ascii")


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode a 2-D binary mask (bool, or integers that are all 0/1) as COCO RLE.

    Returns ``{"size": [h, w], "counts": str}``, byte-for-byte what
    ``pycocotools.mask.encode`` produces (with its ``counts`` decoded to str).
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D, got an array of shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iu":
            raise ValueError(
                f"mask must be bool or 0/1 integers, got dtype {arr.dtype}"
            )
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError("integer mask must contain only 0 and 1")
        arr = arr.astype(bool)
    h, w = arr.shape
    return {"size": [int(h), int(w)], "counts": _counts_to_string(_run_lengths(arr))}


# --------------------------------------------------------------------------- decode
def _string_to_counts(s: str | bytes) -> np.ndarray:
    if isinstance(s, str):
        try:
            raw = s.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(
                "RLE counts string contains non-ASCII characters"
            ) from None
    else:
        raw = bytes(s)
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = (b < _BASE) | (b > _MAX_CHAR)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"RLE counts string has an invalid character {raw[i : i + 1]!r} at offset {i}"
            f" (allowed: {chr(_BASE)!r}..{chr(_MAX_CHAR)!r})"
        )
    c = b.astype(np.int64) - _BASE
    last = (c & 0x20) == 0  # a character without the continuation bit ends a number
    if not last[-1]:
        raise ValueError("RLE counts string ends in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUP:
        raise ValueError(
            f"RLE counts string has a number longer than {_MAX_GROUP} characters"
        )
    # Index of each character within its number -> its 5-bit shift.
    k = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(np.int64(1), 5 * lengths[neg])  # sign-extend
    # Undo the deltas: counts[i] = x[i] + counts[i - 2] for i > 2.
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])
    counts[2::2] = np.cumsum(x[2::2])
    return counts


def _parse(value: Any) -> tuple[int, int, np.ndarray]:
    """Validate an RLE dict and return (h, w, run lengths)."""
    if not isinstance(value, Mapping):
        # ValueError on purpose: callers catch one error type for any bad RLE.
        kind = type(value).__name__
        raise ValueError(f"RLE must be a mapping with 'size' and 'counts', got {kind}")  # noqa: TRY004
    if "size" not in value or "counts" not in value:
        raise ValueError("RLE must have both 'size' and 'counts' keys")
    size = value["size"]
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 0 or w < 0:
        raise ValueError(
            f"RLE 'size' must be [h, w] with non-negative ints, got {size!r}"
        )
    raw = value["counts"]
    if isinstance(raw, (str, bytes, bytearray)):
        counts = _string_to_counts(raw)
    else:
        try:
            counts = np.asarray(raw)
        except (TypeError, ValueError) as exc:  # ragged or otherwise unconvertible
            raise ValueError(
                f"RLE 'counts' must be a string or a list of ints: {exc}"
            ) from None
        if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
            raise ValueError("uncompressed RLE 'counts' must be a flat list of ints")
        counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("RLE counts contain a negative run length")
    total = int(counts.sum())
    if total != h * w:
        raise ValueError(f"RLE counts sum to {total}, but size {h}x{w} needs {h * w}")
    return h, w, counts


def decode_mask(value: Any) -> np.ndarray:
    """Decode COCO RLE (compressed str/bytes counts, or a list of ints) to a bool (h, w) mask."""
    h, w, counts = _parse(value)
    bits = np.zeros(counts.size, dtype=bool)
    bits[1::2] = True
    flat = np.repeat(bits, counts)
    return np.ascontiguousarray(flat.reshape((h, w), order="F"))


# --------------------------------------------------------------------------- measures
def mask_area(value: Any) -> int:
    """Number of set pixels of an RLE (or of a 2-D mask array), without decoding."""
    if isinstance(value, np.ndarray):
        return int(np.count_nonzero(value))
    _, _, counts = _parse(value)
    return int(counts[1::2].sum())


def mask_bbox(value: Any) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the set pixels, ends exclusive; None for an empty mask.

    Takes an RLE or a 2-D mask array.
    """
    mask = value if isinstance(value, np.ndarray) else decode_mask(value)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got an array of shape {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

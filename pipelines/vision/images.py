"""Stage 1: read and validate both images of a pair.

Every image comes out as uint8 RGB.  Grey, grey+alpha, RGBA, palette and 16-bit images
are normalised; anything that cannot be decoded or has no sensible RGB reading is
rejected with a typed reason.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np

from pipelines.vision.native_stderr import quiet_native_stderr
from schemas.common import PairRejected, RejectReason


class ImageRejected(PairRejected):
    """An image cannot be read, or the two images cannot be compared."""


def to_rgb8(array: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """Normalise a decoded array to uint8 RGB (H, W, 3).

    16-bit and float images are scaled to 8 bits; alpha is dropped (the RGB values are
    what a generator wrote); grey is replicated.
    """
    a = np.asarray(array)
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
    elif a.dtype.kind == "f":
        a = np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5
    elif a.dtype != np.uint8:
        raise ImageRejected(RejectReason.UNSUPPORTED_CHANNELS, f"pixel type {a.dtype} is not supported")
    a = a.astype(np.uint8, copy=False)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    if a.ndim != 3:
        raise ImageRejected(RejectReason.UNSUPPORTED_CHANNELS, f"array of shape {a.shape}")
    channels = a.shape[2]
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(a[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels not in (3, 4):
        raise ImageRejected(RejectReason.UNSUPPORTED_CHANNELS, f"{channels} channels")
    bgr = channel_order == "BGR"
    if channels == 4:
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(a)


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of any common image format -> uint8 RGB."""
    if not data:
        raise ImageRejected(RejectReason.DECODE_ERROR, "empty file")
    cut = truncation(data)
    if cut:
        raise ImageRejected(RejectReason.DECODE_ERROR, cut)
    buf = np.frombuffer(data, np.uint8)
    with quiet_native_stderr():  # libpng and OpenCV print what the rejected row's detail says
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is not None:
        return to_rgb8(decoded, channel_order="BGR")
    # OpenCV lacks some formats (GIF, some TIFF/WebP variants); Pillow may know them.
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            return to_rgb8(np.asarray(im))
    except ImageRejected:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ImageRejected(RejectReason.DECODE_ERROR, f"cannot decode image: {_decode_failure(exc)}") from exc


def truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file is cut short, or None.  OpenCV decodes a JPEG cut inside its
    scan data without an error (the missing rows come out grey), so the end is checked:
    a JPEG ends with its EOI marker (padding after it allowed), a PNG with its IEND chunk."""
    if data[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in data[-4096:]:  # some writers pad after EOI
            return "truncated JPEG: the file ends before the image's end marker"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG: the file ends before the IEND chunk"
    return None


def _decode_failure(exc: Exception) -> str:
    """Pillow's message without what differs between runs: it names the file object by
    its memory address ("cannot identify image file <_io.BytesIO object at 0x7f...>")."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a known image format"
    return _OBJECT_ADDRESS.sub(">", str(exc)) or type(exc).__name__


_OBJECT_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+>")


def read_bytes(path: str | Path) -> bytes:
    """A local file, or any Beam filesystem URL (gs://, s3://, ...)."""
    if "://" not in str(path):
        return Path(path).read_bytes()
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(str(path)):
        raise FileNotFoundError(str(path))
    with FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """uint8 RGB; raises ImageRejected whose detail names the file by its name only (the
    rejected table is the same wherever the data lies; its `real`/`fake` say where).
    `data`: the file's bytes, when the caller has read them already."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    try:
        data = read_bytes(path) if data is None else data
    except FileNotFoundError as exc:
        raise ImageRejected(RejectReason.MISSING_FILE, f"{name} does not exist") from exc
    except OSError as exc:  # strerror ("Is a directory"), else the message with the name for the path
        reason = exc.strerror or str(exc).replace(str(path), name)
        raise ImageRejected(RejectReason.DECODE_ERROR, f"cannot read {name}: {reason}") from exc
    try:
        return decode_image(data)
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"{name}: {exc.detail}") from None


def check_pair(real: np.ndarray, fake: np.ndarray) -> None:
    """The RGB-difference method needs pixel-aligned images of one size."""
    if real.shape[:2] != fake.shape[:2]:
        raise ImageRejected(
            RejectReason.SIZE_MISMATCH,
            f"real is {real.shape[1]}x{real.shape[0]}, fake is {fake.shape[1]}x{fake.shape[0]}",
        )

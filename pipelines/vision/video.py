"""Videos: streaming frame input and output, frame-rate resampling, and a smooth face-box track.

FaceInstruct's video preprocessing (REPO `tools/crop_face.py`, `faceinstruct.md` §4) resamples
every clip to 24 fps, detects the face in each frame independently, skips a video when more
than 30 % of its frames fail, and re-encodes the 256x256 crops at 24 fps with no audio.  This
module holds the parts that are not face detection:

* `open_video` reads a video file or a folder of frame images (DFEW, MAFW and FERV39k ship
  some clips as frame folders) frame by frame as uint8 RGB; nothing holds the whole video.
* `resample_indices` picks the source frames of a track at another rate (ffmpeg's `fps=24`);
  `uniform_indices` is Face-LLaVA's 8-frame model-side sampling.
* `smooth_track` turns per-frame detector boxes into one smooth square box per frame (the
  reference crops every frame on its own detection, which makes the crop shake; a smooth
  track does not, and it fills the frames where detection failed instead of dropping them,
  so the output keeps the source's timing).  `jitter` measures the shake.
* `crop_square` cuts a box out of a frame; `write_video` encodes frames.

Codecs (OpenCV 4.11 wheel, bundled FFmpeg; `faceinstruct_sources.md`, "Video codecs"): there
is no H.264 encoder, so `.mp4` is written as MPEG-4 Part 2 (`mp4v`) and `.avi` as MJPG.  The
writer cuts an odd width or height down to even without a word, so `write_video` refuses odd
sizes.  Truncated files behave per container: an mp4 written with its `moov` atom at the end
does not open at all once cut (DECODE_ERROR), while AVI, FLV and WebM open and yield the
frames before the cut, and their frame-count claim still gives the full length; a FLV cut
after a few hundred bytes can even yield one garbled frame.  So `frame_count` is a claim;
count what `frames()` gives (`frame_count_exact`) where it matters.

Paths are local, or any Beam filesystem URL (anything with "://"): a remote video file is
copied to a local temporary file first (OpenCV needs one), a remote frame folder is read
image by image.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from pipelines.vision.images import ImageRejected, read_image, to_rgb8
from pipelines.vision.native_stderr import quiet_native_stderr
from schemas.common import PairRejected, RejectReason

VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# A container rate outside this range is not a frame rate (0 or NaN: none given; the
# timebase of a variable-rate stream can show up as 90000).
MAX_FPS = 1000.0

# Suffix -> FourCC that `write_video` uses.  FLV1 is given as the integer codec tag 2:
# the string 'FLV1' works too but makes OpenCV print a tag-fallback warning.
WRITE_FOURCC: dict[str, str | int] = {".mp4": "mp4v", ".avi": "MJPG", ".flv": 2}


class TrackRejected(PairRejected):
    """A video whose face track is unusable (too many frames without a face)."""


def _is_remote(path: str | Path) -> bool:
    return "://" in str(path)


def _name(path: str | Path) -> str:
    """The last part of a path or URL: rejected rows name files by their name only."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def natural_key(name: str) -> tuple:
    """Sort key comparing runs of digits as numbers: "2.jpg" < "10.jpg" < "frame_10b.jpg".

    Letters compare case-insensitively; the name itself breaks ties ("01.jpg" vs "1.jpg").
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


# Reading ------------------------------------------------------------------------------------


class VideoSource:
    """A video file or a folder of frame images, read frame by frame (never all in memory).

    Attributes:
        path: what `open_video` was given.
        fps: the container's frame rate, or for a frame folder the `folder_fps` given.
        is_folder: a folder of frame images (sorted by `natural_key` of their names).
        frame_count: the container's claim (CAP_PROP_FRAME_COUNT; None when it has none) or
            the number of images in the folder.  A claim: a truncated file claims its full
            length and yields fewer frames.
        size: (width, height) of the first frame.

    Each `frames()` call reads from the start again.  A remote video is copied to a local
    temporary file that lives until `close()` (or the end of a `with` block, or garbage
    collection).
    """

    def __init__(self, path: str, fps: float, is_folder: bool, frame_count: int | None,
                 size: tuple[int, int], *, local_path: str | None = None,
                 frame_paths: tuple[str, ...] = (), temp_file: str | None = None):
        self.path = path
        self.fps = fps
        self.is_folder = is_folder
        self.frame_count = frame_count
        self.size = size
        self._local_path = local_path
        self._frame_paths = frame_paths
        self._cleanup = weakref.finalize(self, _remove, temp_file) if temp_file else None

    def __repr__(self) -> str:
        kind = "folder" if self.is_folder else "file"
        return (f"VideoSource({self.path!r}, {kind}, fps={self.fps:g}, "
                f"frame_count={self.frame_count}, size={self.size})")

    @property
    def duration_s(self) -> float | None:
        """frame_count / fps (a claim, like frame_count)."""
        return None if self.frame_count is None else self.frame_count / self.fps

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(0-based index, uint8 RGB frame), in order, decoded one at a time.

        A file that stops decoding (truncated, damaged) simply ends the iteration early.  In a
        frame folder an image that cannot be read raises its `ImageRejected` (DECODE_ERROR),
        and one of another size than the first raises SIZE_MISMATCH.
        """
        if self.is_folder:
            yield from self._folder_frames()
            return
        if self._cleanup is not None and not self._cleanup.alive:
            raise ValueError(f"{self!r} is closed: its local copy is gone")
        cap = _capture(self._local_path)
        try:
            index = 0
            while True:
                frame = _read(cap)
                if frame is None:
                    return
                yield index, frame
                index += 1
        finally:
            cap.release()

    def _folder_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame_path in enumerate(self._frame_paths):
            frame = read_image(frame_path)
            if (frame.shape[1], frame.shape[0]) != self.size:
                raise ImageRejected(
                    RejectReason.SIZE_MISMATCH,
                    f"{_name(self.path)}: frame {_name(frame_path)} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"the first is {self.size[0]}x{self.size[1]}",
                )
            yield index, frame

    def close(self) -> None:
        """Deletes the local copy of a remote video (nothing to do for a local one)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _capture(local_path: str) -> cv2.VideoCapture:
    # FFmpeg only: the fallbacks would read a path pattern as an image sequence, or an AVI
    # with OpenCV's own MJPEG parser, so what a file gives would depend on which one won.
    with quiet_native_stderr():
        return cv2.VideoCapture(local_path, cv2.CAP_FFMPEG)


def _read(cap: cv2.VideoCapture) -> np.ndarray | None:
    with quiet_native_stderr():  # FFmpeg reports damaged packets on stderr
        ok, bgr = cap.read()
    if not ok or bgr is None or bgr.size == 0:
        return None
    return to_rgb8(bgr, channel_order="BGR")


def open_video(path: str | Path, folder_fps: float = 25.0) -> VideoSource:
    """Opens a video file (any suffix FFmpeg reads) or a folder of frame images.

    Raises ImageRejected: MISSING_FILE when nothing is at `path`; DECODE_ERROR when the file
    does not open, has no usable frame rate or no readable first frame, or the folder holds
    no image with a `FRAME_SUFFIXES` suffix (or its first image cannot be read).
    """
    if not folder_fps > 0:
        raise ValueError(f"folder_fps must be positive, not {folder_fps}")
    path = str(path)
    name = _name(path)
    if _is_remote(path):
        return _open_remote(path, folder_fps)
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            frame_paths = [e.path for e in entries if e.is_file() and e.name.lower().endswith(FRAME_SUFFIXES)]
        return _open_folder(path, frame_paths, folder_fps)
    if not os.path.exists(path):
        raise ImageRejected(RejectReason.MISSING_FILE, f"{name} does not exist")
    return _open_file(path, path, None)


def _open_folder(path: str, frame_paths: list[str], folder_fps: float) -> VideoSource:
    name = _name(path)
    if not frame_paths:
        raise ImageRejected(RejectReason.DECODE_ERROR, f"{name}: no frame images ({', '.join(FRAME_SUFFIXES)})")
    frame_paths.sort(key=lambda p: natural_key(_name(p)))
    first = read_image(frame_paths[0])
    return VideoSource(path, float(folder_fps), True, len(frame_paths), (first.shape[1], first.shape[0]),
                       frame_paths=tuple(frame_paths))


def _open_file(path: str, local_path: str, temp_file: str | None) -> VideoSource:
    name = _name(path)
    try:
        cap = _capture(local_path)
        try:
            if not cap.isOpened():
                raise ImageRejected(RejectReason.DECODE_ERROR, f"{name}: not a video FFmpeg can open")
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            first = _read(cap)
        finally:
            cap.release()
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise ImageRejected(RejectReason.DECODE_ERROR, f"{name}: no usable frame rate ({fps:g})")
        if first is None:
            raise ImageRejected(RejectReason.DECODE_ERROR, f"{name}: opens but its first frame does not decode")
    except BaseException:
        if temp_file:
            _remove(temp_file)
        raise
    frame_count = int(claimed) if math.isfinite(claimed) and claimed > 0 else None
    return VideoSource(path, fps, False, frame_count, (first.shape[1], first.shape[0]),
                       local_path=local_path, temp_file=temp_file)


def _open_remote(path: str, folder_fps: float) -> VideoSource:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    name = _name(path)
    if path.lower().endswith(VIDEO_SUFFIXES):
        if not FileSystems.exists(path):
            raise ImageRejected(RejectReason.MISSING_FILE, f"{name} does not exist")
        fd, local = tempfile.mkstemp(suffix=os.path.splitext(name)[1])
        try:
            with os.fdopen(fd, "wb") as out, \
                    FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        except BaseException:
            _remove(local)
            raise
        return _open_file(path, local, local)
    # Anything else is a frame folder; an object store has no folders, only names under a prefix.
    pattern = path.rstrip("/") + "/*"
    files = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    if not files:
        raise ImageRejected(RejectReason.MISSING_FILE, f"{name} does not exist (or is empty)")
    return _open_folder(path, [f for f in files if f.lower().endswith(FRAME_SUFFIXES)], folder_fps)


def frame_count_exact(path: str | Path) -> int:
    """Frames a video (or frame folder) really gives: decoded and counted, not the claim."""
    with open_video(path) as source:
        return sum(1 for _ in source.frames())


# Sampling -----------------------------------------------------------------------------------


def _rate(fps: float) -> Fraction:
    """A frame rate as an exact fraction, so 29.97 (30000/1001) resamples without float drift."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"a frame rate must be positive, not {fps}")
    return Fraction(fps).limit_denominator(100_000)


def resample_indices(n_frames: int, src_fps: float, dst_fps: float) -> list[int]:
    """Source frame indices of a track at `dst_fps` (ffmpeg's `fps=` filter, deterministic).

    Output frame k is shown at t = k / dst_fps and takes the source frame on screen at that
    time, the nearest earlier one: floor(t * src_fps).  Output frames run while t < the
    source duration n_frames / src_fps, so there are ceil(n_frames * dst_fps / src_fps) of
    them (30 -> 24 fps: 90 frames give 72, 91 give 73).  Indices never decrease; going down in
    rate skips frames, going up repeats them.  Rates are taken as exact fractions.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, not {n_frames}")
    src, dst = _rate(src_fps), _rate(dst_fps)
    count = math.ceil(n_frames * dst / src)
    return [math.floor(k * src / dst) for k in range(count)]


def uniform_indices(n: int, k: int) -> list[int]:
    """Face-LLaVA's model-side sampling of k frames from n (REPO `processing_video.py`:
    `np.linspace(0, duration-1, num_frames, dtype=int)`), so the same frames are chosen.

    The float positions are truncated toward zero (what `dtype=int` does; numpy 2 floors,
    the same for these non-negative values), not rounded: n=100, k=8 gives
    [0, 14, 28, 42, 56, 70, 84, 99].  With n < k frames repeat; n == 0 (or k == 0) gives [].
    """
    if n <= 0 or k <= 0:
        return []
    return np.linspace(0, n - 1, k).astype(int).tolist()


# Face-box track -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackConfig:
    # More failed frames than this fraction: the video is rejected (the reference's
    # `na_fraction > 0.3`).
    max_failed_fraction: float = 0.3
    # Time scale of the box smoothing: the Gaussian's sigma, in seconds.
    smoothing_s: float = 0.25


def _valid(box) -> bool:
    return box is not None and len(box) == 4 and all(math.isfinite(float(v)) for v in box)


def failed_fraction(boxes) -> float:
    """Share of frames with no box (None, or any non-finite coordinate); 1.0 for no frames."""
    boxes = list(boxes)
    if not boxes:
        return 1.0
    return sum(not _valid(b) for b in boxes) / len(boxes)


def _centre_side(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    side = ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2
    return cx, cy, side


def smooth_track(boxes: list, fps: float, config: TrackConfig = TrackConfig()) -> np.ndarray:
    """Per-frame face boxes (x0, y0, x1, y1), None where detection failed -> (n, 4) float64
    smooth square boxes, one per frame.

    1. Each box becomes a centre and a side (the mean of its width and height).
    2. Failed frames get the centre and side interpolated linearly between the nearest good
       frames; before the first and after the last good frame they are held.
    3. Centre x, centre y and side are smoothed with a Gaussian over time, sigma =
       smoothing_s * fps frames, as a local linear fit (Gaussian-weighted least squares of a
       line around each frame).  It is symmetric in time, so zero-phase like a forward-backward
       filter; inside the track it is exactly the Gaussian average (the line's slope term
       cancels), and at the ends, where a plain Gaussian would lean on the missing side, the
       fitted line carries the motion on: no shrinking toward zero, no lag, and a box moving
       at constant speed is reproduced exactly.

    Does not check the failed fraction (see `track_boxes`).  Raises ValueError when no box
    is valid.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, not {fps}")
    n = len(boxes)
    good = np.array([_valid(b) for b in boxes], bool)
    if not good.any():
        raise ValueError(f"no face box in any of the {n} frames")
    known = np.array([b for b, g in zip(boxes, good) if g], np.float64)
    t = np.arange(n, dtype=np.float64)
    sigma = config.smoothing_s * fps
    out = []
    for values in _centre_side(known):
        filled = np.interp(t, t[good], values)
        out.append(_local_linear(filled, sigma))
    cx, cy, side = out
    half = side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def track_boxes(boxes: list, fps: float, config: TrackConfig = TrackConfig(), why: str = "") -> np.ndarray:
    """`smooth_track` after the reference's check: more than `max_failed_fraction` of the
    frames without a box (exactly that share is kept, as the reference's `> 0.3`) raises
    TrackRejected(TOO_MANY_FAILED_FRAMES); `why` says what the failed frames had instead."""
    failed = failed_fraction(boxes)
    if failed > config.max_failed_fraction:
        bad = round(failed * len(boxes))
        reasons = f" ({why})" if why else ""
        raise TrackRejected(
            RejectReason.TOO_MANY_FAILED_FRAMES,
            f"{bad} of {len(boxes)} frames without exactly one usable face{reasons}; more than "
            f"{config.max_failed_fraction:.0%}",
        )
    return smooth_track(boxes, fps, config)


def _local_linear(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local linear regression of x over its index (see `smooth_track`)."""
    n = len(x)
    if n < 2 or sigma <= 0:
        return x.astype(np.float64, copy=True)
    r = max(1, math.ceil(4 * sigma))
    tau = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (tau / sigma) ** 2)
    ones = np.ones(n)

    def window_sum(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        # sum over frames j in the track of values[j] * kernel(j - t), for each frame t.
        # np.convolve flips the kernel; the full result is centred at t + r.
        return np.convolve(values, kernel[::-1])[r:r + n]

    s0, s1, s2 = window_sum(ones, w), window_sum(ones, tau * w), window_sum(ones, tau * tau * w)
    t0, t1 = window_sum(x, w), window_sum(x, tau * w)
    det = s0 * s2 - s1 * s1
    flat = det <= 1e-12 * s0 * s2  # one frame in the window: no line to fit, take the mean
    safe = np.where(flat, 1.0, det)
    return np.where(flat, t0 / s0, (s2 * t0 - s1 * t1) / safe)


def jitter(boxes: np.ndarray) -> float:
    """Frame-to-frame shake of a box track, dimensionless.

    For centre x, centre y and side (mean of width and height), the absolute second
    difference |v[t+1] - 2 v[t] + v[t-1]| (an acceleration: 0 for a box at rest or moving at
    constant speed, large for per-frame detector noise) is averaged over the three series
    and the frames, then divided by the mean side.  0.0 for fewer than 3 frames.  Rows with
    a non-finite coordinate are not allowed.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) < 3:
        return 0.0
    if not np.isfinite(b).all():
        raise ValueError("jitter needs finite boxes (fill failed frames first, e.g. smooth_track)")
    series = np.stack(_centre_side(b))
    mean_side = float(series[2].mean())
    if mean_side <= 0:
        raise ValueError("boxes with no extent")
    return float(np.abs(np.diff(series, n=2, axis=1)).mean() / mean_side)


def crop_square(frame: np.ndarray, box, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The box (x0, y0, x1, y1) of `frame` resized to size x size, and its 2x3 transform
    (frame pixels -> crop pixels, the one given to cv2.warpAffine: (x0, y0) -> (0, 0) and
    (x1, y1) -> (size, size)).

    Bilinear; what lies outside the frame comes out black (constant 0, as
    `FaceGeometry.warp`): a face at the border keeps its scale and place in the crop instead
    of being clipped and stretched, and no border pixels are smeared into fake texture.  A
    box that is not square is stretched to square (x and y scaled apart).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {box}")
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    transform = np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0]], np.float64)
    crop = cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, transform


# Writing ------------------------------------------------------------------------------------


def _fourcc_code(fourcc: str | int) -> int:
    return fourcc if isinstance(fourcc, int) else cv2.VideoWriter_fourcc(*fourcc)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                fourcc: str | int | None = None) -> int:
    """Encodes uint8 RGB frames (all of one even size) to a video file with no audio; returns
    how many frames were written.

    The codec follows the suffix (`WRITE_FOURCC`: .mp4 -> mp4v, since this OpenCV has no
    H.264 encoder; .avi -> MJPG; .flv -> FLV1) unless `fourcc` names one.  Frames are
    written as they come.  Raises ValueError on another suffix, a writer that does not open,
    no frames, a frame that is not (H, W, 3) uint8, an odd width or height (the encoder would
    silently cut it to even) or a frame of another size; a file the writer had started is
    then removed (one already at `path` is left alone when the first frame is refused).
    A remote path is written locally, then copied.
    """
    path = str(path)
    suffix = os.path.splitext(_name(path))[1].lower()
    if fourcc is None:
        if suffix not in WRITE_FOURCC:
            raise ValueError(f"cannot write {suffix or 'a file with no suffix'}: use one of {', '.join(WRITE_FOURCC)}")
        fourcc = WRITE_FOURCC[suffix]
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, not {fps}")
    remote = _is_remote(path)
    if remote:
        fd, local = tempfile.mkstemp(suffix=suffix)
        os.close(fd)
    else:
        local = path
    writer = None
    opened = False  # the file at `local` is ours to remove from here on
    written = 0
    try:
        size = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {written}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
            h, w = frame.shape[:2]
            if writer is None:
                if w % 2 or h % 2:
                    raise ValueError(f"frame size {w}x{h} is odd: the encoder would cut it to even")
                size = (w, h)
                with quiet_native_stderr():
                    writer = cv2.VideoWriter(local, cv2.CAP_FFMPEG, _fourcc_code(fourcc), float(fps), size)
                opened = True
                if not writer.isOpened():
                    raise ValueError(f"cannot open a {fourcc!r} writer for {_name(path)}")
            elif (w, h) != size:
                raise ValueError(f"frame {written} is {w}x{h}, the first is {size[0]}x{size[1]}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            written += 1
        if writer is None:
            raise ValueError(f"no frames to write to {_name(path)}")
        with quiet_native_stderr():
            writer.release()
        writer = None
        if remote:
            _upload(local, path)
    except BaseException:
        if writer is not None:
            writer.release()
        if opened and not remote:
            _remove(local)
        raise
    finally:
        if remote:
            _remove(local)
    return written


def _upload(local: str, path: str) -> None:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with open(local, "rb") as src, \
            FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        shutil.copyfileobj(src, out, 1 << 20)

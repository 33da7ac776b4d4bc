"""Face crops, crop tracks and landmarks of FaceInstruct items.

* An image: exactly one face (else `no_face`, `multiple_faces`, `face_too_small`), a square
  crop around the detector's box (grown by `margin` on every side), resized to
  `crop_size`; the 2x3 transform source -> crop is kept.
* A video: the face is detected in every frame; more than `max_failed_fraction` of the
  frames without exactly one usable face rejects it (`too_many_failed_frames`).  The boxes
  are smoothed over time (`pipelines.vision.video.smooth_track`: no per-frame jitter, failed
  frames bridged), the track is resampled to `fps`, and every track frame is cropped and
  written to an mp4 (no audio).  `frames` of them, uniformly spread as Face-LLaVA samples
  them, are kept as images.  The video is decoded twice (boxes, then crops), one frame at
  a time: nothing holds the whole video.
* Frames of a video (DISFA): the video is decoded once for all its labelled frames, and
  each frame is cropped as an image.

Landmarks are the 68 iBUG points (the mediapipe mesh projected by
`pipelines.vision.landmarks68`), run on the source frame around the crop's box, per kept
frame, normalised to the crop (0..1).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import cv2
import numpy as np

from pipelines.faceinstruct.measure import measure
from pipelines.vision.faces import Detection, FaceAnalyzer, FaceGeometryConfig, FaceRejected, apply_affine
from pipelines.vision.images import ImageRejected, read_image
from pipelines.vision.landmarks68 import ibug68_from_mesh
from pipelines.vision.video import (
    TrackConfig,
    crop_square,
    jitter,
    open_video,
    resample_indices,
    track_boxes,
    uniform_indices,
    write_video,
)
from schemas.common import PairRejected, RejectReason
from schemas.faceinstruct import FaceItem, FaceMeasures

IMAGE_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class MediaConfig:
    crop_size: int = 256  # Face-LLaVA's crop side
    margin: float = 0.0  # the detector's box grown by this fraction of its side, per side (Face-LLaVA: 0)
    min_face_px: int = 48
    fps: float = 24.0  # the crop track's rate (Face-LLaVA re-encodes at 24 fps)
    frames: int = 8  # crop frames sampled for the samples (Face-LLaVA: 8)
    max_failed_fraction: float = 0.3
    smoothing_s: float = 0.25
    folder_fps: float = 25.0  # rate of frame-folder videos, which carry none
    image_format: str = "jpeg"
    jpeg_quality: int = 95


@dataclass
class FaceMedia:
    """An item's face: crop(s), landmarks, transform and measurements."""

    item: FaceItem
    image: bytes  # the crop (a video: its middle track frame), encoded
    frames: list[bytes]  # a video's sampled crop frames, encoded; [] for an image
    frame_indices: list[int]  # their track frame numbers
    fps: float | None  # the track's rate (video)
    track_frames: int  # frames in the track (1 for an image)
    video: bytes | None  # the crop track as mp4 (video)
    landmarks: np.ndarray  # (track_frames, 68, 2) float32, 0..1 in the crop
    transform: np.ndarray  # (2, 3) source px -> crop px (a video: the middle frame's)
    measures: FaceMeasures  # of the middle frame
    failed_frames: int = 0  # video frames without exactly one face (bridged by the track)
    # Frame-to-frame shake of the face box (`pipelines.vision.video.jitter`): of the
    # detector's own boxes (frames with a face) and of the smoothed track that was cropped.
    detector_jitter: float | None = None
    track_jitter: float | None = None

    @property
    def pair(self) -> FaceItem:  # what the shared stage shell rejects
        return self.item


def square_box(detection: Detection, margin: float) -> tuple[float, float, float, float]:
    """The detector's box as a square of side mean(width, height) * (1 + 2 margin), same centre."""
    x0, y0, x1, y1 = detection.box
    side = ((x1 - x0) + (y1 - y0)) / 2 * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


class FaceCropper:
    """Holds the face models of one worker (not thread-safe)."""

    def __init__(self, config: MediaConfig | None = None):
        self.config = config or MediaConfig()
        if self.config.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format {self.config.image_format!r}: one of {', '.join(IMAGE_FORMATS)}")
        self.analyzer = FaceAnalyzer(FaceGeometryConfig(min_face_px=self.config.min_face_px))

    def close(self) -> None:
        self.analyzer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- pieces ----------------------------------------------------------------------------

    def encode(self, rgb: np.ndarray) -> bytes:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self.config.image_format == "png":
            ok, data = cv2.imencode(".png", bgr)
        else:
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a crop")
        return data.tobytes()

    def landmarks(self, frame: np.ndarray, box, transform: np.ndarray) -> np.ndarray:
        """(68, 2) float32 crop-normalised iBUG points of the face in `box` of `frame`."""
        x0, y0, x1, y1 = box
        mesh = self.analyzer.mesh(frame, Detection((x0, y0, x1, y1), 1.0))
        points = apply_affine(transform, ibug68_from_mesh(mesh).astype(np.float64))
        return (points / self.config.crop_size).astype(np.float32)

    def crop_face(self, rgb: np.ndarray):
        """(crop, transform, landmarks (68, 2)) of the one face of an image; FaceRejected otherwise."""
        box = square_box(self.analyzer.the_face(rgb), self.config.margin)
        crop, transform = crop_square(rgb, box, self.config.crop_size)
        return crop, transform, self.landmarks(rgb, box, transform)

    def _single(self, item: FaceItem, rgb: np.ndarray) -> FaceMedia:
        crop, transform, points = self.crop_face(rgb)
        return FaceMedia(item=item, image=self.encode(crop), frames=[], frame_indices=[], fps=None,
                         track_frames=1, video=None, landmarks=points[None], transform=transform,
                         measures=measure(points * self.config.crop_size))

    # -- items -----------------------------------------------------------------------------

    def image(self, item: FaceItem, data: bytes | None = None) -> FaceMedia:
        """`data`: the file's bytes when the caller has read them already (the cache key)."""
        return self._single(item, read_image(item.media, data))

    def video_frames(self, items: list[FaceItem]) -> Iterator[FaceMedia | tuple[FaceItem, PairRejected]]:
        """The labelled frames of one video (items sharing `media`), decoding it once: a
        `FaceMedia` per item, or (item, the rejection)."""
        wanted: dict[int, list[FaceItem]] = {}
        for item in items:
            wanted.setdefault(item.source_frame, []).append(item)
        try:
            source = open_video(items[0].media, self.config.folder_fps)
        except PairRejected as exc:
            for item in items:
                yield item, exc
            return
        last = max(wanted)
        seen = 0
        with source:
            for index, frame in source.frames():
                seen = index + 1
                for item in wanted.get(index, ()):
                    try:
                        yield self._single(item, frame)
                    except PairRejected as exc:
                        yield item, exc
                if index >= last:
                    break
        for index in sorted(i for i in wanted if i >= seen):
            for item in wanted[index]:
                yield item, ImageRejected(RejectReason.DECODE_ERROR, f"frame {index} is past the end: the video "
                                          f"decodes to {seen} frames")

    def _box_of(self, frame: np.ndarray) -> tuple[tuple[float, float, float, float] | None, str | None]:
        try:
            return square_box(self.analyzer.the_face(frame), self.config.margin), None
        except FaceRejected as exc:
            return None, exc.reason.value

    def video(self, item: FaceItem) -> FaceMedia:
        cfg = self.config
        with open_video(item.media, cfg.folder_fps) as source:
            boxes, why = [], {}
            for _, frame in source.frames():
                box, reason = self._box_of(frame)
                boxes.append(box)
                if reason:
                    why[reason] = why.get(reason, 0) + 1
            if not boxes:
                raise ImageRejected(RejectReason.DECODE_ERROR, "the video has no frame")
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(why.items()))
            track = track_boxes(boxes, source.fps, TrackConfig(cfg.max_failed_fraction, cfg.smoothing_s), counts)
            detected = np.array([b for b in boxes if b is not None], np.float64)
            order = resample_indices(len(boxes), source.fps, cfg.fps)
            picked = set(uniform_indices(len(order), cfg.frames))
            middle = len(order) // 2
            kept: dict[int, bytes] = {}
            points: list[np.ndarray] = []
            transforms: list[np.ndarray] = []

            def crops() -> Iterator[np.ndarray]:
                position = 0
                for index, frame in source.frames():
                    while position < len(order) and order[position] == index:
                        crop, transform = crop_square(frame, track[index], cfg.crop_size)
                        try:
                            points.append(self.landmarks(frame, track[index], transform))
                        except FaceRejected:
                            points.append(None)  # bridged below from the neighbouring frames
                        transforms.append(transform)
                        if position in picked or position == middle:
                            kept[position] = self.encode(crop)
                        yield crop
                        position += 1
                    if position >= len(order):
                        break

            handle, path = tempfile.mkstemp(suffix=".mp4", prefix="facext-track-")
            os.close(handle)
            try:
                written = write_video(path, crops(), cfg.fps)
                with open(path, "rb") as f:
                    video = f.read()
            finally:
                os.remove(path)
        landmarks = bridge(points)
        if landmarks is None:
            raise PairRejected(RejectReason.MESH_FAILED, "the face mesh failed on every track frame")
        if written != len(order):
            raise ImageRejected(RejectReason.DECODE_ERROR, f"the video decoded to {written} of its "
                                f"{len(order)} track frames on the second pass")
        sampled = uniform_indices(len(order), cfg.frames)
        return FaceMedia(item=item, image=kept[middle], frames=[kept[i] for i in sampled], frame_indices=sampled,
                         fps=cfg.fps, track_frames=len(order), video=video, landmarks=landmarks,
                         transform=transforms[middle], measures=measure(landmarks[middle] * cfg.crop_size),
                         failed_frames=sum(why.values()), detector_jitter=jitter(detected), track_jitter=jitter(track))


def bridge(points: list[np.ndarray | None]) -> np.ndarray | None:
    """(n, 68, 2): frames whose mesh failed take the nearest earlier frame's points (the
    first good ones before it); None when no frame has points."""
    good = [p for p in points if p is not None]
    if not good:
        return None
    out, last = [], good[0]
    for p in points:
        last = p if p is not None else last
        out.append(last)
    return np.stack(out).astype(np.float32)


# Bump when cropping or tracking changes what it makes of the same file: older entries are
# then never read.
MEDIA_CACHE_VERSION = 1


class MediaCache:
    """Finished face crops and tracks by content: the media file's bytes (a frame folder's
    files; a frame of a video adds its index), the media settings and the code's version.
    An entry holds the `FaceMedia` without its item, or the reason and detail of its
    refusal, so a re-run or a resumed run repeats no face model work it finished."""

    def __init__(self, root: str, config: MediaConfig) -> None:
        import dataclasses
        import json

        from pipelines.store import ContentStore
        from schemas.version import facext_version

        self.store = ContentStore(root, ".media.pkl")
        settings = json.dumps(dataclasses.asdict(config), sort_keys=True)
        self.salt = f"faceinstruct\x1f{MEDIA_CACHE_VERSION}\x1f{facext_version()}\x1f{settings}".encode()

    def content_digest(self, media: str) -> str | None:
        """sha256 of the media's bytes (a folder: its files in natural order); None when
        it cannot be read (the crop stage then says why)."""
        import hashlib

        from pipelines.vision.images import read_bytes
        from pipelines.vision.video import natural_key

        digest = hashlib.sha256()
        try:
            if os.path.isdir(media):
                for name in sorted(os.listdir(media), key=natural_key):
                    digest.update(name.encode() + b"\0" + read_bytes(os.path.join(media, name)))
            else:
                digest.update(read_bytes(media))
        except OSError:
            return None
        return digest.hexdigest()

    def key(self, content: str, frame: int | None = None) -> str:
        import hashlib

        return hashlib.sha256(self.salt + f"\x1f{content}\x1f{frame}".encode()).hexdigest()

    def get(self, key: str, item: FaceItem) -> FaceMedia | PairRejected | None:
        import pickle

        data = self.store.get(key)
        try:
            entry = pickle.loads(data) if data is not None else None
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss, replaced by the next put
            return None
        if entry is None:
            return None
        if "refused" in entry:
            reason, detail = entry["refused"]
            return PairRejected(RejectReason(reason), detail)
        return FaceMedia(item=item, **entry["media"])

    def put(self, key: str, result: FaceMedia | PairRejected) -> None:
        import dataclasses
        import pickle

        if isinstance(result, PairRejected):
            entry = {"refused": (result.reason.value, result.detail)}
        else:
            entry = {"media": {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "item"}}
        self.store.put(key, pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))

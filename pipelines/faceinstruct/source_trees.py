"""Fixture trees of the 13 FaceInstruct source datasets, built from real face photos.

Each builder writes a small copy of one dataset: the folder tree, the file names, the
label files and the media containers that the real download has. Each builder also
returns the list of what a correct reader of that tree must yield (`Expected`). The
layouts, label formats, class maps and official splits follow the layout reference
`/work/shared/references/faceinstruct_sources.md` ("FaceInstruct source datasets:
on-disk layouts and label formats"); the label given per task follows
`/work/shared/references/faceinstruct.md` §1.2. Where the reference lists variants, the
main layout it describes is used.

The truth here comes from the reference, never from the readers, so these trees serve as
independent test data for the readers, and as a bundled sample when built with `bad=False`.

Every face is a crop or affine variation (shift, scale, small rotation, flip,
brightness) of one of the two real photos that ship inside installed packages
(`pipelines.vision.face_photos`). The face sizes and face-free regions used below were
measured with the project's detector. Besides the good items, the trees hold items a
reader must reject (`Expected.reject`):

- a label row whose media is missing;
- truncated images and videos;
- a picture with no face, and one with two faces;
- a video that is mostly without a face;
- a label row with an unknown class code.

Some trees also hold media that no label file lists. A reader must not yield those, so
they have no `Expected`.

The output is byte-identical per seed:

- every random draw comes from a numpy Generator seeded from (seed, dataset);
- JPEGs are written through `cv2.imencode` at a fixed quality;
- the video containers carry no time stamps.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from pipelines.vision.face_photos import astronaut, grace_hopper

SOURCES: tuple[str, ...] = (
    "dfew", "mafw", "ferv39k", "crema_d", "affectnet", "rafdb", "disfa", "bp4d",
    "celeba", "morph", "utkface", "ffpp", "fakeavceleb",
)

REJECT_REASONS = (
    "missing_file", "decode_error", "no_face", "multiple_faces", "too_many_failed_frames",
    "unknown_label",
)


@dataclass(frozen=True)
class Expected:
    """One labelled item, as a correct reader of the tree must yield it."""

    source_path: str  # relative to the dataset root, POSIX; a frame folder for frame-folder videos
    source_frame: int | None  # DISFA: 0-based frame index in the decoded video
    task: str  # expression | au | attribute | age | deepfake
    media_type: str  # image | video
    label: dict | None  # None for items that must be rejected
    split: str | None  # train | test, where the dataset has an official split
    subject_id: str | None
    reject: str | None  # one of REJECT_REASONS, None for good items


# --------------------------------------------------------------------------------------
# Photos and renderings
# --------------------------------------------------------------------------------------

# Face centre (x, y) and box side in each photo's own pixels, as the project's
# mediapipe full-range detector finds them, and face-free rectangles (x0, y0, x1, y1)
# that the same detector finds nothing in at 120-256 px.
_FACE_AT = {
    "astronaut": ((225.6, 119.7), 103.9),
    "grace_hopper": ((266.1, 228.6), 200.4),
}
_EMPTY_REGIONS = (
    ("astronaut", (350, 0, 512, 330)),  # the shuttle model
    ("astronaut", (0, 300, 300, 512)),  # the suit and its patch
    ("grace_hopper", (0, 0, 150, 330)),  # the flag
    ("grace_hopper", (60, 380, 512, 600)),  # the uniform
)
_PHOTO_NAMES = ("astronaut", "grace_hopper")

_JPEG_QUALITY = 90
# A JPEG cut 300 bytes in ends inside its Huffman tables: cv2 returns None and Pillow
# raises, so both libraries agree that the file is corrupt (reference, codec notes).
_JPEG_CUT = 300
# An FLV cut 200 bytes in ends inside its metadata tag and does not open at all, whereas
# one cut after a few hundred bytes can still yield a garbled frame (reference, codec notes).
_FLV_CUT = 200

_MP4V = cv2.VideoWriter_fourcc(*"mp4v")
_XVID = cv2.VideoWriter_fourcc(*"XVID")
_FLV1 = 2  # the integer tag avoids OpenCV's FLV1 tag-fallback warning (reference)


@cache
def _photo(name: str) -> np.ndarray:
    return {"astronaut": astronaut, "grace_hopper": grace_hopper}[name]()


@dataclass(frozen=True)
class _View:
    """How one photo is placed in an output frame."""

    photo: str
    dx: float  # face-centre offset from the frame centre, fraction of the frame width
    dy: float  # ... of the frame height
    zoom: float  # face size relative to the nominal face_frac
    angle: float  # degrees, counter-clockwise
    flip: bool
    gain: float  # brightness factor


def _random_view(rng: np.random.Generator, photo: str | None = None) -> _View:
    # rng.integers is drawn even when the photo is given, so the stream never depends on it.
    pick = _PHOTO_NAMES[int(rng.integers(2))]
    return _View(
        photo=photo or pick,
        dx=float(rng.uniform(-0.08, 0.08)),
        dy=float(rng.uniform(-0.06, 0.06)),
        zoom=float(rng.uniform(0.8, 1.2)),
        angle=float(rng.uniform(-6.0, 6.0)),
        flip=bool(rng.integers(2)),
        gain=float(rng.uniform(0.88, 1.12)),
    )


def _view_matrix(view: _View, w: int, h: int, face_frac: float) -> np.ndarray:
    """2x3 affine: photo pixels -> output pixels."""
    (cx, cy), side = _FACE_AT[view.photo]
    s = face_frac * min(w, h) * view.zoom / side
    a = np.deg2rad(view.angle)
    rot = s * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    centre = np.array([w / 2 + view.dx * w, h / 2 + view.dy * h])
    m = np.hstack([rot, (centre - rot @ np.array([cx, cy]))[:, None]])
    if view.flip:
        m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def _apply_gain(rgb: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * np.float32(gain), 0, 255).astype(np.uint8)


def _render(view: _View, w: int, h: int, face_frac: float) -> np.ndarray:
    """The photo placed by `view` in a w x h RGB frame."""
    m = _view_matrix(view, w, h, face_frac)
    src = _photo(view.photo)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.6:
        # Shrink first with area averaging, so that the strong downscale does not alias.
        f = scale / 0.6
        src = cv2.resize(src, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m = m @ np.diag([1 / f, 1 / f, 1.0])
    out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _apply_gain(out, view.gain)


def _face_box(view: _View, w: int, h: int, face_frac: float) -> tuple[int, int, int, int]:
    """The face's (x, y, width, height) in the output, integer pixels."""
    m = _view_matrix(view, w, h, face_frac)
    (cx, cy), side = _FACE_AT[view.photo]
    x, y = (float(v) for v in m @ np.array([cx, cy, 1.0]))
    s = side * float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return round(x - s / 2), round(y - s / 2), round(s), round(s)


def _empty_picture(rng: np.random.Generator, w: int, h: int, drift: int = 0) -> list[np.ndarray]:
    """A face-free picture cut from a photo; `drift` > 0 gives that many frames panning slowly."""
    photo, (x0, y0, x1, y1) = _EMPTY_REGIONS[int(rng.integers(len(_EMPTY_REGIONS)))]
    rw, rh = x1 - x0, y1 - y0
    # The largest w:h window in the region, scaled down to 75-95 % so that it can move.
    cw = min(rw, rh * w / h) * float(rng.uniform(0.75, 0.95))
    ch = cw * h / w
    sx, sy = x0 + float(rng.uniform(0, rw - cw)), y0 + float(rng.uniform(0, rh - ch))
    ex, ey = x0 + float(rng.uniform(0, rw - cw)), y0 + float(rng.uniform(0, rh - ch))
    gain = float(rng.uniform(0.85, 1.15))
    frames = []
    for t in np.linspace(0.0, 1.0, max(drift, 1)):
        x, y = sx + (ex - sx) * t * 0.3, sy + (ey - sy) * t * 0.3
        crop = _photo(photo)[int(y):int(y + ch), int(x):int(x + cw)]
        frames.append(_apply_gain(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA), gain))
    return frames


def _two_faces(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Both photos side by side in one picture: two strong faces."""
    left = _render(replace(_random_view(rng, "astronaut"), flip=False), w // 2, h, 0.6)
    right = _render(replace(_random_view(rng, "grace_hopper"), flip=False), w - w // 2, h, 0.6)
    return np.ascontiguousarray(np.hstack([left, right]))


def _face_clip(rng: np.random.Generator, n: int, w: int, h: int, face_frac: float,
               photo: str | None = None) -> list[np.ndarray]:
    """n frames of one face drifting slowly (shift, zoom and roll change linearly)."""
    v0 = _random_view(rng, photo)
    v1 = replace(
        v0,
        dx=v0.dx + float(rng.uniform(-0.06, 0.06)),
        dy=v0.dy + float(rng.uniform(-0.05, 0.05)),
        zoom=v0.zoom * float(rng.uniform(0.92, 1.08)),
        angle=v0.angle + float(rng.uniform(-3.0, 3.0)),
    )
    frames = []
    for t in np.linspace(0.0, 1.0, n):
        v = replace(v0, dx=v0.dx + (v1.dx - v0.dx) * t, dy=v0.dy + (v1.dy - v0.dy) * t,
                    zoom=v0.zoom + (v1.zoom - v0.zoom) * t, angle=v0.angle + (v1.angle - v0.angle) * t)
        frames.append(_render(v, w, h, face_frac))
    return frames


def _mostly_faceless_clip(rng: np.random.Generator, n: int, w: int, h: int,
                          face_frac: float) -> list[np.ndarray]:
    """A face for the first quarter, then a cut to a face-free view: 75 % of frames have no face."""
    k = n // 4
    return _face_clip(rng, k, w, h, face_frac) + _empty_picture(rng, w, h, drift=n - k)


def _jpeg(rgb: np.ndarray, quality: int = _JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _csv_text(rows: list[list], **kw) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", **kw).writerows(rows)
    return buf.getvalue()


class _Tree:
    """Writes files under one dataset root and collects the Expected list."""

    def __init__(self, root: Path, bad: bool):
        self.root = Path(root)
        self.bad = bad
        self.expected: list[Expected] = []

    def _path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def bytes(self, rel: str, data: bytes) -> None:
        self._path(rel).write_bytes(data)

    def text(self, rel: str, text: str, encoding: str = "utf-8") -> None:
        # Written as bytes: no platform newline translation, "\n" everywhere.
        self._path(rel).write_bytes(text.encode(encoding))

    def image(self, rel: str, rgb: np.ndarray, truncate: bool = False) -> None:
        data = _png(rgb) if rel.lower().endswith(".png") else _jpeg(rgb)
        self.bytes(rel, data[:_JPEG_CUT] if truncate else data)

    def frames(self, rel_dir: str, frames: list[np.ndarray], name) -> None:
        for j, f in enumerate(frames):
            self.image(f"{rel_dir}/{name(j)}", f)

    def video(self, rel: str, frames: list[np.ndarray], fps: float, fourcc: int,
              truncate: bool = False) -> None:
        p = self._path(rel)
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(p), fourcc, fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cannot write {p}")
        for f in frames:
            writer.write(np.ascontiguousarray(f[..., ::-1]))
        writer.release()
        if truncate:
            data = p.read_bytes()
            # An mp4 cut in half loses its trailing moov atom and does not open at all.
            p.write_bytes(data[:_FLV_CUT] if rel.endswith(".flv") else data[: len(data) // 2])

    def expect(self, source_path: str, task: str, media_type: str, label: dict | None, *,
               split: str | None = None, subject_id: str | None = None, reject: str | None = None,
               source_frame: int | None = None) -> None:
        assert (label is None) == (reject is not None), source_path
        assert reject is None or reject in REJECT_REASONS, reject
        self.expected.append(Expected(source_path, source_frame, task, media_type, label, split,
                                      subject_id, reject))


def _bad_rng(rng: np.random.Generator) -> np.random.Generator:
    """A second stream for bad items and distractors, so good items do not depend on `bad`."""
    return np.random.default_rng(int(rng.integers(2**63)))


# --------------------------------------------------------------------------------------
# Expression, video
# --------------------------------------------------------------------------------------

_DFEW_CLASSES = {1: "Happy", 2: "Sad", 3: "Neutral", 4: "Angry", 5: "Surprise", 6: "Disgust", 7: "Fear"}


def _fold_lists(items: list[tuple], n_folds: int = 5) -> dict[int, tuple[list, list]]:
    """Per fold k: (train, test). Each item (..., fold) is in the test list of its own fold
    and in the train lists of the other four, as in DFEW and MAFW."""
    return {k: ([it for it in items if it[-1] != k], [it for it in items if it[-1] == k])
            for k in range(1, n_folds + 1)}


def _dfew(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """DFEW: `Clip/clip_224x224/<id5>/<id5>_<j5>.jpg` frame folders (the face-aligned
    variant) and the single-labelled 5-fold split CSVs `video_name,label` with unpadded ids."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    # (clip id, label 1..7 or an unknown one, reject reason, test fold)
    clips = [(3, 1, None, 1), (17, 2, None, 2), (42, 4, None, 1), (105, 5, None, 3),
             (2048, 7, None, 4), (12345, 6, None, 5)]
    if bad:
        # 466 clips have no face folder in clip_224x224 although they are labelled (README).
        clips += [(466, 3, "missing_file", 2), (777, 1, "too_many_failed_frames", 1),
                  (1500, 8, "unknown_label", 3)]
    for cid, label, reject, fold in clips:
        folder = f"Clip/clip_224x224/{cid:05d}"
        g = rng if reject is None else brng
        n = int(g.integers(16, 21))
        if reject == "too_many_failed_frames":
            t.frames(folder, _mostly_faceless_clip(g, n, 224, 224, 0.55), lambda j, c=cid: f"{c:05d}_{j + 1:05d}.jpg")
        elif reject != "missing_file":
            t.frames(folder, _face_clip(g, n, 224, 224, 0.55), lambda j, c=cid: f"{c:05d}_{j + 1:05d}.jpg")
        good = reject is None
        t.expect(folder, "expression", "video", {"expression": _DFEW_CLASSES[label]} if good else None,
                 split="test" if fold == 1 else "train", reject=reject)
    if bad:
        # A multi-labelled clip: its frames exist but no single-labelled split lists it.
        t.frames("Clip/clip_224x224/00099", _face_clip(brng, 16, 224, 224, 0.55), lambda j: f"00099_{j + 1:05d}.jpg")
    for k, (train, test) in _fold_lists(clips).items():
        for folder, rows in (("train(single-labeled)", train), ("test(single-labeled)", test)):
            body = [["video_name", "label"]] + [[cid, label] for cid, label, *_ in sorted(rows)]
            t.text(f"EmoLabel_DataSplit/{folder}/set_{k}.csv", _csv_text(body))
    return t.expected


_MAFW_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
                 "contempt", "anxiety", "helplessness", "disappointment")


def _mafw(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """MAFW: `data/clips/<id5>.mp4` and the single-label, no-caption 5-fold lists
    `Train & Test Set/single/no_caption/set_k/{train,test}.txt` (`00025.mp4 anger`)."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    clips = [(25, "anger", None, 1), (1024, "happiness", None, 2), (3747, "contempt", None, 1),
             (5120, "helplessness", None, 4), (9999, "neutral", None, 5)]
    if bad:
        clips += [(6001, "sadness", "decode_error", 1), (7002, "fear", "missing_file", 3)]
    for cid, word, reject, fold in clips:
        rel = f"data/clips/{cid:05d}.mp4"
        g = rng if reject is None else brng
        if reject != "missing_file":
            t.video(rel, _face_clip(g, 16, 256, 192, 0.38), 25, _MP4V, truncate=reject == "decode_error")
        t.expect(rel, "expression", "video", {"expression": word} if reject is None else None,
                 split="test" if fold == 1 else "train", reject=reject)
    if bad:
        # A clip of the compound set only: present, but in no single-set list.
        t.video("data/clips/08888.mp4", _face_clip(brng, 16, 256, 192, 0.38), 25, _MP4V)
    for k, (train, test) in _fold_lists(clips).items():
        for name, rows in (("train", train), ("test", test)):
            text = "".join(f"{cid:05d}.mp4 {word}\n" for cid, word, *_ in sorted(rows))
            t.text(f"Train & Test Set/single/no_caption/set_{k}/{name}.txt", text)
    return t.expected


def _ferv39k(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """FERV39k: `2_ClipsforFaceCrop/<Scene>/<Emotion>/<NNNN>/<NN>.jpg` frame folders and
    the header-less `4_setups/All_scenes/{train,test}_All.csv` lines `Action/Happy/0267 Happy`."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    clips = [("Action", "Happy", 267, "train", None), ("DailyLife", "Sad", 12, "train", None),
             ("Interview", "Neutral", 1503, "test", None), ("Talkshow", "Surprise", 88, "train", None),
             ("Crime", "Angry", 431, "test", None), ("War", "Fear", 77, "train", None)]
    if bad:
        clips += [("Business", "Disgust", 301, "test", "missing_file")]
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for scene, emo, num, split, reject in clips:
        clip = f"{scene}/{emo}/{num:04d}"
        folder = f"2_ClipsforFaceCrop/{clip}"
        g = rng if reject is None else brng
        n = int(g.integers(16, 23))  # the frame count varies per clip
        if reject is None:
            t.frames(folder, _face_clip(g, n, 160, 160, 0.55), lambda j: f"{j + 1:02d}.jpg")
        lines[split].append(f"{clip} {emo}\n")
        t.expect(folder, "expression", "video", {"expression": emo} if reject is None else None,
                 split=split, reject=reject)
    if bad:
        t.frames("2_ClipsforFaceCrop/Speech/Neutral/0042", _face_clip(brng, 12, 160, 160, 0.55),
                 lambda j: f"{j + 1:02d}.jpg")
    for split, rows in lines.items():
        t.text(f"4_setups/All_scenes/{split}_All.csv", "".join(rows))
    return t.expected


_CREMA_EMOTIONS = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral",
                   "SAD": "Sad"}


def _crema_d(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """CREMA-D: `VideoFlash/<Actor>_<Sentence>_<EMO>_<LEVEL>.flv`; the label is the file name."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    clips = [("1001_DFA_ANG_XX", None), ("1001_IEO_HAP_HI", None), ("1002_TIE_SAD_LO", None),
             ("1007_IWW_NEU_XX", None), ("1007_MTI_FEA_MD", None), ("1091_ITH_DIS_HI", None)]
    if bad:
        clips += [("1015_TSI_HAP_XX", "decode_error")]
    for stem, reject in clips:
        rel = f"VideoFlash/{stem}.flv"
        g = rng if reject is None else brng
        t.video(rel, _face_clip(g, 16, 240, 180, 0.4), 25, _FLV1, truncate=reject == "decode_error")
        actor, _, emo, _ = stem.split("_")
        t.expect(rel, "expression", "video", {"expression": _CREMA_EMOTIONS[emo]} if reject is None else None,
                 subject_id=actor, reject=reject)
    # The two metadata CSVs, quoted as in the repository.
    names = [[i + 1, stem] for i, (stem, _) in enumerate(clips)]
    t.text("SentenceFilenames.csv",
           _csv_text([["Stimulus_Number", "Filename"]] + names, quoting=csv.QUOTE_NONNUMERIC))
    actors = sorted({int(stem[:4]) for stem, _ in clips})
    demo = [[a, 20 + a % 50, "Female", "Caucasian", "Not Hispanic"] for a in actors]
    t.text("VideoDemographics.csv",
           _csv_text([["ActorID", "Age", "Sex", "Race", "Ethnicity"]] + demo, quoting=csv.QUOTE_NONNUMERIC))
    return t.expected


# --------------------------------------------------------------------------------------
# Expression, images
# --------------------------------------------------------------------------------------

_AFFECTNET_CODES = {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear", 5: "Disgust",
                    6: "Anger", 7: "Contempt", 8: "None", 9: "Uncertain", 10: "No-Face"}
_AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                     "expression,valence,arousal\n")


def _landmarks68(view: _View, w: int, h: int, face_frac: float) -> np.ndarray:
    """A rough 68-point iBUG layout placed on the rendered face (the readers do not use it;
    it only gives the csv column its real shape: 136 numbers)."""
    th = np.linspace(np.pi, 0, 17)
    jaw = np.stack([0.5 - 0.5 * np.cos(th), 0.45 + 0.55 * np.sin(th)], 1)
    brow_l = np.stack([np.linspace(0.12, 0.42, 5), [0.28, 0.24, 0.23, 0.24, 0.26]], 1)
    brow_r = brow_l[::-1] * [-1, 1] + [1, 0]
    nose = np.array([[0.5, 0.36], [0.5, 0.44], [0.5, 0.52], [0.5, 0.6],
                     [0.41, 0.65], [0.45, 0.66], [0.5, 0.67], [0.55, 0.66], [0.59, 0.65]])
    eye = np.array([[-0.07, 0], [-0.03, -0.025], [0.03, -0.025], [0.07, 0], [0.03, 0.02], [-0.03, 0.02]])
    mouth_t = np.linspace(np.pi, -np.pi, 13)[:12]
    mouth_o = np.stack([0.5 - 0.18 * np.cos(mouth_t), 0.8 - 0.06 * np.sin(mouth_t)], 1)
    mouth_t = np.linspace(np.pi, -np.pi, 9)[:8]
    mouth_i = np.stack([0.5 - 0.12 * np.cos(mouth_t), 0.8 - 0.025 * np.sin(mouth_t)], 1)
    unit = np.vstack([jaw, brow_l, brow_r, nose, eye + [0.31, 0.4], eye + [0.69, 0.4], mouth_o, mouth_i])
    (cx, cy), side = _FACE_AT[view.photo]
    src = np.array([cx, cy]) + (unit - 0.5) * side
    return np.hstack([src, np.ones((68, 1))]) @ _view_matrix(view, w, h, face_frac).T


def _affectnet(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """AffectNet (manually annotated part): `Manually_Annotated_file_lists/{training,validation}.csv`
    with the quoted header, images under `Manually_Annotated/Manually_Annotated_Images/<dir>/`."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    img_root = "Manually_Annotated/Manually_Annotated_Images"
    # (csv, code, extension, reject); extensions vary in case in the real download.
    items = [("training", 1, "jpg", None), ("training", 0, "jpg", None), ("training", 6, "png", None),
             ("training", 7, "jpg", None), ("validation", 3, "JPG", None), ("validation", 2, "jpg", None)]
    if bad:
        items += [("training", 4, "jpg", "decode_error"), ("training", 5, "jpg", "no_face"),
                  ("training", 8, "jpg", "unknown_label"), ("validation", 1, "jpg", "missing_file")]
    rows: dict[str, list[str]] = {"training": [], "validation": []}
    for listing, code, ext, reject in items:
        g = rng if reject is None else brng
        w, h = [(224, 224), (256, 208), (208, 248)][int(g.integers(3))]
        name = f"{int(g.integers(1, 1400))}/{bytes(g.integers(0, 256, 28, dtype=np.uint8)).hex()}.{ext}"
        view = _random_view(g)
        if reject == "no_face":
            t.image(f"{img_root}/{name}", _empty_picture(g, w, h)[0])
        elif reject != "missing_file":
            t.image(f"{img_root}/{name}", _render(view, w, h, 0.45), truncate=reject == "decode_error")
        x, y, fw, fh = _face_box(view, w, h, 0.45)
        lm = ";".join(f"{v:.2f}" for v in _landmarks68(view, w, h, 0.45).ravel())
        va = "-2,-2" if code >= 8 else f"{g.uniform(-1, 1):.6f},{g.uniform(-1, 1):.6f}"
        rows[listing].append(f"{name},{max(x, 0)},{max(y, 0)},{fw},{fh},{lm},{code},{va}\n")
        t.expect(f"{img_root}/{name}", "expression", "image",
                 {"expression": _AFFECTNET_CODES[code]} if reject is None else None,
                 split="train" if listing == "training" else "test", reject=reject)
    if bad:
        # An image of the download that neither list names.
        t.image(f"{img_root}/77/{bytes(brng.integers(0, 256, 28, dtype=np.uint8)).hex()}.jpg",
                _render(_random_view(brng), 224, 224, 0.45))
    for listing, body in rows.items():
        t.text(f"Manually_Annotated_file_lists/{listing}.csv", _AFFECTNET_HEADER + "".join(body))
    return t.expected


_RAFDB_CLASSES = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger",
                  7: "Neutral"}


def _rafdb(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """RAF-DB basic (root = `basic/`): `EmoLabel/list_patition_label.txt` lines
    `train_00001.jpg 5`, images `Image/original/<name>`; the split is the name prefix."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    items = [("train_00001.jpg", 5, None), ("train_00002.jpg", 4, None), ("train_00007.jpg", 1, None),
             ("test_0001.jpg", 7, None), ("test_0002.jpg", 6, None), ("test_0005.jpg", 3, None)]
    if bad:
        items += [("train_00003.jpg", 2, "multiple_faces"), ("test_0003.jpg", 4, "missing_file")]
    # The label file is sorted like the real one: all train names, then all test names.
    items.sort(key=lambda it: (not it[0].startswith("train"), it[0]))
    for name, label, reject in items:
        rel = f"Image/original/{name}"
        g = rng if reject is None else brng
        w, h = int(g.integers(10, 15)) * 20, int(g.integers(10, 15)) * 20  # originals vary in size
        if reject == "multiple_faces":
            t.image(rel, _two_faces(g, max(w, 320), h))
        elif reject is None:
            t.image(rel, _render(_random_view(g), w, h, 0.42))
        t.expect(rel, "expression", "image", {"expression": _RAFDB_CLASSES[label]} if reject is None else None,
                 split=name.split("_")[0], reject=reject)
    if bad:
        t.image("Image/original/train_00010.jpg", _render(_random_view(brng), 240, 240, 0.42))
    t.text("EmoLabel/list_patition_label.txt", "".join(f"{n} {lab}\n" for n, lab, _ in items))
    return t.expected


# --------------------------------------------------------------------------------------
# Action units
# --------------------------------------------------------------------------------------

_DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
_DISFA_FPS = 20


def _disfa_intensities(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n frames, 12 AUs) intensities 0..5, a slow random walk per AU; every frame gets at
    least one AU at >= 2 so that no good frame has an empty AU list."""
    start = rng.integers(0, 4, len(_DISFA_AUS))
    steps = rng.integers(-1, 2, (n, len(_DISFA_AUS)))
    inten = np.clip(start + np.cumsum(steps, 0), 0, 5)
    for i in range(n):
        if inten[i].max() < 2:
            inten[i, int(rng.integers(len(_DISFA_AUS)))] = 2
    return inten


def _disfa(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """DISFA: `Videos_LeftCamera/LeftVideoSN<id>_comp.avi` (20 fps) and one label file per
    subject and AU, `ActionUnit_Labels/SN<id>/SN<id>_au<k>.txt`, lines `<frame>,<intensity>`
    (1-based, no header). Each labelled frame is one item; intensity >= 2 is active."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    n = 12
    # (subject, what happens): a clean video; one where the face leaves for two frames;
    # one whose video is missing although its label files exist.
    subjects = [("SN001", None), ("SN010", None)]
    if bad:
        subjects[1] = ("SN010", "no_face_frames")
        subjects += [("SN023", "missing_file")]
    for sn, case in subjects:
        g = brng if case == "missing_file" else rng
        inten = _disfa_intensities(g, n)
        video = f"Videos_LeftCamera/LeftVideo{sn}_comp.avi"
        faceless: set[int] = set()
        if case != "missing_file":
            frames = _face_clip(g, n, 256, 192, 0.38)
            if case == "no_face_frames":
                # The subject looks away: frames 5 and 6 (0-based) show no face.
                faceless = {5, 6}
                empty = _empty_picture(brng, 256, 192, drift=2)
                frames[5], frames[6] = empty
            t.video(video, frames, _DISFA_FPS, _XVID)
        for k, au in enumerate(_DISFA_AUS):
            t.text(f"ActionUnit_Labels/{sn}/{sn}_au{au}.txt",
                   "".join(f"{i + 1},{int(inten[i, k])}\n" for i in range(n)))
        for i in range(n):
            reject = "missing_file" if case == "missing_file" else ("no_face" if i in faceless else None)
            label = None if reject else {"aus": [au for k, au in enumerate(_DISFA_AUS) if inten[i, k] >= 2]}
            t.expect(video, "au", "image", label, subject_id=sn, reject=reject, source_frame=i)
    return t.expected


_BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)  # the benchmark AUs: only these are ever 1
# Other AUs FACS-coded in BP4D: written 0 here, so that a reader that takes every column and
# one that keeps the 12 benchmark AUs agree; all other columns (and every AU >= 40) are 9.
_BP4D_CODED_ZERO = (5, 9, 11, 13, 16, 18, 19, 20, 22, 27, 28)
_BP4D_COLUMNS = tuple(range(1, 100))


def _bp4d(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """BP4D: `BP4D-training/<subj>/<task>/<frame>.jpg` (unpadded frame numbers) and
    `AUCoding/AU_OCC/<subj>_<task>.csv` with a header of AU numbers, column `0` the frame,
    values 0 absent / 1 present / 9 unknown; only the coded segment has rows."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    # (subject, task, first coded frame, number of good frames, bad frames)
    seqs = [("F001", "T1", 120, 3, ["missing_file"] if bad else []),
            ("M007", "T3", 45, 3, ["decode_error"] if bad else [])]
    for subj, task, first, n_good, bads in seqs:
        frames = _face_clip(rng, n_good, 156, 208, 0.5)
        if bads:
            frames += _face_clip(brng, len(bads), 156, 208, 0.5)
        rows = []
        for i, frame_rgb in enumerate(frames):
            num = first + i
            reject = None if i < n_good else bads[i - n_good]
            g = rng if reject is None else brng
            occ = {au: 9 for au in _BP4D_COLUMNS}
            occ.update({au: 0 for au in _BP4D_CODED_ZERO})
            occ.update({au: int(v) for au, v in zip(_BP4D_AUS, g.integers(0, 2, len(_BP4D_AUS)))})
            if not any(occ[au] == 1 for au in _BP4D_AUS):
                occ[_BP4D_AUS[int(g.integers(len(_BP4D_AUS)))]] = 1
            # One benchmark AU not coded in this frame: 9 means "not labelled", never "present".
            occ[_BP4D_AUS[int(g.integers(len(_BP4D_AUS)))]] = 9
            rows.append([num] + [occ[au] for au in _BP4D_COLUMNS])
            rel = f"BP4D-training/{subj}/{task}/{num}.jpg"
            if reject != "missing_file":
                t.image(rel, frame_rgb, truncate=reject == "decode_error")
            label = None if reject else {"aus": [au for au in _BP4D_COLUMNS if occ[au] == 1]}
            t.expect(rel, "au", "image", label, subject_id=subj, reject=reject)
        if bad:
            # A frame outside the coded segment: on disk, but no AU_OCC row.
            t.image(f"BP4D-training/{subj}/{task}/{first - 1}.jpg", _face_clip(brng, 1, 156, 208, 0.5)[0])
        t.text(f"AUCoding/AU_OCC/{subj}_{task}.csv",
               _csv_text([[0, *_BP4D_COLUMNS]] + rows))
    return t.expected


# --------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# What each photo plausibly shows; a few uncertain attributes are drawn at random per image.
_CELEBA_SURE = {
    "astronaut": {"Attractive", "Brown_Hair", "Smiling", "High_Cheekbones", "Wavy_Hair", "No_Beard",
                  "Wearing_Lipstick", "Mouth_Slightly_Open", "Young"},
    "grace_hopper": {"Gray_Hair", "Eyeglasses", "Wearing_Hat", "No_Beard", "Bags_Under_Eyes",
                     "Wearing_Necktie"},
}
_CELEBA_MAYBE = ("Arched_Eyebrows", "Oval_Face", "Pointy_Nose", "Heavy_Makeup", "Rosy_Cheeks", "Big_Nose")


def _celeba(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """CelebA (official Google-Drive layout): `Img/img_align_celeba/<6 digits>.jpg` (178x218),
    `Anno/list_attr_celeba.txt` (count line, names line, right-aligned -1/1 values) and
    `Eval/list_eval_partition.txt` (0 train, 1 valid, 2 test)."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    items = [(1, 0, None), (2, 0, None), (3, 0, None), (4, 1, None), (6, 2, None), (8, 2, None)]
    if bad:
        items += [(5, 0, "missing_file"), (7, 1, "no_face")]
    items.sort()
    attr_rows, part_rows = [], []
    for num, part, reject in items:
        name = f"{num:06d}.jpg"
        rel = f"Img/img_align_celeba/{name}"
        g = rng if reject is None else brng
        view = _random_view(g)
        positive = set(_CELEBA_SURE[view.photo]) | {a for a in _CELEBA_MAYBE if g.random() < 0.4}
        if reject == "no_face":
            t.image(rel, _empty_picture(g, 178, 218)[0])
        elif reject is None:
            t.image(rel, _render(view, 178, 218, 0.5))
        values = [1 if a in positive else -1 for a in CELEBA_ATTRIBUTES]
        attr_rows.append(name + "".join(f" {v:>2d}" for v in values) + "\n")
        part_rows.append(f"{name} {part}\n")
        label = None if reject else {"attributes": [a for a in CELEBA_ATTRIBUTES if a in positive]}
        t.expect(rel, "attribute", "image", label, split="train" if part == 0 else "test", reject=reject)
    if bad:
        # An aligned image without attribute or partition rows.
        t.image("Img/img_align_celeba/000009.jpg", _render(_random_view(brng), 178, 218, 0.5))
    # Line 2 carries the trailing space the real file is reported to have.
    t.text("Anno/list_attr_celeba.txt",
           f"{len(attr_rows)}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "".join(attr_rows))
    t.text("Eval/list_eval_partition.txt", "".join(part_rows))
    return t.expected


# --------------------------------------------------------------------------------------
# Age
# --------------------------------------------------------------------------------------

MORPH_HEADER = "id_num, picture_num, dob, doa, race, gender, facial_hair, age, age_diff, glasses, photo"


def _morph(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """MORPH II academic release (root = `MORPH_nonCommercial/`): `morph_2008_nonCommercial.csv`
    with the quoted header, `photo` = `Album2/<id>_<pic><M|F><age>.JPG` relative to the csv."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    # (id_num, birth year, [(picture_num, age, reject)]), several photos per person over years.
    people = [("003213", 1961, [(0, 20, None), (1, 23, None), (2, 27, None)]),
              ("125456", 1940, [(0, 51, None), (1, 53, None)])]
    if bad:
        people[0][2].append((3, 31, "missing_file"))
        people.append(("240017", 1975, [(0, 33, "decode_error")]))
    rows = []
    for person, (id_num, born, shots) in enumerate(people):
        photo = _PHOTO_NAMES[person % 2]  # one person, one photo
        first_age = shots[0][1]
        for pic, age, reject in shots:
            g = rng if reject is None else brng
            stem = f"{id_num}_{pic:02d}F{age}"
            rel = f"Album2/{stem}.JPG"
            if reject != "missing_file":
                t.image(rel, _render(_random_view(g, photo), 200, 240, 0.5), truncate=reject == "decode_error")
            # Born in the first half of the year, photographed in the second: `age` is exact.
            dob = f"{int(g.integers(1, 7)):02d}/{int(g.integers(1, 29)):02d}/{born}"
            doa = f"{int(g.integers(7, 13)):02d}/{int(g.integers(1, 29)):02d}/{born + age}"
            rows.append([id_num, f"{pic:02d}", dob, doa, "W", "F", 0, age, age - first_age,
                         int(photo == "grace_hopper"), rel])
            t.expect(rel, "age", "image", {"age": age} if reject is None else None, subject_id=id_num,
                     reject=reject)
    t.text("morph_2008_nonCommercial.csv", MORPH_HEADER + "\n" + _csv_text(rows))
    return t.expected


def _utkface(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """UTKFace: `UTKFace/<age>_<gender>_<race>_<yyyymmddHHMMSSFFF>.jpg.chip.jpg` (200x200);
    the label is the file name; one file lacks the race field, as three real ones do."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    items = [(26, "1_0", None), (34, "1_3", None), (58, "1_1", None), (71, "1_0", None),
             (9, "1_2", None), (39, "1", None)]
    if bad:
        items += [(45, "1_0", "no_face"), (62, "1_4", "decode_error")]
    for age, fields, reject in items:
        g = rng if reject is None else brng
        stamp = "2017" + "".join(f"{int(g.integers(lo, hi)):02d}" for lo, hi in
                                 ((1, 13), (1, 29), (0, 24), (0, 60), (0, 60))) + f"{int(g.integers(1000)):03d}"
        rel = f"UTKFace/{age}_{fields}_{stamp}.jpg.chip.jpg"
        if reject == "no_face":
            t.image(rel, _empty_picture(g, 200, 200)[0])
        else:
            t.image(rel, _render(_random_view(g), 200, 200, 0.5), truncate=reject == "decode_error")
        t.expect(rel, "age", "image", {"age": age} if reject is None else None, reject=reject)
    return t.expected


# --------------------------------------------------------------------------------------
# Deepfake
# --------------------------------------------------------------------------------------

def _ffpp(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """FaceForensics++ at c40 (the low quality FaceInstruct uses):
    `original_sequences/youtube/c40/videos/<id>.mp4`,
    `manipulated_sequences/<Method>/c40/videos/<target>_<source>.mp4`, and
    `splits/{train,val,test}.json` id pairs (val and test -> "test")."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    splits = {"train": [["071", "054"]], "val": [["112", "892"]], "test": [["300", "304"]]}
    split_of = {vid: ("train" if s == "train" else "test") for s, pairs in splits.items()
                for pair in pairs for vid in pair}
    # (method or None for real, video stem, reject)
    videos = [(None, "071", None), (None, "054", None), (None, "112", None), (None, "300", None),
              ("Deepfakes", "071_054", None), ("Face2Face", "054_071", None),
              ("FaceSwap", "112_892", None), ("NeuralTextures", "300_304", None)]
    if bad:
        videos += [(None, "892", "too_many_failed_frames"), ("Deepfakes", "304_300", "decode_error")]
    for method, stem, reject in videos:
        rel = (f"original_sequences/youtube/c40/videos/{stem}.mp4" if method is None
               else f"manipulated_sequences/{method}/c40/videos/{stem}.mp4")
        g = rng if reject is None else brng
        frames = (_mostly_faceless_clip(g, 16, 256, 192, 0.38) if reject == "too_many_failed_frames"
                  else _face_clip(g, 16, 256, 192, 0.38))
        t.video(rel, frames, 25, _MP4V, truncate=reject == "decode_error")
        target = stem.split("_")[0]
        label = {"fake": method is not None, "method": method} if reject is None else None
        t.expect(rel, "deepfake", "video", label, split=split_of[target], subject_id=target, reject=reject)
    if bad:
        # A manipulation mask video: media in the tree, but never an item.
        mask = [np.where(f > 128, 255, 0).astype(np.uint8)
                for f in _empty_picture(brng, 256, 192, drift=16)]
        t.video("manipulated_sequences/Deepfakes/masks/videos/071_054.mp4", mask, 25, _MP4V)
    for name, pairs in splits.items():
        t.text(f"splits/{name}.json", json.dumps(pairs, indent=2) + "\n")
    return t.expected


_FAKEAV_HEADER = ["source", "target1", "target2", "method", "category", "type", "race", "gender", "path", ""]


def _fakeavceleb(root: Path, rng: np.random.Generator, bad: bool) -> list[Expected]:
    """FakeAVCeleb v1.2 (root = `FakeAVCeleb_v1.2/`): `FakeAVCeleb/meta_data.csv` whose header
    ends with an empty 10th name; that column holds the folder relative to the root and
    `path` the file name. Real videos are category A; fakes are the `FakeVideo-*` types."""
    t, brng = _Tree(root, bad), _bad_rng(rng)
    # (source id, target1, method, category, type, race, gender, file, reject).
    # RealVideo-FakeAudio (B) rows are left out on purpose: whether their real face
    # counts as real or fake is UNKNOWN (reference), so no reader truth can be given.
    rows = [
        ("id00076", "-", "real", "A", "RealVideo-RealAudio", "African", "men", "00109.mp4", None),
        ("id01207", "-", "real", "A", "RealVideo-RealAudio", "Asian (East)", "women", "00028.mp4", None),
        ("id00076", "id00166", "faceswap", "C", "FakeVideo-RealAudio", "African", "men",
         "00109_id00166_faceswap.mp4", None),
        ("id04245", "id01207", "fsgan", "C", "FakeVideo-RealAudio", "Caucasian (European)", "women",
         "00017_id01207_fsgan.mp4", None),
        ("id00518", "id02051", "fsgan-wav2lip", "D", "FakeVideo-FakeAudio", "Asian (South)", "men",
         "00003_id02051_fsgan_wavtolip.mp4", None),
    ]
    if bad:
        rows.append(("id03117", "id00943", "wav2lip", "C", "FakeVideo-RealAudio", "Caucasian (American)",
                     "women", "00051_id00943_wavtolip.mp4", "missing_file"))
    table = [_FAKEAV_HEADER]
    for src, tgt, method, cat, typ, race, gender, file, reject in rows:
        folder = f"FakeAVCeleb/{typ}/{race}/{gender}/{src}"
        rel = f"{folder}/{file}"
        g = rng if reject is None else brng
        if reject != "missing_file":
            t.video(rel, _face_clip(g, 16, 224, 224, 0.5), 25, _MP4V)
        table.append([src, tgt, "-", method, cat, typ, race, gender, file, folder])
        fake = typ.startswith("FakeVideo")
        label = {"fake": fake, "method": method if fake else None} if reject is None else None
        t.expect(rel, "deepfake", "video", label, subject_id=src, reject=reject)
    t.text("FakeAVCeleb/meta_data.csv", _csv_text(table))
    return t.expected


# --------------------------------------------------------------------------------------

_BUILDERS = {
    "dfew": _dfew, "mafw": _mafw, "ferv39k": _ferv39k, "crema_d": _crema_d, "affectnet": _affectnet,
    "rafdb": _rafdb, "disfa": _disfa, "bp4d": _bp4d, "celeba": _celeba, "morph": _morph,
    "utkface": _utkface, "ffpp": _ffpp, "fakeavceleb": _fakeavceleb,
}


def build_tree(name: str, root: Path, *, seed: int = 0, bad: bool = True) -> list[Expected]:
    """Write dataset `name`'s tree under `root` (the dataset root as a user would pass it)
    and return what a reader must yield, one Expected per labelled item (good and bad).
    `bad=False` writes only good items. Byte-identical output per seed."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {SOURCES}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), SOURCES.index(name)])
    return _BUILDERS[name](root, rng, bad)


def build_all(root: Path, *, seed: int = 0, bad: bool = True) -> dict[str, list[Expected]]:
    """Every tree under root/<name>/ ."""
    return {name: build_tree(name, Path(root) / name, seed=seed, bad=bad) for name in SOURCES}

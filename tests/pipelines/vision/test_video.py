"""Video input/output, resampling and the smooth face-box track, on synthetic clips made
from a real face photo (the astronaut) moving smoothly through the frame."""

from __future__ import annotations

import os
import tracemalloc

import cv2
import numpy as np
import pytest

from pipelines.vision.face_photos import astronaut
from pipelines.vision.images import ImageRejected
from pipelines.vision.video import (
    TrackConfig,
    TrackRejected,
    crop_square,
    failed_fraction,
    frame_count_exact,
    jitter,
    natural_key,
    open_video,
    resample_indices,
    smooth_track,
    track_boxes,
    uniform_indices,
    write_video,
)
from schemas.common import RejectReason

FPS = 24.0


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def clip(photo: np.ndarray, n: int, size: int = 192) -> list[np.ndarray]:
    """n frames of `size` px: a window over the photo drifting smoothly (the face moves)."""
    out = []
    for i in range(n):
        dx = -20 - 20 * np.sin(i / 6)
        dy = -20 - 15 * np.cos(i / 9)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(cv2.warpAffine(photo, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return out


def read_all(path, **kw) -> list[tuple[int, np.ndarray]]:
    with open_video(path, **kw) as source:
        return list(source.frames())


# Reading and writing ------------------------------------------------------------------------


@pytest.mark.parametrize("name,fourcc", [
    ("clip.mp4", "mp4v"), ("xvid.avi", "XVID"), ("mjpg.avi", "MJPG"), ("clip.flv", 2),
])
def test_codecs_round_trip_count_rate_and_rgb_order(tmp_path, photo, name, fourcc):
    frames = clip(photo, 12)
    assert write_video(tmp_path / name, frames, FPS, fourcc=fourcc) == 12
    source = open_video(tmp_path / name)
    assert not source.is_folder and source.fps == FPS and source.size == (192, 192)
    assert source.frame_count == 12
    got = list(source.frames())
    assert [i for i, _ in got] == list(range(12))
    for _, frame in got:
        assert frame.shape == (192, 192, 3) and frame.dtype == np.uint8
    want, seen = frames[6].reshape(-1, 3).mean(0), got[6][1].reshape(-1, 3).mean(0)
    assert want[0] - want[2] > 30  # the photo is much redder than blue: a swap would show
    assert np.abs(seen - want).max() < 4, (seen, want)


def test_write_video_round_trip_exact_count(tmp_path, photo):
    frames = clip(photo, 37)
    for name in ("out.mp4", "out.avi"):
        assert write_video(tmp_path / name, iter(frames), 25.0) == 37  # a generator is fine
        assert frame_count_exact(tmp_path / name) == 37
        assert open_video(tmp_path / name).fps == 25.0


def test_write_video_refusals(tmp_path, photo):
    frames = clip(photo, 3)
    with pytest.raises(ValueError, match="cannot write .mkv"):
        write_video(tmp_path / "a.mkv", frames, FPS)
    with pytest.raises(ValueError, match="odd"):
        write_video(tmp_path / "a.mp4", [f[:191] for f in frames], FPS)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "b.mp4", [], FPS)
    with pytest.raises(ValueError, match="the first is 192x192"):
        write_video(tmp_path / "c.mp4", [frames[0], frames[1][:190]], FPS)
    assert not (tmp_path / "c.mp4").exists()  # the partial file is removed
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "d.mp4", [frames[0].astype(np.float32)], FPS)


def test_frame_folder_natural_order(tmp_path, photo):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = clip(photo, 12)
    for i, frame in enumerate(frames, start=1):  # 1.jpg .. 12.jpg, unpadded
        stamped = frame.copy()
        stamped[:24, :24] = 20 * i  # which frame this is, readable after JPEG
        cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(stamped, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not a frame")
    source = open_video(folder, folder_fps=30.0)
    assert source.is_folder and source.fps == 30.0 and source.frame_count == 12
    got = list(source.frames())
    assert [i for i, _ in got] == list(range(12))
    stamps = [float(f[4:20, 4:20].mean()) for _, f in got]
    assert np.allclose(stamps, [20 * i for i in range(1, 13)], atol=3), stamps
    seen, want = got[5][1][40:].reshape(-1, 3).mean(0), frames[5][40:].reshape(-1, 3).mean(0)
    assert np.abs(seen - want).max() < 3  # RGB order kept
    assert frame_count_exact(folder) == 12
    assert sorted(["10.jpg", "2.jpg", "1.jpg", "frame_10.png", "frame_9.png"], key=natural_key) == [
        "1.jpg", "2.jpg", "10.jpg", "frame_9.png", "frame_10.png"]


def test_missing_empty_and_undecodable(tmp_path):
    for missing in (tmp_path / "none.mp4", tmp_path / "no_folder"):
        with pytest.raises(ImageRejected) as exc:
            open_video(missing)
        assert exc.value.reason is RejectReason.MISSING_FILE
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    for bad in (empty, tmp_path / "garbage.mp4"):
        with pytest.raises(ImageRejected) as exc:
            open_video(bad)
        assert exc.value.reason is RejectReason.DECODE_ERROR


def test_truncated_files(tmp_path, photo):
    frames = clip(photo, 24)
    # mp4v: OpenCV writes the moov atom (the index) at the end, so half a file does not open.
    write_video(tmp_path / "full.mp4", frames, FPS)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected) as exc:
        open_video(tmp_path / "half.mp4")
    assert exc.value.reason is RejectReason.DECODE_ERROR
    # AVI: opens, claims the full length, and yields the frames before the cut.
    write_video(tmp_path / "full.avi", frames, FPS)
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    source = open_video(tmp_path / "half.avi")
    got = sum(1 for _ in source.frames())
    assert source.frame_count == 24 and 0 < got < 24
    assert frame_count_exact(tmp_path / "half.avi") == got


def test_frames_stream_without_holding_the_video(tmp_path, photo):
    big = cv2.resize(photo, (320, 320))
    write_video(tmp_path / "long.mp4", (f for f in clip(big, 300, size=256)), FPS)
    source = open_video(tmp_path / "long.mp4")
    one = 256 * 256 * 3
    tracemalloc.start()
    try:
        count = 0
        for _, frame in source.frames():
            count += int(frame[0, 0, 0] >= 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300  # all of them would need 300 * 196 KB = 59 MB
    assert peak < 10 * one < 2_000_000, peak


def test_remote_paths(tmp_path, photo):
    from tests.pipelines.common import objstore

    objstore.use_root(tmp_path)
    frames = clip(photo, 10)
    assert write_video("fxobj://v/clip.mp4", frames, FPS) == 10
    assert (tmp_path / "v" / "clip.mp4").is_file()
    with open_video("fxobj://v/clip.mp4") as source:
        assert source.fps == FPS and sum(1 for _ in source.frames()) == 10
        local = source._local_path
    assert not os.path.exists(local)  # the local copy is gone after close
    with pytest.raises(ValueError, match="closed"):
        next(source.frames())
    for i, frame in enumerate(frames[:3], start=1):
        (tmp_path / "v" / "f").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "v" / "f" / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    got = read_all("fxobj://v/f")
    assert len(got) == 3 and np.array_equal(got[2][1], frames[2])
    with pytest.raises(ImageRejected) as exc:
        open_video("fxobj://v/absent.mp4")
    assert exc.value.reason is RejectReason.MISSING_FILE


# Sampling -----------------------------------------------------------------------------------


def test_resample_indices():
    for n, src, dst in [(90, 30, 24), (91, 30, 24), (37, 30, 24), (40, 20, 24), (41, 20, 24), (0, 30, 24)]:
        idx = resample_indices(n, src, dst)
        assert len(idx) == int(np.ceil(n * dst / src - 1e-9))  # output times k/dst < n/src
        assert all(0 <= i < n for i in idx) and idx == sorted(idx)
        assert idx == [int(np.floor(k * src / dst + 1e-9)) for k in range(len(idx))]
    assert len(resample_indices(90, 30, 24)) == 72  # 3 s -> floor(3 * 24)
    assert resample_indices(10, 30, 24) == [0, 1, 2, 3, 5, 6, 7, 8]  # drops every 5th
    up = resample_indices(40, 20, 24)  # 2 s -> 48 frames, every 5th source frame twice
    assert len(up) == 48 and len(set(up)) == 40
    assert resample_indices(24, 24, 24) == list(range(24))
    ntsc = resample_indices(3000, 30000 / 1001, 24)  # exact-fraction rates: no drift
    assert len(ntsc) == 2403 and ntsc[-1] == 2999
    with pytest.raises(ValueError):
        resample_indices(10, 0, 24)


def test_uniform_indices():
    for n in (1, 2, 7, 8, 9, 30, 100, 1001):
        assert uniform_indices(n, 8) == np.linspace(0, n - 1, 8, dtype=int).tolist()
    assert uniform_indices(100, 8) == [0, 14, 28, 42, 56, 70, 84, 99]  # truncated, not rounded
    assert uniform_indices(3, 8) == [0, 0, 0, 0, 1, 1, 1, 2]  # n < k repeats
    assert uniform_indices(0, 8) == []


# The face-box track -------------------------------------------------------------------------


def true_path(n: int, fps: float = FPS) -> np.ndarray:
    t = np.arange(n) / fps
    cx = 200 + 20 * np.sin(2 * np.pi * t / 6)
    cy = 150 + 10 * np.cos(2 * np.pi * t / 5)
    side = 100 + 5 * np.sin(2 * np.pi * t / 8)
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def test_smooth_track_removes_detector_jitter():
    truth = true_path(240)
    noisy = truth + np.random.default_rng(7).normal(0, 3, truth.shape)  # sigma 3 px, 100 px box
    smooth = smooth_track([tuple(b) for b in noisy], FPS)
    assert smooth.shape == (240, 4) and smooth.dtype == np.float64
    j_noisy, j_smooth = jitter(noisy), jitter(smooth)
    assert j_noisy > 0.03 and j_noisy / j_smooth >= 4, (j_noisy, j_smooth)
    assert np.abs(smooth - truth).mean() < 2
    assert np.allclose(smooth[:, 2] - smooth[:, 0], smooth[:, 3] - smooth[:, 1])  # square
    assert jitter(truth) < 0.001


def test_smooth_track_gaps_ends_and_linear_motion():
    n = 60
    k = np.arange(n, dtype=np.float64)
    linear = np.stack([2 * k, k, 2 * k + 80, k + 80], axis=1)  # moving at constant speed
    boxes = [tuple(b) for b in linear]
    for gap in (*range(10, 20), 33, 40, 41):
        boxes[gap] = None
    smooth = smooth_track(boxes, FPS)
    assert np.abs(smooth - linear).max() < 1e-9  # gaps interpolated, no lag, no edge shrink
    held = [None, None, (10, 10, 50, 50), (20, 10, 60, 50), None]
    raw = smooth_track(held, FPS, TrackConfig(smoothing_s=0))
    assert np.allclose(raw, [[10, 10, 50, 50]] * 3 + [[20, 10, 60, 50]] * 2)
    # a non-square box becomes a square of the mean side around the same centre
    assert np.allclose(smooth_track([(0, 0, 40, 20)], FPS), [[5, -5, 35, 25]])
    with pytest.raises(ValueError):
        smooth_track([None, None], FPS)


def test_failed_fraction_and_reject():
    box = (0, 0, 10, 10)
    assert failed_fraction([box, None, box, (0, np.nan, 1, 1)]) == 0.5
    assert failed_fraction([]) == 1.0
    ok = [box] * 7 + [None] * 3  # exactly 30 %: kept, like the reference's `> 0.3`
    assert track_boxes(ok, FPS).shape == (10, 4)
    with pytest.raises(TrackRejected) as exc:
        track_boxes([box] * 6 + [None] * 4, FPS)
    assert exc.value.reason is RejectReason.TOO_MANY_FAILED_FRAMES


def test_crop_square(photo):
    box = (40.0, 30.0, 140.0, 130.0)
    crop, m = crop_square(photo, box, 256)
    assert crop.shape == (256, 256, 3) and m.shape == (2, 3)
    corners = np.array([[40, 30, 1], [140, 130, 1]], np.float64) @ m.T
    assert np.allclose(corners, [[0, 0], [256, 256]])
    inner = cv2.resize(photo[30:130, 40:140], (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.abs(crop[20:-20, 20:-20].astype(int) - inner[20:-20, 20:-20]).mean() < 6
    # off the frame's left edge: black there, the image where the box overlaps it
    crop, m = crop_square(photo, (-50.0, 0.0, 50.0, 100.0), 100)
    assert crop[:, :48].max() == 0 and crop[:, 52:].mean() > 20

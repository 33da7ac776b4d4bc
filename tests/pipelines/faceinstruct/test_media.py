"""Face crops of images, videos and frames of videos: the crop and its landmarks line up,
a long video streams (never all its frames in memory), the frames of one video are decoded
in one pass, and a frame past the video's end is rejected with the frame count."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from pipelines.faceinstruct.media import FaceCropper, MediaConfig
from pipelines.vision.face_photos import astronaut
from pipelines.vision.video import write_video
from schemas.common import PairRejected
from schemas.faceinstruct import FaceItem


@pytest.fixture(scope="module")
def cropper():
    with FaceCropper(MediaConfig()) as c:
        yield c


def clip(path, n: int, size: int = 256) -> str:
    photo = astronaut()
    frames = (cv2.warpAffine(photo, np.array([[0.7, 0, -30 + 0.2 * t], [0, 0.7, -10 + 0.1 * t]]), (size, size))
              for t in range(n))
    write_video(path, frames, 25.0)
    return str(path)


def item(media: str, media_type: str, frame: int | None = None) -> FaceItem:
    return FaceItem(source_dataset="t", source_path=media.rsplit("/", 1)[-1], source_frame=frame, media=media,
                    media_type=media_type, task="au", label={"aus": [12]}, origin="test")


def test_image_crop_and_landmarks_line_up(cropper, tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    media = cropper.image(item(str(path), "image"))
    crop = cv2.imdecode(np.frombuffer(media.image, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (256, 256, 3) and media.landmarks.shape == (1, 68, 2)
    points = media.landmarks[0]
    # The eyes sit in the upper half of a face crop, the mouth in the lower, the nose between.
    eyes, mouth, nose = points[36:48, 1].mean(), points[48:68, 1].mean(), points[30, 1]
    assert 0.2 < eyes < nose < mouth < 0.95
    # The transform maps the source to the crop: the mesh's own crop points agree with it.
    assert np.allclose(media.transform[:, :2], np.diag([media.transform[0, 0]] * 2))


def test_a_long_video_streams(cropper, tmp_path):
    path = clip(tmp_path / "long.mp4", 300)
    tracemalloc.start()
    media = cropper.video(item(path, "video"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    all_frames = 300 * 256 * 256 * 3
    assert peak < all_frames / 3, f"{peak / 1e6:.1f} MB at peak; the frames alone are {all_frames / 1e6:.1f} MB"
    assert media.track_frames == 288 and len(media.landmarks) == 288 and len(media.frames) == 8
    assert media.track_jitter < media.detector_jitter


def test_frames_of_a_video_are_decoded_once(cropper, tmp_path, monkeypatch):
    from pipelines.vision import video as video_module

    path = clip(tmp_path / "frames.mp4", 20)
    opened = []
    real_open = video_module.VideoSource.frames

    def counting(self):
        opened.append(self.path)
        return real_open(self)

    monkeypatch.setattr(video_module.VideoSource, "frames", counting)
    items = [item(path, "image", frame) for frame in (2, 7, 19, 25)]
    results = list(cropper.video_frames(items))
    assert opened == [path]
    done = [r for r in results if not isinstance(r, tuple)]
    assert sorted(r.item.source_frame for r in done) == [2, 7, 19]
    (late, exc), = [r for r in results if isinstance(r, tuple)]
    assert late.source_frame == 25 and isinstance(exc, PairRejected) and exc.reason.value == "decode_error"
    assert "20 frames" in exc.detail

"""`quiet_native_stderr`: native log lines written to fd 2 inside the block are dropped, the
rest is passed on, and fd 2 is the same file afterwards however the block ends."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from pipelines.vision.images import ImageRejected, decode_image
from pipelines.vision.native_stderr import VERBOSE_ENV, quiet_native_stderr, without_native_lines
from schemas.common import RejectReason

# As the libraries write them (seen on runs of the pipeline).
NATIVE = (
    (b"W0000 00:00:1796068202.265999   22141 inference_feedback_manager.cc:114] Feedback manager "
     b"requires a model with a single signature inference. Disabling support for feedback tensors.\n"),
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"libpng error: PNG input buffer is incomplete\n",
    b"[ WARN:0@2.263] global grfmt_png.cpp:678 read_from_io PNG input buffer is incomplete\n",
)
OURS = b"fifa_annotate: analysing: 3/11 pairs (27%), 0.81 pair/s, elapsed 0:04, left ~0:10\n"
# OpenCV reads OPENCV_LOG_LEVEL once, when it loads (before any test runs).
OPENCV_SILENCED = os.environ.get("OPENCV_LOG_LEVEL", "").upper() in ("SILENT", "FATAL", "ERROR")


def fd2() -> tuple[int, int]:
    """What fd 2 is: (device, inode) of the file behind it."""
    st = os.fstat(2)
    return st.st_dev, st.st_ino


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)


def test_native_lines_are_dropped_and_ours_passed_on(capfd):
    before = fd2()
    with quiet_native_stderr():
        for line in NATIVE:
            os.write(2, line)
        os.write(2, OURS)
        assert fd2() != before  # redirected meanwhile
    assert fd2() == before
    assert capfd.readouterr().err == OURS.decode()


def test_fd2_is_restored_when_the_block_raises(capfd):
    before, fds = fd2(), open_fds()
    with pytest.raises(RuntimeError, match="inside"), quiet_native_stderr():
        os.write(2, NATIVE[0] + OURS)
        raise RuntimeError("inside")
    assert fd2() == before and open_fds() == fds  # nothing left open
    os.write(2, b"after\n")
    assert capfd.readouterr().err == OURS.decode() + "after\n"


def test_overlapping_blocks_on_threads_restore_fd2(capfd):
    """fd 2 is the process's: the first thread in redirects it, the last one out restores it."""
    before = fd2()
    inside = threading.Barrier(4)

    def work(i: int) -> None:
        with quiet_native_stderr():
            inside.wait()  # all four inside at once
            os.write(2, NATIVE[i % len(NATIVE)] + f"worker {i}\n".encode())
            inside.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fd2() == before
    assert sorted(capfd.readouterr().err.splitlines()) == [f"worker {i}" for i in range(4)]


def test_verbose_lets_everything_through(capfd, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_native_stderr():
        os.write(2, NATIVE[0] + OURS)
    assert capfd.readouterr().err == (NATIVE[0] + OURS).decode()


def test_line_ends_and_carriage_returns_are_kept():
    redraw = b"\rfifa_annotate: 1/3 pairs\rfifa_annotate: 2/3 pairs"
    assert without_native_lines(NATIVE[3] + redraw + b"\n" + NATIVE[4]) == redraw + b"\n"


def truncated_png() -> bytes:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    image = np.dstack([ramp, ramp[:, ::-1], np.full_like(ramp, 90)])
    return cv2.imencode(".png", image)[1].tobytes()[:500]  # as `head -c 500` leaves it


def corrupt_png() -> bytes:
    """A whole PNG (its IEND chunk in place) whose image data is damaged: libpng itself
    fails on it, and would say so on stderr."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    data = bytearray(cv2.imencode(".png", np.dstack([ramp, ramp[:, ::-1], ramp]))[1].tobytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(16)
    return bytes(data)


def test_a_truncated_png_is_rejected_without_a_word_on_stderr(capfd):
    with pytest.raises(ImageRejected) as info:
        decode_image(truncated_png())
    assert info.value.reason is RejectReason.DECODE_ERROR
    assert info.value.detail.startswith("truncated PNG")  # the error is the row's detail
    with pytest.raises(ImageRejected) as info:
        decode_image(corrupt_png())
    assert info.value.detail.startswith("cannot decode image: ")
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(OPENCV_SILENCED, reason="OPENCV_LOG_LEVEL keeps OpenCV quiet in this process")
def test_with_verbose_opencv_says_it_itself(capfd, monkeypatch):
    """The check above can fail: the same decode, verbose, prints OpenCV's or libpng's line."""
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with pytest.raises(ImageRejected):
        decode_image(corrupt_png())
    assert "libpng error" in capfd.readouterr().err

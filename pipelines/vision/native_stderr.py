"""The native libraries' log lines, kept off stderr unless a person asks for them.

mediapipe (absl and TFLite, which log straight to stderr before `absl::InitializeLog()`),
libpng and OpenCV write to file descriptor 2 from C and C++: no Python logger or warnings
filter reaches them, and mediapipe 0.10.21 ignores GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL.
`quiet_native_stderr()` points fd 2 at a temporary file around such a call, then puts fd 2
back and passes on every captured line that is not a native log line (another thread's
progress line written meanwhile, say).  With FACEXT_VERBOSE=1 (what `--verbose` sets) it
does nothing.

It lives here, on the lowest floor that calls native code, so that `pipelines.vision` may use
it; `pipelines.common.logs` holds the rest of the policy (flags, warnings, loggers, workers).
A process that crashes inside the call loses the native library's last words: re-run with
`--verbose` to see them.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "FACEXT_VERBOSE"

# One line a native library logs: absl ("W0000 00:00:1796068202.265999   22141 file.cc:114] ..."),
# absl's and TFLite's own ("WARNING: All log messages before absl::InitializeLog() ...",
# "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), libpng ("libpng error: ...") and
# OpenCV ("[ WARN:0@2.263] global grfmt_png.cpp:678 read_from_io ...").
NATIVE_LINE = re.compile(
    rb"[IWEF]\d{4} [\d:.]+ +\d+ [^\]\n]+\] "
    rb"|(?:INFO|WARNING|ERROR|VERBOSE): "
    rb"|libpng (?:error|warning): "
    rb"|\[ ?(?:FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE):\d+@"
    rb"|\[[\w,]+ @ 0x[0-9a-f]+\] "  # FFmpeg inside OpenCV: "[mov,mp4,m4a @ 0x55d0] moov atom not found"
)


def verbose_requested() -> bool:
    """True when FACEXT_VERBOSE asks for everything (set by `--verbose`, inherited by workers)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "no", "off")


class _Redirect:
    """fd 2 pointed at one capture file while any thread is inside `quiet_native_stderr`.

    fd 2 belongs to the whole process, so overlapping calls (Beam's multi-threading
    workers) share one redirect: the first in sets it up, the last out restores fd 2.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.depth = 0
        self.saved_fd: int | None = None
        self.capture = None

    def enter(self) -> bool:
        """False when fd 2 cannot be redirected (none open, no temporary folder): the call
        then runs as is."""
        with self.lock:
            if self.depth == 0 and not self._redirect():
                return False
            self.depth += 1
            return True

    def _redirect(self) -> bool:
        _flush_stderr()
        try:
            capture = tempfile.TemporaryFile()  # noqa: SIM115 - open from enter to leave
        except OSError:
            return False
        try:
            saved_fd = os.dup(2)
            try:
                os.dup2(capture.fileno(), 2)
            except OSError:
                os.close(saved_fd)
                raise
        except OSError:
            capture.close()
            return False
        self.saved_fd, self.capture = saved_fd, capture
        return True

    def leave(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth:
                return
            _flush_stderr()
            saved_fd, capture = self.saved_fd, self.capture
            self.saved_fd = self.capture = None
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            with capture:
                capture.seek(0)
                kept = without_native_lines(capture.read())
        if kept:
            _write_all(2, kept)


_REDIRECT = _Redirect()


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Runs the block with the native libraries' log lines kept off stderr (see the module).

    fd 2 is restored however the block ends, an exception included.
    """
    if verbose_requested() or not _REDIRECT.enter():
        yield
        return
    try:
        yield
    finally:
        _REDIRECT.leave()


def without_native_lines(data: bytes) -> bytes:
    """`data` less the lines native libraries log (line ends and carriage returns kept)."""
    return b"".join(line for line in data.splitlines(keepends=True) if not NATIVE_LINE.match(line))


def _flush_stderr() -> None:
    """What Python holds for stderr goes out to the fd it was meant for before fd 2 changes."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):  # None, closed, or gone
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return

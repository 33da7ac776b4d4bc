"""Progress of long local work for a person: items done, rate, time left.

On a terminal one line is redrawn in place (at most every `tty_interval` seconds); in a
log (stderr not a terminal) a line is written at most every `log_interval` seconds, so
a CI log of an hour-long run gets a few dozen lines, not thousands.  The last line is
always written when the work ends.

    with Progress(total=len(files), desc="upload", unit="file") as progress:
        for f in files:
            send(f)
            progress.advance(1, size=f.size)   # size adds a byte rate

The rate is what was done since the line started (not counts it found already done)
over the time since then, and is shown only once `min_rate_s` have passed: counts that
arrive in jumps (workers write theirs once a second) over a near-zero time would
otherwise read as hundreds of thousands of items a second.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Self, TextIO


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def progress_enabled() -> bool:
    """False when FACEXT_PROGRESS=0 (tests, scripts that parse stderr)."""
    return os.environ.get("FACEXT_PROGRESS", "1") not in ("0", "false", "no", "off")


class Progress:
    """Counts done items of a known (or estimated) total and shows rate and ETA."""

    def __init__(self, total: int | None, desc: str, unit: str = "item", *,
                 stream: TextIO | None = None, tty_interval: float = 0.2, log_interval: float = 30.0,
                 enabled: bool | None = None, done: int = 0, min_rate_s: float = 2.0):
        """`done`: items already done when the line starts (not counted in the rate)."""
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled() if enabled is None else enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval if self.tty else log_interval
        self.min_rate_s = min_rate_s
        self.done = self._done_at_start = done
        self.bytes = 0
        self.started = time.monotonic()
        self._shown_at = float("-inf")
        self._shown_done = -1
        self._width = 0

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self, n: int = 1, size: int = 0) -> None:
        self.done += n
        self.bytes += size
        self._maybe_show()

    def set(self, done: int, size: int | None = None) -> None:
        """Sets the count (for work counted elsewhere, e.g. by pipeline workers)."""
        self.done = done
        if size is not None:
            self.bytes = size
        self._maybe_show()

    def rate(self) -> float | None:
        """Items a second since the line started; None before `min_rate_s` have passed."""
        elapsed = time.monotonic() - self.started
        if elapsed < max(self.min_rate_s, 1e-9):
            return None
        return max(self.done - self._done_at_start, 0) / elapsed

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 0.0)
        rate = self.rate()
        total = f"/{self.total}" if self.total else ""
        parts = [f"{self.desc}: {self.done}{total} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * min(self.done / self.total, 1):.0f}%)"
        if rate is not None:
            parts.append(f"{rate:.2f} {self.unit}/s" if rate < 10 else f"{rate:.0f} {self.unit}/s")
            if self.bytes:
                parts.append(f"{_bytes(self.bytes / elapsed)}/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if rate and self.total and self.done < self.total:
            parts.append(f"left ~{_duration((self.total - self.done) / rate)}")
        return ", ".join(parts)

    def _maybe_show(self) -> None:
        now = time.monotonic()
        if now - self._shown_at >= self.interval:
            self._shown_at = now
            self._show()

    def _show(self, final: bool = False) -> None:
        if not self.enabled:
            return
        text = self.line()
        self._shown_done = self.done
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The last line: on a terminal it ends the redrawn line; a log gets it unless the
        line before already said the same count."""
        if self.tty or (self.done and self.done != self._shown_done):
            self._show(final=True)


# --- progress of a local Beam run -----------------------------------------------------------------


class CountInto:
    """A DoFn body (wrapped by `count_into`) that counts the elements it sees into a file
    of its own under `folder`, rewritten at most once a second: worker processes of a local
    runner share the disk, so the driver can sum the files while the pipeline runs."""

    def __init__(self, folder: str, weight=None):
        self.folder, self.weight = folder, weight
        self.path, self.count, self.written_at = None, 0, 0.0

    def add(self, element) -> None:
        self.count += self.weight(element) if self.weight else 1
        if time.monotonic() - self.written_at >= 1.0:
            self.flush()

    def flush(self) -> None:
        import uuid

        if self.path is None:
            os.makedirs(self.folder, exist_ok=True)
            self.path = os.path.join(self.folder, f"{uuid.uuid4().hex}.count")
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self.count))
        os.replace(tmp, self.path)
        self.written_at = time.monotonic()


def count_into(folder: str, weight=None):
    """A Beam DoFn that counts elements for `watch_counts` and outputs nothing."""
    import apache_beam as beam

    class _Count(beam.DoFn):
        def setup(self) -> None:
            self.counter = CountInto(folder, weight)

        def process(self, element):
            self.counter.add(element)
            return ()

        def finish_bundle(self) -> None:
            self.counter.flush()

    return _Count()


def read_counts(folder: str) -> int:
    total = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.endswith(".count"):
            try:
                with open(os.path.join(folder, name)) as f:
                    total += int(f.read() or 0)
            except (OSError, ValueError):
                continue  # being replaced right now; the next poll reads it
    return total


class watch_counts:
    """While the block runs, shows the `count_into` counts of a local run in phases: each
    phase is (description, folder, total), its total a number or the name of an earlier
    folder (whose count is then the total); the line follows the first unfinished phase."""

    def __init__(self, root: str, phases: list[tuple[str, str, int | str]], unit: str,
                 poll_s: float = 0.5):
        import threading

        self.root, self.phases, self.unit, self.poll_s = root, phases, unit, poll_s
        self.progress: Progress | None = None
        self._current = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facext-progress", daemon=True)

    def _state(self) -> tuple[int, int, int | None]:
        """(phase index, done, total) of the first unfinished phase (the last when all are)."""
        folders = {f for _, folder, total in self.phases for f in (folder, total) if isinstance(f, str)}
        counts = {folder: read_counts(os.path.join(self.root, folder)) for folder in folders}
        for i, (_, folder, total) in enumerate(self.phases):
            total = counts[total] if isinstance(total, str) else total
            if i == len(self.phases) - 1 or counts[folder] < (total or 0):
                return i, counts[folder], total
        raise AssertionError("unreachable")

    def _update(self) -> None:
        phase, done, total = self._state()
        if phase != self._current:
            if self.progress is not None:  # the phase before is complete
                self.progress.done = max(self.progress.done, self.progress.total or 0)
                self.progress.close()
            self._current = phase
            # what the phase did before the line started is not in its rate
            self.progress = Progress(total, self.phases[phase][0], self.unit, done=done)
            if done:
                self.progress.set(done)  # the phase's first line
        self.progress.total = total
        if done != self.progress.done:
            self.progress.set(done)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._update()

    def __enter__(self) -> Self:
        if progress_enabled():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            if exc[0] is None:
                self._update()
                self.progress.close()

"""The progress line of long local work: what it says, how often it writes to a log, and
that a local pipeline run counts every pair."""

from __future__ import annotations

import io
import json
import re
import time

from pipelines.common.progress import CountInto, Progress, read_counts, watch_counts


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_says_done_total_rate_and_time_left():
    progress = Progress(200, "upload", "file", stream=io.StringIO(), enabled=True)
    progress.started -= 10.0  # ten seconds in
    progress.set(50, size=50_000_000)
    line = progress.line()
    assert line.startswith("upload: 50/200 files (25%)")
    rate = float(re.search(r"([\d.]+) file/s", line).group(1))
    assert 4.9 <= rate <= 5.0
    assert "5.0 MB/s" in line
    assert "left ~0:30" in line  # 150 files at 5 per second


def test_no_rate_until_enough_time_has_passed():
    """A count read a moment after the line started says nothing about the rate (it once
    read "705119 pair/s"): no rate, no time left, until `min_rate_s` have passed."""
    progress = Progress(100, "work", "pair", stream=io.StringIO(), enabled=True)
    progress.set(40)
    line = progress.line()
    assert line.startswith("work: 40/100 pairs (40%)") and "/s" not in line and "left" not in line
    progress.started -= 4.0
    assert "10.00 pair/s" in progress.line() and "left ~0:06" in progress.line()


def test_counts_done_before_the_line_started_are_not_in_the_rate():
    """A phase watched from the middle of a run starts with what workers already did."""
    progress = Progress(100, "writing", "pair", stream=io.StringIO(), enabled=True, done=60)
    progress.started -= 10.0
    progress.set(70)  # 10 pairs in 10 s, not 70
    rate = float(re.search(r"([\d.]+) pair/s", progress.line()).group(1))
    assert 0.9 <= rate <= 1.0
    assert "left ~0:3" in progress.line()  # 30 pairs at about one a second


def test_a_log_gets_a_line_per_interval_not_per_item():
    log = io.StringIO()
    with Progress(10_000, "work", stream=log, log_interval=3600, enabled=True) as progress:
        for _ in range(10_000):
            progress.advance()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the first item, then the end
    assert lines[-1].startswith("work: 10000/10000 items (100%)")


def test_a_terminal_line_is_redrawn_in_place():
    tty = _Tty()
    with Progress(3, "work", stream=tty, tty_interval=0, enabled=True) as progress:
        for _ in range(3):
            progress.advance()
    text = tty.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1


def test_disabled_progress_writes_nothing(monkeypatch):
    monkeypatch.setenv("FACEXT_PROGRESS", "0")
    log = io.StringIO()
    with Progress(5, "work", stream=log) as progress:
        progress.advance(5)
    assert log.getvalue() == ""


def test_counts_from_several_writers_add_up(tmp_path):
    writers = [CountInto(str(tmp_path)) for _ in range(3)]
    for i, writer in enumerate(writers):
        for _ in range(10 * (i + 1)):
            writer.add(None)
        writer.flush()
    assert read_counts(str(tmp_path)) == 60
    assert read_counts(str(tmp_path / "missing")) == 0


def test_watch_follows_the_phases(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEXT_PROGRESS", "1")
    first, second, passed = (CountInto(str(tmp_path / name)) for name in ("a", "b", "p"))
    with watch_counts(str(tmp_path), [("one", "a", 4), ("two", "b", "p")], "pair", poll_s=0.05):
        for _ in range(2):
            first.add(None)
        first.flush()
        time.sleep(0.3)  # the watcher shows phase one at 2/4
        for _ in range(2):
            first.add(None)
        first.flush()
        for _ in range(3):
            passed.add(None)
        passed.flush()
        time.sleep(0.3)
        for _ in range(3):
            second.add(None)
        second.flush()
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("one: 4/4 pairs") for line in lines)
    assert lines[-1].startswith("two: 3/3 pairs (100%)")


def test_a_local_pipeline_run_counts_every_pair(tmp_path, capfd, monkeypatch):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa.sample_data import make_sample_pairs
    from pipelines.fifa_annotate import run

    monkeypatch.setenv("FACEXT_PROGRESS", "1")
    manifest = make_sample_pairs(tmp_path / "pairs", n=2, seed=8)
    rows = len(manifest.read_text().splitlines())
    run(["--input", str(manifest), "--output", str(tmp_path / "out")], runner=FnApiRunner())
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("fifa_annotate:")]
    passed = report["inputs"] - sum(report["rejected"]["by_stage"].get(s, 0)
                                    for s in ("manifest", "read", "face", "artifact", "concepts"))
    assert any(f"analysing: {rows}/{rows} pairs" in line for line in err)
    assert f"writing: {passed}/{passed} pairs (100%)" in err[-1]
    assert not (tmp_path / "out" / "_tmp").exists()  # the counts went with the temporary files

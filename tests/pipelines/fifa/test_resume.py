"""A finished dataset is never lost, and finished work is not redone: runs interrupted by
Ctrl-C or SIGKILL, resumed, refused and limited, each a real pipeline process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import REPO

pytestmark = pytest.mark.slow
N_GOOD = 16


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from pipelines.fifa.sample_data import make_sample_pairs

    return make_sample_pairs(tmp_path_factory.mktemp("resume_pairs"), n=N_GOOD, seed=11)


def _command(manifest: Path, output: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.fifa_annotate", "--input", str(manifest), "--output", str(output),
            "--analysis_cache", str(cache), *extra]


def _start(command: list[str]) -> subprocess.Popen:
    # Its own process group with Ctrl-C not ignored, as a command typed in a terminal (a
    # test run in the background would otherwise pass SIGINT on ignored).
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, "FACEXT_PROGRESS": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env={**os.environ, "FACEXT_PROGRESS": "0"}, capture_output=True,
                          text=True, timeout=600, check=False)


def _entries(cache: Path) -> int:
    return sum(1 for _ in cache.glob("*/*.pkl"))


def _interrupt_when(process: subprocess.Popen, cache: Path, entries: int, sig: int) -> str:
    """Send `sig` to the run's process group once `entries` analyses are in the cache."""
    while process.poll() is None and _entries(cache) < entries:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, sig)
    _, err = process.communicate(timeout=120)
    return err.decode()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _shards(folder: Path) -> dict[str, str]:
    return {k: v for k, v in _snapshot(folder).items() if k.endswith(".arrow")}


@pytest.fixture(scope="module")
def finished(manifest, tmp_path_factory):
    """An uninterrupted run: its output (the dataset later runs must not lose), the number
    of pairs whose analysis is cacheable, and its cache."""
    root = tmp_path_factory.mktemp("finished")
    done = _run(_command(manifest, root / "out", root / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out", _entries(root / "cache")


def _copy(folder: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(folder, to)
    return to


def test_sigkill_keeps_the_dataset_and_the_resumed_run_redoes_nothing_finished(manifest, finished, tmp_path):
    from build_tools.validate import validate

    previous, cacheable = finished
    output = _copy(previous, tmp_path / "out")  # a finished dataset of the same run
    before = _snapshot(output)
    cache = tmp_path / "cache"
    process = _start(_command(manifest, output, cache))
    _interrupt_when(process, cache, cacheable // 2, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    kept = _entries(cache)
    assert _snapshot(output) == before  # byte for byte
    assert validate(str(output)).ok

    resumed = _run(_command(manifest, output, cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((output / "run_report.json").read_text())
    # Every analysis finished before the kill came from the cache; only the rest ran.
    assert report["analysis_cache"] == {"hits": kept, "misses": cacheable - kept}
    assert f"analyses: {kept} taken from the cache, {cacheable - kept} new" in resumed.stdout
    assert _shards(output) == _shards(previous)  # as if never interrupted
    assert not Path(str(output) + ".staging").exists()


def test_ctrl_c_prints_one_line_and_keeps_the_dataset(manifest, finished, tmp_path):
    previous, _ = finished
    output = _copy(previous, tmp_path / "out")
    before = _snapshot(output)
    process = _start(_command(manifest, output, tmp_path / "cache"))
    err = _interrupt_when(process, tmp_path / "cache", 2, signal.SIGINT)
    assert process.returncode == 130
    ours = [line for line in err.splitlines() if "fifa_annotate" in line or "Traceback" in line]
    assert len(ours) == 1 and "interrupted" in ours[0] and "is unchanged" in ours[0], err[-3000:]
    assert f"Resume with: python -m pipelines.fifa_annotate --input {manifest}" in ours[0]
    kept = re.search(r"; (\d+) analys[ie]s finished in this run, kept in (\S+), will not be redone", ours[0])
    assert kept and int(kept[1]) >= 2 and kept[2] == str(tmp_path / "cache"), ours[0]
    assert _snapshot(output) == before


def test_ctrl_c_while_the_libraries_load_is_one_line_too(manifest, tmp_path):
    """Before the run watches Ctrl-C (imports take seconds), it still ends with one line
    and status 130, not an import traceback."""
    process = _start(_command(manifest, tmp_path / "out", tmp_path / "cache"))
    time.sleep(0.3)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT  # Python ends on the signal itself: a shell shows 130
    assert err.decode().strip().splitlines() == [
        "fifa_annotate: interrupted (Ctrl-C); a finished dataset in its output folder is unchanged."]
    assert not (tmp_path / "out").exists()


def test_another_configuration_needs_overwrite(manifest, finished, tmp_path):
    previous, _ = finished
    output = _copy(previous, tmp_path / "out")
    before = _snapshot(output)
    refused = _run(_command(manifest, output, tmp_path / "cache", "--seed", "4", "--limit", "3"))
    assert refused.returncode == 2
    assert "--seed: 0 -> 4" in refused.stderr and "--limit: every row -> 3" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert _snapshot(output) == before

    replaced = _run(_command(manifest, output, tmp_path / "cache", "--seed", "4", "--limit", "3", "--overwrite"))
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    report = json.loads((output / "run_report.json").read_text())
    assert report["inputs"] == 3 and report["limit"] == 3 and report["options"]["seed"] == 4
    assert report["inputs"] == report["pairs_written"] + report["pairs_rejected"]

    # A --limit run is a trial: the same run over more rows replaces it without --overwrite
    # (nothing is lost), and fewer rows do not.
    fewer = _run(_command(manifest, output, tmp_path / "cache", "--seed", "4", "--limit", "2"))
    assert fewer.returncode == 2 and "--limit: 3 -> 2" in fewer.stderr
    grown = _run(_command(manifest, output, tmp_path / "cache", "--seed", "4"))
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert f"replacing the --limit 3 trial run in {output}" in grown.stderr
    report = json.loads((output / "run_report.json").read_text())
    rows = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    assert report["limit"] is None and report["inputs"] == rows > 3

"""The command lines a user types: `beam run FILE` and `python -m pipelines.fifa_annotate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

BEAM = Path(sys.executable).parent / "beam"
TIMEOUT = 300
FIFA_FLAGS = ("--input", "--output", "--describer", "--max_rows_per_shard", "--config")


def _env() -> dict[str, str]:
    return {**os.environ, "GLOG_minloglevel": "2", "PYTHONWARNINGS": "ignore::FutureWarning"}


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=False, cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_beam_help_prints_usage():
    assert BEAM.is_file(), f"console script missing: {BEAM}"
    done = _run(BEAM, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: beam run FILE")
    assert "pipelines/fifa_annotate.py" in done.stdout


def test_beam_without_arguments_prints_usage_and_fails():
    done = _run(BEAM)
    assert done.returncode == 2
    assert "usage: beam run FILE" in done.stdout


def test_beam_run_missing_file_fails_clearly():
    done = _run(BEAM, "run", "nonexistent.py")
    assert done.returncode != 0
    assert "beam run: nonexistent.py: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_beam_unknown_command_fails():
    done = _run(BEAM, "walk", "pipelines/fifa_annotate.py")
    assert done.returncode == 2
    assert "usage: beam run FILE" in done.stderr


@pytest.mark.parametrize("command", [
    (sys.executable, "-m", "pipelines.fifa_annotate", "--help"),
    (BEAM, "run", "pipelines/fifa_annotate.py", "--help"),
], ids=["python -m", "beam run"])
def test_fifa_annotate_help_lists_options(command):
    done = _run(*command)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    for flag in FIFA_FLAGS:
        assert flag in done.stdout, flag


@pytest.mark.slow
def test_beam_run_fifa_annotate_end_to_end(tmp_path):
    import datasets

    from pipelines.fifa.sample_data import make_sample_pairs

    manifest = make_sample_pairs(tmp_path, n=2, seed=1)
    assert manifest == tmp_path / "manifest.jsonl"
    out = tmp_path / "out"
    done = _run(BEAM, "run", "pipelines/fifa_annotate.py", "--input", manifest, "--output", out)
    assert done.returncode == 0, done.stderr[-4000:]

    dataset = datasets.load_from_disk(str(out))
    assert set(dataset) == {"train", "test"}
    report = json.loads((out / "run_report.json").read_text())
    rows = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    assert report["inputs"] == rows
    assert report["inputs"] == report["pairs_written"] + report["pairs_rejected"]
    assert report["adds_up"] is True
    assert report["pairs_written"] >= 1
    assert report["samples"]["total"] == sum(len(dataset[s]) for s in dataset)
    assert len(datasets.load_from_disk(str(out / "rejected"))) == report["pairs_rejected"]
    assert f"{report['inputs']} inputs" in done.stdout  # the summary line
    assert not (out / "_tmp").exists()

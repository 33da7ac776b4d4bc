"""Quiet by default (`pipelines.common.logs`): a real run's stderr holds our lines only, in
the driver and in Beam's worker processes; `-v` brings the libraries' lines back.  And the
pieces: the flags a pipeline's command line gets, and `setup_logging` giving back what it
changed."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipelines.common.logs import (
    LIBRARY_LOGGERS,
    QUIET_ENVIRONMENT,
    VERBOSE_ENV,
    quiet_imports,
    setup_command,
    setup_logging,
    wants_verbose,
    with_log_flags,
)
from tests import REPO

TIMEOUT = 300
# What the libraries print when nobody quiets them (seen on runs before issue 12).
NOISE = re.compile(r"W0000|INFO: Created TensorFlow|absl::|crcmod|libpng|WARN:|FutureWarning|"
                   r"Discarding unparseable|^(?:INFO|WARNING):\w")
SUMMARY = re.compile(r"^5 inputs: 3 pairs written, 2 rejected \(decode_error 2\)$", re.MULTILINE)
WORKERS = 2


# -- a real run -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """3 generated pairs, the generator's truncated PNG and a PNG cut at 500 bytes."""
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("pairs")
    rows = [json.loads(line) for line in make_sample_pairs(folder, n=3).read_text().splitlines()]
    kept = [r for r in rows if r["expected_reject"] in (None, "decode_error")]
    (folder / "cut.png").write_bytes((folder / kept[0]["real"]).read_bytes()[:500])
    kept.append({**kept[0], "pair_id": "cut-at-500-bytes", "real": "cut.png", "expected_reject": "decode_error"})
    path = folder / "quiet.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return path


def pipeline(*args: str | Path) -> subprocess.CompletedProcess:
    """A run in a fresh process, in an environment that asks for nothing either way."""
    env = {k: v for k, v in os.environ.items() if k not in (VERBOSE_ENV, *QUIET_ENVIRONMENT)}
    env["FACEXT_PROGRESS"] = "1"
    done = subprocess.run([sys.executable, *map(str, args)], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    assert SUMMARY.search(done.stdout), done.stdout  # the run summary stays
    return done


@pytest.mark.slow
def test_a_run_with_two_worker_processes_shows_only_our_lines(manifest, tmp_path):
    import datasets

    output = tmp_path / "quiet" / "out"
    done = pipeline("-m", "pipelines.fifa_annotate", "--input", manifest, "--output", output,
                    "--direct_num_workers", str(WORKERS), "--direct_running_mode", "multi_processing")
    lines = done.stderr.splitlines()
    ours = [line for line in lines if line.startswith("fifa_annotate: ")]  # the progress line
    assert ours
    # Beam's crcmod warning, which each worker would print while it imports apache_beam,
    # is gone too: crcmod is a dependency.
    noise = [line for line in lines if line not in ours]
    assert noise == [], "\n".join(noise)
    # The decode errors went to the rejected table, not to stderr.
    rejected = datasets.load_from_disk(str(output / "rejected"))
    details = {row["pair_id"]: row["detail"] for row in rejected}
    assert "cut.png: truncated PNG: the file ends before the IEND chunk" in details["cut-at-500-bytes"]
    assert all(reason == "decode_error" for reason in rejected["reason"])


@pytest.mark.slow
def test_verbose_shows_the_libraries_lines_again(manifest, tmp_path):
    """The check above can fail: the same run with -v (by `beam run`, one worker) prints them."""
    done = pipeline("-m", "build_tools.beam_cli", "run", "pipelines/fifa_annotate.py", "--input", manifest,
                    "--output", tmp_path / "verbose" / "out", "-v")
    noise = [line for line in done.stderr.splitlines() if NOISE.search(line)]
    assert any("W0000" in line or "INFO: Created TensorFlow" in line for line in noise), done.stderr
    # (The manifest's cut PNG no longer reaches libpng: facext refuses a truncated file before
    # decoding it, so libpng has nothing to say; tests/pipelines/vision/test_native_stderr.py
    # shows libpng's line on a damaged whole file.)


# -- the command line ----------------------------------------------------------------------

def test_a_quiet_local_run_gets_the_worker_log_flags_and_beam_reads_them():
    from apache_beam.options.pipeline_options import PipelineOptions

    argv = with_log_flags(["--input", "m.jsonl"], verbose=False)
    options = PipelineOptions(argv).get_all_options()
    assert options["default_sdk_harness_log_level"] == "ERROR"
    assert options["sdk_harness_log_level_overrides"]["pipelines"] == "WARNING"


def test_verbose_spells_v_as_the_pipelines_option_and_adds_nothing():
    assert with_log_flags(["--input", "m.jsonl", "-v"], verbose=True) == ["--input", "m.jsonl", "--verbose"]


def test_the_users_worker_log_level_wins():
    out = with_log_flags(["--default_sdk_harness_log_level", "DEBUG"], verbose=False)
    assert not any(arg.startswith("--default_sdk_harness_log_level=") for arg in out)


@pytest.mark.parametrize("runner", [["--runner", "DataflowRunner"], ["--runner=DataflowRunner"]])
def test_workers_elsewhere_keep_their_log_level(runner):
    """Their logs go to their own console (Dataflow's), not to this terminal."""
    assert with_log_flags(runner, verbose=False) == runner


def test_the_config_file_counts(tmp_path, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    config = tmp_path / "run.yaml"
    config.write_text("runner: DataflowRunner\nverbose: true\n")
    assert wants_verbose(["--config", str(config)])
    assert with_log_flags(["--config", str(config)], verbose=False) == ["--config", str(config)]
    assert not wants_verbose(["--config", str(tmp_path / "missing.yaml")])  # the parser reports that


def test_verbose_is_asked_for_by_flag_or_environment(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert not wants_verbose(["--input", "m.jsonl"])
    assert wants_verbose(["analyze", "-v"]) and wants_verbose(["--verbose"])
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert wants_verbose([])


# -- setup_logging ---------------------------------------------------------------------------

def process_state() -> tuple:
    return (list(warnings.filters), list(logging.getLogger().filters),
            {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS},
            {name: os.environ.get(name) for name in QUIET_ENVIRONMENT})


@pytest.fixture()
def plain_process(monkeypatch):
    """This process as if nothing of ours had quieted it; quiet_imports' state again after."""
    for name in (VERBOSE_ENV, *QUIET_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)
    setup_logging(verbose=True)
    monkeypatch.delenv(VERBOSE_ENV)
    yield
    setup_logging(verbose=True)
    monkeypatch.delenv(VERBOSE_ENV)
    quiet_imports()


def warned(module: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("w", FutureWarning, "f.py", 1, module=module, registry={})
    return bool(seen)


def test_quiet_then_verbose_gives_everything_back(plain_process):
    before = process_state()
    assert warned("apache_beam.io.gcp")
    setup_logging()
    assert not warned("apache_beam.io.gcp")
    assert warned("pipelines.fifa.sample_data") and warned("__main__")  # ours and the script's show
    assert all(logging.getLogger(name).level == logging.ERROR for name in LIBRARY_LOGGERS)
    assert os.environ["PYTHONWARNINGS"] == "ignore"  # for the workers this process starts
    library = logging.LogRecord("root", logging.WARNING, "/x/site-packages/apache_beam/io/tfrecordio.py", 39,
                                "crcmod package not found", None, None)
    assert not logging.getLogger().filter(library)
    assert logging.getLogger().filter(logging.LogRecord("root", logging.WARNING, str(REPO / "run.py"), 1, "mine",
                                                        None, None))
    setup_logging()  # twice changes nothing more
    setup_logging(verbose=True)
    assert process_state() == before
    assert os.environ[VERBOSE_ENV] == "1"  # inherited by the processes it starts


def test_a_tool_takes_v_from_anywhere_on_its_line(plain_process):
    assert setup_command(["analyze", "real.png", "-v", "fake.png", "--out", "d"]) == [
        "analyze", "real.png", "fake.png", "--out", "d"]
    assert os.environ[VERBOSE_ENV] == "1"

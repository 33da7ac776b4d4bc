"""The command lines a user types: `beam run FILE`, `python -m pipelines.fifa_annotate` and
`facext`: their help, their exit codes, and typos that stop them before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

BEAM = Path(sys.executable).parent / "beam"
FACEXT = Path(sys.executable).parent / "facext"
TIMEOUT = 300
FIFA_FLAGS = ("--input", "--output", "--describer", "--max_rows_per_shard", "--config", "--dry_run")
TYPO = "error: unknown option --outptu (did you mean --output?)"


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
    (sys.executable, "-m", "pipelines.fifa_annotate", "--direct_num_workers", "1", "--help"),
    (BEAM, "run", "pipelines/fifa_annotate.py", "--direct_num_workers=1", "--help"),
], ids=["python -m", "beam run"])
def test_fifa_annotate_help_lists_options(command):
    """Beam's own options pass the check (then --help prints ours, Beam's --dry_run too)."""
    done = _run(*command)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    for flag in FIFA_FLAGS:
        assert flag in done.stdout, flag
    assert "--dry_run [true]" in done.stdout and "no model is called" in done.stdout


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def earlier_output(tmp_path) -> Path:
    """An output folder holding an earlier run's file, which a refused command must leave alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_report.json").write_text('{"earlier": true}\n')
    return out


@pytest.mark.parametrize("command", [
    (sys.executable, "-m", "pipelines.fifa_annotate"),
    (BEAM, "run", "pipelines/fifa_annotate.py"),
    (FACEXT, "estimate"),
], ids=["python -m", "beam run", "facext estimate"])
def test_a_typo_exits_2_before_any_work(command, earlier_output):
    before = _files(earlier_output)
    done = _run(*command, "--output", earlier_output, "--outptu", "x", "--runner", "DirectRunner")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == TYPO  # one line (after any import-time chatter)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert _files(earlier_output) == before


def test_a_typo_in_a_config_file_exits_2(tmp_path, earlier_output, capsys):
    from pipelines.fifa_annotate import run

    config = tmp_path / "run.yaml"
    config.write_text("seed: 3\noutptu: x\n")
    before = _files(earlier_output)
    with pytest.raises(SystemExit) as info:
        run(["--config", str(config), "--output", str(earlier_output)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: --config: {config}: unknown option 'outptu' (did you mean 'output'?)\n"
    assert _files(earlier_output) == before


def test_facext_commands_name_the_closest_option(tmp_path, capsys):
    from build_tools.cli import main

    with pytest.raises(SystemExit) as info:
        main(["sample-data", "-o", str(tmp_path / "pairs"), "--seeed", "1"])
    assert info.value.code == 2
    assert "facext sample-data: error: unknown option --seeed (did you mean --seed?)" in capsys.readouterr().err
    assert not (tmp_path / "pairs").exists()
    with pytest.raises(SystemExit) as info:  # estimate knows its own flags and the pipeline's
        main(["estimate", "--sampel", "2"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: unknown option --sampel (did you mean --sample?)\n"


@pytest.mark.parametrize("argv, message", [
    (["analyze", "a.png", "b.png", "--otu", "d"], "facext analyze: error: unknown option --otu (did you mean --out?)"),
    (["analyze", "a.png", "b.png", "--ou", "d"], "facext analyze: error: unknown option --ou (did you mean --out?)"),
    (["sample-data", "-o", "x", "--se", "3"], "facext sample-data: error: unknown option --se (did you mean --seed?)"),
    (["report", "x", "--per", "3"], "facext report: error: unknown option --per (did you mean --per-task?)"),
])
def test_facext_takes_no_abbreviations_and_names_a_typo_before_a_missing_option(tmp_path, capsys, argv,
                                                                                message):
    from build_tools.cli import main

    with pytest.raises(SystemExit) as info:
        main([a if a != "x" else str(tmp_path / "x") for a in argv])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert list(tmp_path.iterdir()) == []


def _help(capsys, *argv: str) -> str:
    from build_tools.cli import main

    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_estimate_help_lists_the_pipeline_options_with_defaults(capsys):
    text = _help(capsys, "estimate")
    for flag in ("--sample", "--batch", "--json", "--config", "--describer", "--llm_model", "--dry_run_pairs"):
        assert flag in text, flag
    assert "--input INPUT manifest of pairs" in text and "(default: the bundled sample pairs)" in text
    assert "--crop_size CROP_SIZE side of the aligned crop, px (default: 512)" in text


def test_analyze_help_explains_its_arguments_and_exit_codes(capsys):
    text = _help(capsys, "analyze")
    assert "real the real (source) image" in text and "fake the fake image made from it" in text
    assert "Exit status: 0 analysed, 3 the pair was rejected" in text


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, dict]:
    """One good generated pair and the generator's bad ones, by expected reason ("ok" for the good)."""
    from pipelines.fifa.sample_data import make_sample_pairs

    manifest = make_sample_pairs(tmp_path_factory.mktemp("cli_pairs"), n=1, seed=3)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {row["expected_reject"] or "ok": {**row, "real": manifest.parent / row["real"],
                                               "fake": manifest.parent / row["fake"]} for row in rows}


@pytest.mark.parametrize("which, code", [("ok", 0), ("no_face", 3)])
def test_analyze_exits_0_when_analysed_and_3_when_rejected(pairs, which, code, tmp_path, capsys):
    from build_tools.cli import main

    pair = pairs[which]
    assert main(["analyze", str(pair["real"]), str(pair["fake"]), "--out", str(tmp_path / "a")]) == code
    analysis = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert analysis["status"] == ("ok" if which == "ok" else "rejected")
    assert analysis.get("reason") == (None if which == "ok" else which)
    assert capsys.readouterr().out.startswith("ok:" if which == "ok" else "rejected (no_face)")


def test_validate_on_a_missing_folder_says_so_alone(tmp_path, capsys):
    from build_tools.cli import main

    missing = tmp_path / "never_run"
    assert main(["validate", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no summary of a run that is not there
    assert captured.err == f"error: {missing}: no such folder (give the pipeline's --output folder)\n"


@pytest.mark.slow
def test_beam_run_fifa_annotate_end_to_end(tmp_path):
    import datasets

    from pipelines.fifa.sample_data import make_sample_pairs

    manifest = make_sample_pairs(tmp_path, n=2, seed=1)
    assert manifest == tmp_path / "manifest.jsonl"
    out = tmp_path / "out"
    done = _run(BEAM, "run", "pipelines/fifa_annotate.py", "--input", manifest, "--output", out,
                "--direct_num_workers", "1")  # Beam's own options reach Beam
    assert done.returncode == 0, done.stderr[-4000:]

    dataset = datasets.load_from_disk(str(out))
    assert set(dataset) == {"train", "test"}
    report = json.loads((out / "run_report.json").read_text())
    rows = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    assert report["inputs"] == rows
    assert report["inputs"] == report["pairs_written"] + report["pairs_rejected"]
    assert report["adds_up"] is True
    assert report["pairs_written"] >= 1
    assert report["samples"]["total"] == sum(len(row) for s in dataset for row in dataset[s]["samples"])
    assert report["images"]["total"] == sum(len(dataset[s]) for s in dataset)
    assert len(datasets.load_from_disk(str(out / "rejected"))) == report["pairs_rejected"]
    assert f"{report['inputs']} inputs" in done.stdout  # the summary line
    assert not (out / "_tmp").exists()

"""FaceInstruct's options: the README table against `FaceInstructFlags`, repeated
`--source` on the command line and in a config file, and the errors a wrong source or a
FiFa-only option gives before any work."""

from __future__ import annotations

import pytest

from pipelines.common.options import option_table
from pipelines.faceinstruct.options import FaceInstructFlags
from tests.pipelines.fifa.test_option_table import README, stated_defaults, states

HEADER = "| FaceInstruct option | default | meaning |"


def test_every_option_has_a_row_stating_its_default():
    stated = stated_defaults(README, HEADER)
    declared = {row.flag: row for row in option_table(FaceInstructFlags)}
    assert sorted(stated) == sorted(declared)
    wrong = [flag for flag, cell in stated.items() if not states(cell, declared[flag].default, declared[flag].shown)]
    assert wrong == []


def options(argv):
    from pipelines.faceinstruct.pipeline import FaceInstructOptions

    return FaceInstructOptions.from_argv(argv).view_as(FaceInstructOptions)


def test_source_repeats_on_the_command_line_and_in_a_config(tmp_path):
    assert options(["--source", "dfew=/a", "--source", "celeba=/b"]).source == ["dfew=/a", "celeba=/b"]
    config = tmp_path / "run.yaml"
    config.write_text("source: [dfew=/a, rafdb=/c]\nfps: 12\n")
    parsed = options(["--config", str(config)])
    assert parsed.source == ["dfew=/a", "rafdb=/c"] and parsed.fps == 12.0
    config.write_text("fps: [12, 24]\n")  # only a repeated option takes a list
    with pytest.raises(SystemExit):
        options(["--config", str(config)])


@pytest.mark.parametrize("argv, message", [
    (["--max_hallucinated", "2"], "unknown option --max_hallucinated"),
    (["--dry_run_pairs", "3"], "unknown option --dry_run_pairs"),
    (["--sourse", "dfew=/a"], "did you mean --source"),
])
def test_options_of_no_use_here_are_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        options(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("dfew", "expected NAME=PATH"),
    ("dfw={root}", "did you mean dfew"),
    ("dfew={root}/nothing", "is not a folder"),
    ("dfew=gs://bucket/dfew", "a local folder"),
])
def test_a_wrong_source_stops_the_run(value, message, tmp_path):
    from pipelines.faceinstruct.settings import parse_sources

    with pytest.raises(SystemExit, match=message):
        parse_sources([value.format(root=tmp_path)])


def test_a_source_without_its_label_files_stops_the_run(tmp_path):
    from pipelines.faceinstruct.pipeline import run

    (tmp_path / "dfew").mkdir()
    with pytest.raises(SystemExit, match="no DFEW split CSVs"):
        run(["--source", f"dfew={tmp_path / 'dfew'}", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_llm_options_are_checked_before_any_dataset_is_read(tmp_path):
    from pipelines.faceinstruct.pipeline import run

    (tmp_path / "dfew").mkdir()  # no label files: reading it would stop the run with a source error
    with pytest.raises(SystemExit, match="needs --llm_base_url"):
        run(["--source", f"dfew={tmp_path / 'dfew'}", "--output", str(tmp_path / "out"),
             "--describer", "openai-compatible", "--llm_model", "m"])

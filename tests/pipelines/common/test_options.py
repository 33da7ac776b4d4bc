"""The command-line check every pipeline's entry point runs first (`pipeline_argv`): a typo
ends the program with one line and exit status 2, Beam's own options pass, and so do values
that look odd; and the `--dry_run` that pipelines list in their help."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import pytest
from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipelines.common.llm_options import add_dry_run_flag, bare_flags, is_dry_run
from pipelines.common.options import (
    OptionError,
    add_arguments,
    check_options,
    known_flags,
    option,
    pipeline_argv,
    unknown_option,
)


@dataclass(frozen=True)
class _Tiny:
    # Names no other options class uses: this class is registered with Beam for the session.
    tiny_output: str = option("out", "where")
    tiny_count: int = option(1, "how many")
    tiny_switch: bool = option(False, "a switch")


class TinyOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_arguments(parser, _Tiny, "Tiny")
        add_dry_run_flag(parser)


def _error(argv: list[str], capsys, **kwargs) -> str:
    """The one line `pipeline_argv` prints before it exits 2."""
    with pytest.raises(SystemExit) as info:
        pipeline_argv(argv, TinyOptions, **kwargs)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize("argv", [["--tiny_outptu", "x"], ["--tiny_outptu=x"], ["--tiny_count", "2", "--tiny_outptu"],
                                  ["--tiny_out", "x"]],  # no abbreviations, as Beam parses
                         ids=["value", "equals", "last", "abbreviated"])
def test_a_typo_exits_2_naming_the_closest_option(argv, capsys):
    name = argv[-1].partition("=")[0] if argv[-1].startswith("--") else argv[0]
    assert _error(argv, capsys) == f"error: unknown option {name} (did you mean --tiny_output?)"


def test_beams_options_and_odd_values_pass_unchanged():
    argv = ["--tiny_output=--not-an-option", "--tiny_count", "-3", "--direct_num_workers", "1",
            "--runner=DirectRunner", "--project", "p", "--tiny_switch", "--dry_run=true", "--", "ignored"]
    assert pipeline_argv(argv, TinyOptions) == argv
    options = TinyOptions(argv)
    assert (options.tiny_output, options.tiny_count, options.tiny_switch) == ("--not-an-option", -3, True)
    assert options.view_as(DirectOptions).direct_num_workers == 1


def test_a_word_no_option_takes_is_an_error(capsys):
    assert _error(["--tiny_switch", "yes"], capsys) == \
        "error: unexpected argument 'yes' (after --tiny_switch, which takes no value)"
    assert _error(["stray"], capsys) == "error: unexpected argument 'stray'"


def test_a_value_starting_with_dashes_is_read_as_an_option(capsys):
    # as argparse reads it: `--tiny_output --tiny_outptu` gives --tiny_output no value
    assert _error(["--tiny_output", "--tiny_outptu"], capsys).startswith("error: unknown option --tiny_outptu")


def test_no_close_option_gives_no_guess():
    assert unknown_option("--zzzzzzzz", ["--input", "--output"]) == "unknown option --zzzzzzzz"
    with pytest.raises(OptionError) as info:
        check_options(["--sampel"], known_flags(TinyOptions), also=("--sample",))
    assert info.value.code == "unknown option --sampel (did you mean --sample?)"


def test_a_config_typo_exits_2_with_a_guess(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("tiny_count: 4\ntiny_outptu: x\n")
    assert _error(["--config", str(path)], capsys) == \
        f"error: --config: {path}: unknown option 'tiny_outptu' (did you mean 'tiny_output'?)"
    path.write_text("tiny_count: [1]\n")
    assert "must be a scalar" in _error(["--config", str(path)], capsys)
    assert "does not exist" in _error(["--config", str(tmp_path / "none.yaml")], capsys)


def test_a_config_that_is_not_yaml_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("tiny_count: 4\ntiny_output: [x\n")
    assert _error(["--config", str(path)], capsys) == (
        f"error: --config: {path} is not valid YAML (line 3, column 1): expected ',' or ']', but got '<stream end>'")
    path.write_bytes(b"tiny_count: \xff\xfe\n")
    assert _error(["--config", str(path)], capsys).startswith(f"error: --config: {path} cannot be read")


def test_a_config_may_hold_beams_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("direct_num_workers: 2\ntiny_count: 4\n")
    options = TinyOptions(pipeline_argv(["--config", str(path)], TinyOptions))
    assert (options.view_as(DirectOptions).direct_num_workers, options.tiny_count) == (2, 4)


def test_the_runner_named_brings_its_options():
    """The Dask runner registers `--dask_*` in its own module, which Beam imports only when
    it makes the runner: the check imports it first."""
    pytest.importorskip("dask")
    argv = ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", "h:1"]
    assert pipeline_argv(argv, TinyOptions) == argv
    assert "apache_beam.runners.dask.dask_runner" in sys.modules


def test_bare_dry_run_and_its_help(capsys):
    argv = pipeline_argv(["--dry_run", "--tiny_count", "2"], TinyOptions, rewrite=bare_flags)
    assert argv[0] == "--dry_run=true" and is_dry_run(TinyOptions(argv))
    assert not is_dry_run(TinyOptions([]))
    # Listed in the help of the pipeline's own parser ...
    parser = argparse.ArgumentParser()
    TinyOptions._add_argparse_args(parser)
    assert "--dry_run [true]" in parser.format_help()
    assert parser.parse_args(["--dry_run"]).dry_run == "true"
    # ... and Beam's own stays where Beam builds the parser of every options class.
    full = argparse.ArgumentParser()
    beam_options.TestOptions._add_argparse_args(full)
    beams = full._option_string_actions["--dry_run"]
    add_dry_run_flag(full)
    assert full._option_string_actions["--dry_run"] is beams
    assert known_flags(TinyOptions)["--dry_run"].nargs is None  # TestOptions': takes a value

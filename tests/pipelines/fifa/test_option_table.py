"""The README's option tables against the one declaration of the options (`FifaFlags`,
`LlmFlags`), and the flags made from that declaration.

Every row of the FiFa and the LLM option table must name a declared option (or one of Beam's)
and state its default; every FiFa option must have a row; every LLM option must at least be
named in the README.  A planted wrong default shows that the check sees one.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, make_dataclass

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common.llm_options import DESCRIBERS, LlmFlags
from pipelines.common.options import OptionRow, add_arguments, option, option_table, show_default
from pipelines.common.run_options import RunFlags
from pipelines.fifa.options import FifaFlags
from pipelines.fifa_annotate import FifaOptions
from tests import REPO

README = (REPO / "README.md").read_text()
FIFA_HEADER = "| option | default | meaning |"
LLM_HEADER = "| LLM option | default | meaning |"
BACKEND_HEADER = "| `--describer` / `--rater` | what | key (environment only) |"
DECLARED = {row.flag: row for row in (*option_table(FifaFlags), *option_table(RunFlags), *option_table(LlmFlags))}


def table(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table under `header` (a `\\|` stays in its cell)."""
    lines = text.splitlines()
    start = lines.index(header) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def stated_defaults(text: str, header: str) -> dict[str, str]:
    """{flag: the default its row states}.  A row may name several flags (`--a`, `--b`) with
    one default for all, or one default each (`off, 2`)."""
    out = {}
    for cells in table(text, header):
        flags = re.findall(r"`(--\w+)[^`]*`", cells[0])
        assert flags, f"a row of {header!r} names no flag: {cells}"
        each = [part.strip() for part in cells[1].split(",")]
        for i, flag in enumerate(flags):
            out[flag] = each[i] if len(each) == len(flags) else cells[1]
    return out


def beam_defaults() -> dict:
    return PipelineOptions([]).get_all_options(retain_unknown_options=False)


def states(cell: str, default, shown: str) -> bool:
    """Whether a README cell states this default: the number itself (0.10 is 0.1), the string,
    `off` for a switch, or the declared words for a default that is no value (None)."""
    text = cell.replace("`", "").strip()
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(text) == default
        except ValueError:
            return False
    if default is None and shown == show_default(None):
        return text in ("", shown)
    return text == shown


def mismatches(text: str, header: str) -> list[str]:
    """Every row of the table that names no known option or states another default."""
    beam = beam_defaults()
    problems = []
    for flag, cell in stated_defaults(text, header).items():
        row = DECLARED.get(flag)
        if row is not None:
            default, shown = row.default, row.shown
        elif flag[2:] in beam:  # one of Beam's own options, e.g. --dry_run
            default, shown = beam[flag[2:]], show_default(beam[flag[2:]])
        else:
            problems.append(f"README names {flag}, which no options class declares")
            continue
        if not states(cell, default, shown):
            problems.append(f"README states {flag}'s default as {cell!r}; it is {shown!r}")
    return problems


def test_the_tables_are_found_and_read():
    fifa, llm = stated_defaults(README, FIFA_HEADER), stated_defaults(README, LLM_HEADER)
    assert len(fifa) >= len(option_table(FifaFlags)) and len(llm) >= 10
    assert fifa["--crop_size"] == "512" and fifa["--config"] == ""
    assert (llm["--llm_rpm"], llm["--llm_tpm"]) == ("none", "none")  # one default for both
    assert (llm["--dry_run"], llm["--dry_run_pairs"]) == ("off", "2")  # one default each


@pytest.mark.parametrize("header", [FIFA_HEADER, LLM_HEADER])
def test_every_row_states_the_declared_default(header):
    assert mismatches(README, header) == []


def test_every_fifa_option_has_a_row():
    documented = set(stated_defaults(README, FIFA_HEADER))
    missing = [row.flag for spec in (FifaFlags, RunFlags) for row in option_table(spec) if row.flag not in documented]
    assert missing == []


def test_every_llm_option_is_documented():
    """The LLM table holds the main ones; the rest (Vertex AI's) are named in the LLM layer's
    text, which is enough for a flag whose `--help` states its default."""
    section = README[README.index("## The LLM layer"):]
    section = section[:section.index("\n## ")]
    tables = set(stated_defaults(README, FIFA_HEADER)) | set(stated_defaults(README, LLM_HEADER))
    undocumented = [row.flag for row in option_table(LlmFlags)
                    if row.flag not in tables and not re.search(rf"{row.flag}\b", section)]
    assert undocumented == []


def test_the_backend_table_lists_the_describers_and_marks_the_default():
    rows = table(README, BACKEND_HEADER)
    names = [re.match(r"`([\w-]+)`", cells[0]).group(1) for cells in rows]
    assert sorted(names) == sorted(DESCRIBERS)
    marked = [name for name, cells in zip(names, rows) if "(default)" in cells[0]]
    assert marked == [LlmFlags().describer] == [LlmFlags().rater]


@pytest.mark.parametrize("header, flag", [(FIFA_HEADER, "--crop_size"), (FIFA_HEADER, "--coverage_threshold"),
                                          (FIFA_HEADER, "--allow_absolute_paths"), (LLM_HEADER, "--llm_rpm"),
                                          (LLM_HEADER, "--dry_run_pairs"), (LLM_HEADER, "--llm_model")])
def test_a_changed_default_in_the_readme_is_caught(header, flag):
    lines = README.splitlines()
    start = lines.index(header)
    at = next(i for i in range(start, len(lines)) if f"`{flag}`" in lines[i])
    cells = lines[at].split(" | ")
    cells[1] = "7" if cells[1] != "7" else "8"
    planted = "\n".join([*lines[:at], " | ".join(cells), *lines[at + 1:]])
    found = mismatches(planted, header)
    assert any(f"README states {flag}'s default" in problem for problem in found), found


def test_an_undeclared_flag_in_the_readme_is_caught():
    planted = README.replace(f"{FIFA_HEADER}\n|---|---|---|\n",
                             f"{FIFA_HEADER}\n|---|---|---|\n| `--no_such_option` | 1 | nothing |\n")
    assert mismatches(planted, FIFA_HEADER) == ["README names --no_such_option, which no options class declares"]


# --- the flags made from the declaration ------------------------------------------------------


def _flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    FifaOptions._add_argparse_args(parser)
    return {action.option_strings[0]: action for action in parser._actions if action.option_strings}


@pytest.mark.parametrize("row", list(DECLARED.values()), ids=list(DECLARED))
def test_each_flag_has_the_declared_default_choices_and_help(row: OptionRow):
    action = _flags()[row.flag]
    assert action.dest == row.name
    assert action.default is row.default or (action.default == row.default
                                             and type(action.default) is type(row.default))
    assert action.choices == row.choices
    assert action.help.replace("%%", "%").endswith(f"(default: {row.shown})")
    if isinstance(row.default, bool):
        assert isinstance(action, argparse._StoreTrueAction)


def test_no_flags_parse_to_the_declared_defaults_with_their_types():
    parsed = PipelineOptions([]).view_as(FifaOptions)
    for row in DECLARED.values():
        value = getattr(parsed, row.name)
        assert value == row.default and type(value) is type(row.default), row.flag
    # the int 6, not 6.0: the parsed default is part of every run's options hash
    assert type(parsed.min_rating) is int


@pytest.mark.parametrize("flag, text, value", [
    ("--crop_size", "300", 300), ("--mask_threshold", "3", 3.0), ("--llm_rpm", "60", 60.0),
    ("--llm_model", "m", "m"), ("--llm_batch", "collect", "collect"), ("--max_hallucinated", "-1", -1),
])
def test_flag_values_take_the_annotated_type(flag, text, value):
    parsed = PipelineOptions([flag, text]).view_as(FifaOptions)
    got = getattr(parsed, flag[2:])
    assert got == value and type(got) is type(value)


# --- the machinery on a small declaration -----------------------------------------------------


@dataclass(frozen=True)
class _Small:
    rate: float | None = option(None, "share in %, at most")
    name: str = option("a", "a name", flag="--the-name", group="Other")
    not_an_option: int = 3


def test_flag_group_and_percent_in_help():
    parser = argparse.ArgumentParser()
    add_arguments(parser, _Small, "Small")
    assert [row.flag for row in option_table(_Small)] == ["--rate", "--the-name"]
    assert vars(parser.parse_args(["--the-name", "b", "--rate", "0.5"])) == {"rate": 0.5, "name": "b"}
    titles = {group.title: [a.dest for a in group._group_actions] for group in parser._action_groups}
    assert titles["Small"] == ["rate"] and titles["Other"] == ["name"]
    assert "share in %, at most (default: none)" in " ".join(parser.format_help().split())


@pytest.mark.parametrize("annotation, default, message", [
    ("list[int] | None", None, "a repeated option is annotated list[X] | None, and only a repeated one"),
    ("dict | None", None, "options are int, float, str or bool"),
    ("int | str", 1, "one type (or None)"),
    ("bool", True, "a switch must default to False"),
])
def test_declarations_argparse_cannot_express_are_refused(annotation, default, message):
    spec = make_dataclass("Bad", [("x", annotation, option(default, "x"))])
    with pytest.raises(TypeError, match=re.escape(message)):
        add_arguments(argparse.ArgumentParser(), spec, "Bad")

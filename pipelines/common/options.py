"""Pipeline options declared once, as dataclass fields, and read from flags and a YAML config
file (flags override the file).

A pipeline declares its options as a dataclass whose fields carry their help in the field
metadata (`option(default, help)`); `add_arguments` makes the argparse flags of those fields,
`option_table` the rows the README's option tables are checked against.  Any module may
declare options this way without importing this one: a field is an option when its
`metadata` holds "help" (and optionally "choices", "flag", "group", "shown").

`pipeline_argv` is what a pipeline's entry point calls first: it expands `--config`, and
checks every option of the command line (and of the file) against the flags Beam and the
pipeline know, so a typo ends the program before any work with one line and exit status 2:
`error: unknown option --outptu (did you mean --output?)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import sys
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

import yaml


def option(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
           group: str | None = None, shown: str | None = None, repeat: bool = False) -> Any:
    """A dataclass field that is a command-line option.

    `flag` spells the flag when it is not `--field_name`; `group` puts it in another help
    group than the dataclass's; `shown` is how `--help` and the docs state the default when
    the value alone says nothing (a `None` that means "the bundled sample").  A `repeat`
    option may be given several times (`--source a=x --source b=y`, or a list in the
    config file); its value is the list, None when not given, and its annotation
    `list[X] | None`.
    """
    metadata = {"help": help, "choices": choices, "flag": flag, "group": group, "shown": shown,
                "repeat": repeat or None}
    return dataclasses.field(default=default, metadata={k: v for k, v in metadata.items() if v is not None})


class OptionRow(NamedTuple):
    """One declared option as the docs state it."""

    name: str  # the field, and the attribute the parsed options carry
    flag: str
    default: Any
    shown: str  # the default as `--help` and the README write it
    help: str
    choices: tuple | None


def option_table(spec) -> list[OptionRow]:
    """The options a dataclass declares (fields with "help" metadata), in declaration order."""
    rows = []
    for f in dataclasses.fields(spec):
        if "help" not in f.metadata:
            continue
        shown = f.metadata.get("shown")
        rows.append(OptionRow(name=f.name, flag=f.metadata.get("flag") or f"--{f.name}", default=f.default,
                              shown=shown if shown is not None else show_default(f.default),
                              help=f.metadata["help"], choices=f.metadata.get("choices")))
    return rows


def show_default(value: Any) -> str:
    """A default as people read it: `off` for a switch, `none` for no value, `12` for 12.0."""
    if value is False:
        return "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def add_arguments(parser, spec, group_title: str, exclude: tuple[str, ...] = ()) -> None:
    """Adds one flag per option of the dataclass `spec` to `parser` (argparse's, or Beam's).

    Each flag stores into the field's name and has the field's default (as is: argparse does
    not convert a non-string default) and choices; its type comes from the annotation: `int`,
    `float`, `str` or one of them `| None`, and `bool` is a switch (`store_true`, default off).
    The help ends with the default.  `exclude` names options of `spec` this parser does not
    take (a shared options class with one option another pipeline has no use for).
    """
    hints = typing.get_type_hints(spec)
    groups: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(spec)}
    taken = getattr(parser, "_option_string_actions", {})
    for row in option_table(spec):
        # Beam builds one parser from every PipelineOptions subclass imported (to forward
        # options to workers): a flag both pipelines declare (--input, --output, the run
        # and LLM options) is added once there.  Each pipeline's own parser has its own.
        if row.name in exclude or row.flag in taken:
            continue
        title = fields[row.name].metadata.get("group") or group_title
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        repeat = bool(fields[row.name].metadata.get("repeat"))
        kind = _value_type(hints[row.name], f"{spec.__name__}.{row.name}", repeat)
        # argparse %-formats help texts; a literal % must be doubled.
        kwargs: dict[str, Any] = {"dest": row.name, "default": row.default,
                                  "help": f"{row.help} (default: {row.shown})".replace("%", "%%")}
        if repeat:
            if row.default is not None:
                raise TypeError(f"{spec.__name__}.{row.name}: a repeated option must default to None")
            kwargs["action"] = "append"
        if kind is bool:
            if row.default is not False:
                raise TypeError(f"{spec.__name__}.{row.name}: a switch must default to False")
            kwargs["action"] = "store_true"
        else:
            if kind is not str:  # no type for str, as a hand-written add_argument has none
                kwargs["type"] = kind
            if row.choices is not None:
                kwargs["choices"] = row.choices
        groups[title].add_argument(row.flag, **kwargs)


def _value_type(hint, where: str, repeat: bool = False) -> type:
    """int, float, str or bool, from an annotation that may add `| None` (a repeated
    option: `list[X] | None`)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"{where}: an option holds one type (or None), not {hint}")
        hint = kinds[0]
    if repeat != (typing.get_origin(hint) is list):
        raise TypeError(f"{where}: a repeated option is annotated list[X] | None, and only a repeated one")
    if repeat:
        (hint,) = typing.get_args(hint)
        if hint is bool:
            raise TypeError(f"{where}: a switch cannot repeat")
    if hint not in (int, float, str, bool):
        raise TypeError(f"{where}: options are int, float, str or bool, not {hint}")
    return hint


class OptionError(SystemExit):
    """A command line or `--config` file that names an option nobody declares, or cannot be
    read: `pipeline_argv` prints it as one `error:` line and exits 2.  Its `code` is the
    message, so a caller that lets it through still shows it."""


def expand_config(argv: list[str], known: set[str] | None, repeatable: frozenset[str] = frozenset()) -> list[str]:
    """argv with the options of `--config FILE.yaml` put in front, so flags win.

    The file is a mapping of option names (with or without leading dashes) to scalars, or
    to lists for the options named in `repeatable` (any, with `known=None`); `true` turns a switch on, `false` leaves it off.  A name not in `known` is an
    `OptionError` naming the closest known one (`known=None` takes every name).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    args, _ = pre.parse_known_args(argv)
    if not args.config:
        return list(argv)
    path = Path(args.config)
    if not path.is_file():
        raise OptionError(f"--config: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise OptionError(f"--config: {path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"--config: {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise OptionError(f"--config: {path} must hold a mapping of option names to values")
    flags: list[str] = []
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "config":
            raise OptionError(f"--config: {path} may not name another config file")
        if known is not None and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionError(f"--config: {path}: unknown option {key!r}{hint}")
        if isinstance(value, bool):
            if value:
                flags.append(f"--{name}")
        elif isinstance(value, (str, int, float)):
            flags.append(f"--{name}={value}")
        elif isinstance(value, list) and (known is None or name in repeatable) and \
                all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            flags.extend(f"--{name}={v}" for v in value)  # a repeated option: each item once
        elif value is None:
            continue
        else:
            raise OptionError(f"--config: {path}: option {key!r} must be a scalar, got {type(value).__name__}")
    return flags + list(argv)


def known_option_names(options_cls) -> set[str]:
    """Every option name Beam knows (its own and all registered subclasses'): the names the
    parsed options carry, and the flags without their dashes (`no_use_public_ips`)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    names = set(PipelineOptions([]).get_all_options(retain_unknown_options=False))
    names.update(options_cls([]).get_all_options(retain_unknown_options=False))
    names.update(flag[2:] for flag in known_flags(options_cls) if flag.startswith("--"))
    return names


def known_flags(options_cls) -> dict[str, argparse.Action]:
    """Every flag (`--runner`, `--input`, `-h`) of Beam's registered PipelineOptions
    subclasses and of `options_cls`, with the argparse action that parses it.  Another
    facext pipeline's options class, imported in the same process, does not count: its
    flags are not this pipeline's."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)  # Beam's own rule: the first of each name
    for cls in seen.values():
        if cls.__module__.startswith("pipelines.") and not issubclass(options_cls, cls):
            continue
        cls._add_argparse_args(parser)  # how Beam itself collects them
    if options_cls not in seen.values():
        options_cls._add_argparse_args(parser)
    return dict(parser._option_string_actions)


def import_runner(argv: list[str]) -> None:
    """Imports the module of the runner `--runner` names, as Beam would when it runs: a
    runner may register options of its own there (the Dask runner's `--dask_*`)."""
    from apache_beam.runners import runner as beam_runner

    names = [arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
             for i, arg in enumerate(argv) if arg.partition("=")[0] == "--runner"]
    if not names or not names[-1]:
        return
    known = getattr(beam_runner, "_RUNNER_MAP", {})  # Beam's short names, as create_runner reads them
    name = known.get(names[-1].lower(), known.get(names[-1].lower() + "runner", names[-1]))
    if "." in name:
        try:
            importlib.import_module(name.rsplit(".", 1)[0])
        except ImportError:
            pass  # Beam says so itself when it makes the runner


def _is_option(arg: str) -> bool:
    """Whether argparse reads `arg` as an option: `--x`, or `-x` that is not a number (`-1`)."""
    if arg.startswith("--"):
        return True
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


def _values_taken(action: argparse.Action, rest: list[str]) -> int:
    """How many of the tokens after a flag (given without `=`) argparse takes as its values."""
    values = 0
    while values < len(rest) and not _is_option(rest[values]):
        values += 1
    nargs = action.nargs
    if nargs == 0:
        return 0
    if nargs is None or nargs == "?":
        return min(values, 1)
    if isinstance(nargs, int):
        return min(values, nargs)
    if nargs == argparse.REMAINDER:
        return len(rest)
    return values  # "*", "+"


def unknown_option(name: str, candidates) -> str:
    """`unknown option --outptu (did you mean --output?)`: the shortest candidate `name`
    abbreviates, else the closest by difflib."""
    candidates = sorted(c for c in candidates if c.startswith("--"))
    close = sorted((c for c in candidates if c.startswith(name)), key=len)[:1]
    close = close or difflib.get_close_matches(name, candidates, n=1)
    return f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else "")


def check_options(argv: list[str], flags: dict[str, argparse.Action], also: tuple[str, ...] = ()) -> None:
    """`OptionError` for the first option of argv that no flag in `flags` spells (no
    abbreviations: Beam parses without them), or a word that is no flag's value.

    `--opt value` and `--opt=value` both work; a token starting with `--` is always an
    option (argparse reads it so), and what follows `=` is always a value.  Tokens after a
    lone `--` are not looked at.  `also`: other flags of the same command line, offered
    as suggestions only.
    """
    i, previous = 0, None
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            return
        if not _is_option(arg):
            after = f" (after {previous}, which takes no value)" if previous and flags[previous].nargs == 0 else ""
            raise OptionError(f"unexpected argument {arg!r}{after}")
        name, eq, _ = arg.partition("=")
        if name not in flags:
            raise OptionError(unknown_option(name, [*flags, *also]))
        previous = name
        if not eq:
            i += _values_taken(flags[name], argv[i:])


def pipeline_argv(argv: list[str], options_cls, rewrite=None, also: tuple[str, ...] = ()) -> list[str]:
    """A pipeline's command line, ready for `options_cls(argv)`: `--config` expanded,
    `rewrite` applied (e.g. `llm_options.bare_flags`), and every option checked against
    `--config` and the flags Beam and `options_cls` know (`check_options`).  A wrong option
    or config file ends the program here, before any work: one `error:` line on stderr,
    exit status 2.
    """
    try:
        import_runner(expand_config(argv, None))  # the config file may name the runner
        flags = known_flags(options_cls)
        # --config is read here; a pipeline declares it too, so that its --help lists it.
        flags.setdefault("--config", argparse.Action(["--config"], "config"))
        repeatable = frozenset(flag[2:] for flag, action in flags.items()
                               if flag.startswith("--") and isinstance(action, argparse._AppendAction))
        argv = expand_config(argv, {flag[2:] for flag in flags if flag.startswith("--")}, repeatable)
        if rewrite is not None:
            argv = rewrite(argv)
        check_options(argv, flags, also)
    except OptionError as exc:
        print(f"error: {exc.code}", file=sys.stderr)
        raise SystemExit(2) from None
    return argv

"""Pipeline options declared once, as dataclass fields, and read from flags and a YAML config
file (flags override the file).

A pipeline declares its options as a dataclass whose fields carry their help in the field
metadata (`option(default, help)`); `add_arguments` makes the argparse flags of those fields,
`option_table` the rows the README's option tables are checked against.  Any module may
declare options this way without importing this one: a field is an option when its
`metadata` holds "help" (and optionally "choices", "flag", "group", "shown").
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

import yaml


def option(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
           group: str | None = None, shown: str | None = None) -> Any:
    """A dataclass field that is a command-line option.

    `flag` spells the flag when it is not `--field_name`; `group` puts it in another help
    group than the dataclass's; `shown` is how `--help` and the docs state the default when
    the value alone says nothing (a `None` that means "the bundled sample").
    """
    metadata = {"help": help, "choices": choices, "flag": flag, "group": group, "shown": shown}
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


def add_arguments(parser, spec, group_title: str) -> None:
    """Adds one flag per option of the dataclass `spec` to `parser` (argparse's, or Beam's).

    Each flag stores into the field's name and has the field's default (as is: argparse does
    not convert a non-string default) and choices; its type comes from the annotation: `int`,
    `float`, `str` or one of them `| None`, and `bool` is a switch (`store_true`, default off).
    The help ends with the default.
    """
    hints = typing.get_type_hints(spec)
    groups: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(spec)}
    for row in option_table(spec):
        title = fields[row.name].metadata.get("group") or group_title
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        kind = _value_type(hints[row.name], f"{spec.__name__}.{row.name}")
        # argparse %-formats help texts; a literal % must be doubled.
        kwargs: dict[str, Any] = {"dest": row.name, "default": row.default,
                                  "help": f"{row.help} (default: {row.shown})".replace("%", "%%")}
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


def _value_type(hint, where: str) -> type:
    """int, float, str or bool, from an annotation that may add `| None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"{where}: an option holds one type (or None), not {hint}")
        hint = kinds[0]
    if hint not in (int, float, str, bool):
        raise TypeError(f"{where}: options are int, float, str or bool, not {hint}")
    return hint


def expand_config(argv: list[str], known: set[str]) -> list[str]:
    """argv with the options of `--config FILE.yaml` put in front, so flags win.

    The file is a mapping of option names (with or without leading dashes) to scalars;
    `true` turns a switch on, `false` leaves it off.  Unknown names are an error.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    args, _ = pre.parse_known_args(argv)
    if not args.config:
        return list(argv)
    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"--config: {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"--config: {path} must hold a mapping of option names to values")
    flags: list[str] = []
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "config":
            raise SystemExit(f"--config: {path} may not name another config file")
        if name not in known:
            raise SystemExit(f"--config: {path}: unknown option {key!r}")
        if isinstance(value, bool):
            if value:
                flags.append(f"--{name}")
        elif isinstance(value, (str, int, float)):
            flags.append(f"--{name}={value}")
        elif value is None:
            continue
        else:
            raise SystemExit(f"--config: {path}: option {key!r} must be a scalar, got {type(value).__name__}")
    return flags + list(argv)


def known_option_names(options_cls) -> set[str]:
    """Every option name Beam knows (its own and all registered subclasses')."""
    from apache_beam.options.pipeline_options import PipelineOptions

    names = set(PipelineOptions([]).get_all_options(retain_unknown_options=False))
    names.update(options_cls([]).get_all_options(retain_unknown_options=False))
    return names

"""Pipeline options from flags and a YAML config file (flags override the file)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


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

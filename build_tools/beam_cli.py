"""`beam run FILE [pipeline options]`: run a pipeline file's `run(argv)`.

apache-beam ships no command line of its own; this is facext's.  (beam.cloud's client,
an unrelated product, also installs a `beam` command; whichever was installed last
wins.  `python -m pipelines.fifa_annotate` always works.)

A file inside a package (folders with `__init__.py`) is imported by its module name,
so Beam's workers can import the same code by reference; a loose file is run by path.
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

from pipelines.common.logs import setup_logging, wants_verbose

USAGE = """usage: beam run FILE [pipeline options]

Runs FILE's run(argv) with the options that follow, e.g.
  beam run pipelines/fifa_annotate.py --input pairs/manifest.jsonl --output out/fifa
  beam run pipelines/fifa_annotate.py --help
"""


def module_name(path: Path) -> tuple[str, Path] | None:
    """(dotted module name, folder to put on sys.path) when `path` sits in a package."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return (".".join(parts), folder) if len(parts) > 1 else None


def load_run(file: str):
    path = Path(file).resolve()
    if not path.is_file():
        raise SystemExit(f"beam run: {file}: no such file")
    found = module_name(path)
    if found:
        name, root = found
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        module = importlib.import_module(name)
        run = getattr(module, "run", None)
    else:
        run = runpy.run_path(str(path), run_name="__beam_pipeline__").get("run")
    if not callable(run):
        raise SystemExit(f"beam run: {file} defines no run(argv)")
    return run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "run" or len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    setup_logging(wants_verbose(argv[2:]))  # before the pipeline file imports the libraries
    run = load_run(argv[1])
    run(argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

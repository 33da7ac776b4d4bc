"""Bundled samples, generated on first use into facext's cache folder.

The folder is `$FACEXT_CACHE` (else `$XDG_CACHE_HOME/facext`, else `~/.cache/facext`); a
lock keeps parallel first runs from writing a sample twice, and a marker file says it is
complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("FACEXT_CACHE"):
        return Path(os.environ["FACEXT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facext"


def generated_once(name: str, make: Callable[[Path], None], what: str) -> Path:
    """`cache_root()/name`, filled by `make(folder)` the first time (`what` names it in the
    one line printed then)."""
    from filelock import FileLock

    folder = cache_root() / name
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            print(f"generating {what} in {folder} (first use only)", flush=True)
            make(folder)
            done.write_text("ok\n")
    return folder

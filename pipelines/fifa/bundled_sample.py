"""The bundled sample pairs: generated on first use into a cache folder.

`beam run pipelines/fifa_annotate.py` with no `--input` runs on them.  The folder is
`$FACEXT_CACHE` (else `$XDG_CACHE_HOME/facext`, else `~/.cache/facext`) /
`sample_pairs-n{N}-seed{S}-v{VERSION}`; a lock keeps parallel first runs from writing
it twice, and a marker file says it is complete.
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_PAIRS = 14  # one pair per edit method, plus the bad pairs
SAMPLE_VERSION = 3  # bump when the generator's output changes


def cache_root() -> Path:
    if os.environ.get("FACEXT_CACHE"):
        return Path(os.environ["FACEXT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facext"


def sample_manifest(n: int = SAMPLE_PAIRS, seed: int = 0) -> Path:
    """The manifest of the bundled sample, generating the pairs if they are not there."""
    from filelock import FileLock

    folder = cache_root() / f"sample_pairs-n{n}-seed{seed}-v{SAMPLE_VERSION}"
    done = folder / ".complete"
    if done.exists():
        return folder / "manifest.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            from pipelines.fifa.sample_data import make_sample_pairs

            print(f"generating the bundled sample pairs in {folder} (first use only)", flush=True)
            make_sample_pairs(folder, n=n, seed=seed)
            done.write_text("ok\n")
    return folder / "manifest.jsonl"

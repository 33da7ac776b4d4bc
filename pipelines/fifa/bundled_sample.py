"""The bundled sample pairs: generated on first use into a cache folder.

`beam run pipelines/fifa_annotate.py` with no `--input` runs on them, in
`pipelines.common.bundled.cache_root()` / `sample_pairs-n{N}-seed{S}-v{VERSION}`.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.common.bundled import generated_once

SAMPLE_PAIRS = 14  # one pair per edit method, plus the bad pairs
SAMPLE_VERSION = 3  # bump when the generator's output changes


def sample_manifest(n: int = SAMPLE_PAIRS, seed: int = 0) -> Path:
    """The manifest of the bundled sample, generating the pairs if they are not there."""
    def make(folder: Path) -> None:
        from pipelines.fifa.sample_data import make_sample_pairs

        make_sample_pairs(folder, n=n, seed=seed)

    folder = generated_once(f"sample_pairs-n{n}-seed{seed}-v{SAMPLE_VERSION}", make, "the bundled sample pairs")
    return folder / "manifest.jsonl"

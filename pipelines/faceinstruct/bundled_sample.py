"""The bundled sample: small trees of some source datasets in their public layouts, built
on first use from the face photos that ship in packages (`pipelines.faceinstruct.source_trees`),
in `pipelines.common.bundled.cache_root()` / `faceinstruct_sources-seed{S}-v{VERSION}`.

`beam run pipelines/faceinstruct_build.py` with neither `--source` nor `--input` runs on
them: images (RAF-DB, CelebA, UTKFace), videos (DFEW, FaceForensics++) and frames of a
video (DISFA), bad items included, so every path of the pipeline runs.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.common.bundled import generated_once

SAMPLE_SOURCES = ("rafdb", "celeba", "utkface", "dfew", "ffpp", "disfa")
SAMPLE_VERSION = 1  # bump when the trees' builder changes what it writes


def sample_sources(seed: int = 0) -> tuple[tuple[str, str], ...]:
    """((NAME, root), ...) of the bundled sample, built if it is not there."""
    def make(folder: Path) -> None:
        from pipelines.faceinstruct.source_trees import build_tree

        for name in SAMPLE_SOURCES:
            build_tree(name, folder / name, seed=seed)

    folder = generated_once(f"faceinstruct_sources-seed{seed}-v{SAMPLE_VERSION}", make,
                            "the bundled FaceInstruct sample datasets")
    return tuple((name, str(folder / name)) for name in SAMPLE_SOURCES)

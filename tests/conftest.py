"""Shared fixtures: the concept tree, one analyzer per session, the two real photos, and
analysed generated pairs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

from build_tools.face_photos import PHOTOS
from fict import load_tree


@pytest.fixture(scope="session")
def tree():
    return load_tree()


@pytest.fixture(scope="session")
def analyzer():
    from pipelines.analysis import PairAnalyzer

    with PairAnalyzer() as a:
        yield a


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: load() for name, load in PHOTOS.items()}


@pytest.fixture(scope="session")
def photo_results(analyzer, photos):
    """Each photo analysed against itself: geometry, crop and label map, empty mask."""
    return {name: analyzer.analyze(image, image.copy()) for name, image in photos.items()}


@pytest.fixture(scope="session")
def sample_analyses(tmp_path_factory, analyzer) -> list:
    """(pair_id, PairAnalysis) of the good pairs of one generated set (8 pairs, seed 21)."""
    from build_tools.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("analysed_pairs")
    make_sample_pairs(folder, n=8, seed=21)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    out = []
    for row in rows:
        if row.get("expected_reject"):
            continue
        result = analyzer.analyze_files(folder / row["real"], folder / row["fake"])
        assert result.ok
        out.append((row["pair_id"], result.analysis))
    return out

"""Shared fixtures: the concept tree, one analyzer per session, the two real photos, and
analysed generated pairs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

from fict import load_tree
from pipelines.vision.face_photos import PHOTOS


@pytest.fixture(scope="session")
def tree():
    return load_tree()


@pytest.fixture(scope="session")
def analyzer():
    from pipelines.fifa.analysis import PairAnalyzer

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
    from pipelines.fifa.sample_data import make_sample_pairs

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


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """(output, pairs folder) of one FnApiRunner run over 6 generated good pairs and the
    generator's bad pairs, half of the identities in the test split."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa.sample_data import make_sample_pairs
    from pipelines.fifa_annotate import run

    folder = tmp_path_factory.mktemp("small_run")
    make_sample_pairs(folder / "pairs", n=6, seed=5)
    output = folder / "out"
    run(["--input", str(folder / "pairs" / "manifest.jsonl"), "--output", str(output),
         "--test_fraction", "0.5", "--max_rows_per_shard", "40"], runner=FnApiRunner())
    return output, folder / "pairs"

"""Shared fixtures: the concept tree, one analyzer per session, the two real photos."""

from __future__ import annotations

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

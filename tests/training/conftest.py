"""Fixtures of the training tests: small real FiFa-Instruct shards, made once per session by
the pipeline (the tests may import `pipelines`; the `training` package may not)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fifa_shards(tmp_path_factory) -> Path:
    """The bundled sample's first 6 pairs through `fifa_annotate`: a `load_from_disk` folder
    (12 crops, 108 samples, all in train)."""
    from pipelines.fifa_annotate import run

    out = tmp_path_factory.mktemp("fifa") / "out"
    run(["--output", str(out), "--limit", "6"])
    return out


@pytest.fixture(scope="session")
def fifa_texts(fifa_shards) -> list[str]:
    """Every turn's text of the shards, in order (what the tokenizer is built from)."""
    from training.data import conversation_texts, open_shards

    return list(conversation_texts(open_shards(fifa_shards)))


@pytest.fixture(scope="session")
def fifa_tokenizer(fifa_texts):
    from training.data import build_tokenizer

    return build_tokenizer(fifa_texts)


@pytest.fixture(scope="session")
def faceinstruct_shards(tmp_path_factory) -> Path:
    """The bundled FaceInstruct sample through `faceinstruct_build`: a `load_from_disk`
    folder (images and 8-frame videos of all five tasks, train and test)."""
    from pipelines.faceinstruct_build import run

    out = tmp_path_factory.mktemp("faceinstruct") / "out"
    run(["--output", str(out)])
    return out

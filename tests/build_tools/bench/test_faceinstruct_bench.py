"""`facext bench faceinstruct` measures what it says: the images and videos it timed are
the fixture trees' good items, every one of them ran through the pipeline, and each rate
comes with its floor from the same run."""

from __future__ import annotations

import json

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.slow


def test_bench_faceinstruct_writes_rates_and_floors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "faceinstruct", "--copies", "1", "-o", "bench.json", "--all-cores"]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    from pipelines.faceinstruct.readers import read_source
    from pipelines.faceinstruct.source_trees import build_tree
    from schemas.faceinstruct import FaceItem

    counts = {}
    for kind, names in (("images", ("rafdb", "celeba", "utkface", "morph", "affectnet")),
                        ("videos", ("dfew", "ferv39k", "crema_d", "ffpp", "fakeavceleb"))):
        n = 0
        for name in names:
            build_tree(name, tmp_path / "trees" / name, seed=0, bad=False)
            n += sum(isinstance(x, FaceItem) for x in read_source(name, str(tmp_path / "trees" / name)))
        counts[kind] = n
    assert (report["images"], report["videos"]) == (counts["images"], counts["videos"])
    assert 0 < report["written"]["images"] <= report["images"] and 0 < report["written"]["videos"] <= report["videos"]
    for rate, floor, ratio in (("images_per_s_per_core", "images_per_s_floor", "image_ratio_to_floor"),
                               ("video_seconds_per_s_per_core", "video_seconds_per_s_floor", "video_ratio_to_floor")):
        assert report[rate] > 0 and report[floor] > 0
        assert report[ratio] == pytest.approx(report[floor] / report[rate], rel=0.01)

"""Categories as manifests spell them: FiFa's four in any case and separators, the
methods of the public datasets, and unknown values counted, never dropped silently."""

from __future__ import annotations

import json

import pytest

from pipelines.fifa.categories import category_of


@pytest.mark.parametrize("category, method, expected", [
    ("face_editing", None, "face editing"), ("Face-Editing", None, "face editing"),
    ("FaceSwap", None, "face swap"), ("face swap", None, "face swap"), ("FS", None, "face swap"),
    ("REENACTMENT", None, "reenactment"), ("entire_synthesis", None, "entire synthesis"),
    (None, "Deepfakes", "face swap"), (None, "FaceSwap", "face swap"), (None, "FaceShifter", "face swap"),
    (None, "Face2Face", "reenactment"), (None, "NeuralTextures", "reenactment"),
    (None, "DeepFakeDetection", "face swap"), ("", "StyleGAN2", "entire synthesis"),
    ("Deepfakes", None, "face swap"),  # a method written in the category column
    ("reenactment", "Deepfakes", "reenactment"),  # the row's category wins over its method
    ("object editing", None, None), ("blah", "Deepfakes", None),  # a category it does not know: no guess
    (None, "my-own-gan", None), (None, None, None), ("  ", "", None),
])
def test_category_of_reads_spellings_and_methods(category, method, expected):
    assert category_of(category, method) == expected


def test_a_run_counts_unknown_and_missing_categories_and_says_so(tmp_path):
    import datasets
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa.sample_data import make_sample_pairs
    from pipelines.fifa_annotate import run

    folder = tmp_path / "pairs"
    make_sample_pairs(folder, n=5, seed=2)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    good = [r for r in rows if not r.get("expected_reject")][:5]
    spellings = [("face_editing", "x"), ("FaceSwap", "x"), ("blah", "x"), (None, "my-gan"), ("Entire-Synthesis", "x")]
    for row, (category, method) in zip(good, spellings, strict=True):
        row["category"], row["method"] = category, method
    (folder / "odd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    done = run(["--input", str(folder / "odd.jsonl"), "--output", str(tmp_path / "out")], runner=FnApiRunner())
    report = done.report
    assert report["pairs_written"] == 4 and report["adds_up"]
    assert report["categories"] == {"by_category": {"face editing": 1, "face swap": 1, "reenactment": 0,
                                                    "entire synthesis": 0},
                                    "unknown": {"blah": 1}, "no_category": 1, "entire_synthesis_rejected": 1}
    # An entire synthesis has no local artifact: refused as a global change, not dropped.
    assert report["rejected"]["by_stage_and_reason"] == {"artifact": {"global_change": 1}}
    rejected = list(datasets.load_from_disk(str(tmp_path / "out" / "rejected")))
    assert [(r["pair_id"], r["category"]) for r in rejected] == [(good[4]["pair_id"], "entire synthesis")]
    assert report["samples"]["by_task"]["cls"] == 2
    rows = [row for split in ("train", "test") for row in datasets.load_from_disk(str(tmp_path / "out" / split))]
    by_pair = {r["pair_id"]: r for r in rows if r["is_fake"]}
    for row, (category, _) in zip(good[:4], spellings[:4], strict=True):
        image = by_pair[row["pair_id"]]
        cls = [s for s in image["samples"] if s["task"] == "cls"]
        assert image["category"] == {"face_editing": "face editing", "FaceSwap": "face swap"}.get(category,
                                                                                                 category or "")
        assert len(cls) == (1 if category in ("face_editing", "FaceSwap") else 0)
    summary = done.summary()
    assert "1 pairs have a category facext does not know ('blah' 1): no cls sample for them" in summary
    assert "1 pairs name no category and no known method" in summary
    assert "1 entire-synthesis pairs rejected as global_change" in summary

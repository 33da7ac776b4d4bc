"""The FiFa-Instruct pipeline end to end on generated pairs mixed with bad inputs.

One FnApiRunner run (session fixture) serves most tests; they check what a user relies
on: every input accounted for, all 11 tasks, masks that match the generated ground
truth, honest negatives, a valid output, and byte-identical re-runs.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.fifa import TASKS
from schemas.masks import decode_mask

N_GOOD = 14
EXTRA_ROWS = [  # manifest rows that are wrong in themselves
    {"pair_id": "bad-missing-key", "real": "pairs/0000_real.png"},
    {"pair_id": "bad-escapes", "real": "../outside.png", "fake": "pairs/0000_fake.png"},
    {"pair_id": "bad-absolute", "real": "/etc/hostname", "fake": "pairs/0000_fake.png"},
]
NOT_JSON = "{this is not json\n"


def run_pipeline(manifest: Path, output: Path, *extra: str, runner=None):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa_annotate import run

    return run(["--input", str(manifest), "--output", str(output), *extra],
               runner=runner if runner is not None else FnApiRunner())


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory) -> Path:
    from pipelines.fifa.sample_data import make_sample_pairs

    folder = tmp_path_factory.mktemp("fifa_pairs")
    make_sample_pairs(folder, n=N_GOOD, seed=3)
    return folder


@pytest.fixture(scope="session")
def manifest(pairs_dir) -> Path:
    """The generator's rows (good pairs, then its bad pairs), a duplicate id, rows with
    bad fields and a line that is not JSON.  Astronaut rows lose their subject_id, so
    they split by pair id and both splits get samples."""
    rows = [json.loads(line) for line in (pairs_dir / "manifest.jsonl").read_text().splitlines()]
    for row in rows:  # two photos are two identities; let one split by pair instead
        if row.get("subject_id") == "astronaut":
            del row["subject_id"]
    duplicate = dict(rows[0], fake=rows[1]["fake"])
    text = "".join(json.dumps(r) + "\n" for r in [*rows, duplicate, *EXTRA_ROWS]) + NOT_JSON
    path = pairs_dir / "mixed.jsonl"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def manifest_rows(manifest) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line != NOT_JSON.strip()]


@pytest.fixture(scope="session")
def output(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fifa_out") / "fifa"
    run_pipeline(manifest, out, "--max_rows_per_shard", "8", "--test_fraction", "0.5")
    return out


@pytest.fixture(scope="session")
def dataset(output):
    import datasets

    return datasets.load_from_disk(str(output))


@pytest.fixture(scope="session")
def images(dataset) -> list[dict]:
    """The shard rows: one per distinct crop, with the samples about it."""
    import datasets

    rows = []
    for split in ("train", "test"):
        rows += list(dataset[split].cast_column("image", datasets.Image(decode=False)))
    return rows


@pytest.fixture(scope="session")
def samples(images) -> list[dict]:
    """The flat view: a row per sample with its image (`schemas.fifa.flat_samples`)."""
    from schemas.fifa import flat_samples

    return [sample for row in images for sample in flat_samples(row)]


@pytest.fixture(scope="session")
def report(output) -> dict:
    return json.loads((output / "run_report.json").read_text())


@pytest.fixture(scope="session")
def rejected(output) -> list[dict]:
    import datasets

    return list(datasets.load_from_disk(str(output / "rejected")))


def test_every_input_is_written_or_rejected_with_its_reason(manifest_rows, samples, rejected, report):
    n_inputs = len(manifest_rows) + 1  # + the line that is not JSON
    written = {s["pair_id"] for s in samples}
    assert report["inputs"] == n_inputs
    assert report["pairs_written"] == len(written)
    assert report["pairs_rejected"] == len(rejected)
    assert report["adds_up"] and len(written) + len(rejected) == n_inputs

    reasons = {(r["pair_id"], r["row"]): r["reason"] for r in rejected}
    for index, row in enumerate(manifest_rows[:-len(EXTRA_ROWS) - 1]):
        expected = row.get("expected_reject")
        if expected:
            assert reasons[(row["pair_id"], index)] == expected, row["pair_id"]
        else:
            assert row["pair_id"] in written, row["pair_id"]
    # The generator's bad pairs cover every way a pair goes wrong in the wild.
    assert {"decode_error", "missing_file", "size_mismatch", "no_face", "multiple_faces",
            "misaligned", "not_localized"} <= set(reasons.values())
    by_id = {r["pair_id"]: r for r in rejected}
    assert by_id["bad-missing-key"]["reason"] == "bad_manifest_row"
    assert by_id["bad-escapes"]["reason"] == "path_outside_manifest"
    assert by_id["bad-absolute"]["reason"] == "path_outside_manifest"
    assert any(r["reason"] == "bad_manifest_row" and "not JSON" in r["detail"] for r in rejected)
    dup = [r for r in rejected if r["reason"] == "duplicate_pair_id"]
    assert len(dup) == 1 and dup[0]["pair_id"] == manifest_rows[0]["pair_id"]
    assert all(r["stage"] and r["detail"] for r in rejected)
    # Stage table: each stage's output is the next stage's input.
    stages = report["stages"]
    assert stages[0]["in"] == n_inputs and stages[-1]["out"] == len(written)
    assert all(a["out"] == b["in"] for a, b in itertools.pairwise(stages))


def test_all_eleven_tasks_with_consistent_masks(samples, report):
    counts = Counter(s["task"] for s in samples)
    assert set(counts) == set(TASKS)
    assert report["samples"]["by_task"] == {t: counts[t] for t in TASKS}
    pairs = {s["pair_id"] for s in samples}
    det = Counter((s["pair_id"], s["is_fake"]) for s in samples if s["task"] == "det")
    assert all(det[(p, True)] == 1 and det[(p, False)] == 1 for p in pairs)  # real ones too
    for s in samples:
        question, answer = s["conversations"][0]["value"], s["conversations"][1]["value"]
        assert question.startswith("<image>\n")
        assert answer.count("[SEG]") == len(s["masks"])
        assert len(s["region_masks"]) == len(s["concepts"])
        if s["task"].endswith("_age") and s["masks"]:
            # every grounded phrase is written <p> name </p> [SEG] and has a non-empty mask
            assert answer.count("<p>") == len(s["masks"])
            assert all(decode_mask(m).any() for m in s["masks"])
        if s["task"].startswith("b_"):
            assert "<bbox>" in question and s["bbox"] is not None


def test_i_loc_masks_agree_with_ground_truth(samples, manifest_rows, pairs_dir):
    rows = {r["pair_id"]: r for r in manifest_rows if r.get("gt_mask")}
    ious = []
    for s in samples:
        if s["task"] != "i_loc" or s["pair_id"] not in rows:
            continue
        row = rows[s["pair_id"]]
        gt = cv2.imread(str(pairs_dir / row["gt_mask"]), cv2.IMREAD_GRAYSCALE) > 0
        crop_mask = decode_mask(s["masks"][0]).astype(np.uint8)
        m = np.asarray(s["crop_transform"], np.float64)
        original = cv2.warpAffine(crop_mask, m, (gt.shape[1], gt.shape[0]),
                                  flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        ious.append((original & gt).sum() / max((original | gt).sum(), 1))
    assert len(ious) == N_GOOD
    assert np.mean(ious) >= 0.7, ious


def test_negatives_are_honest(samples):
    whole = {s["pair_id"]: decode_mask(s["masks"][0]) for s in samples if s["task"] == "i_loc"}
    negatives = [s for s in samples if s["negative"]]
    assert {s["task"] for s in negatives} == {"r_toe", "r_age", "r_loc", "b_toe", "b_age", "b_loc"}
    for s in negatives:
        changed = whole[s["pair_id"]]
        if s["task"].startswith("r_"):
            assert not (decode_mask(s["region_masks"][0]) & changed).any()
        else:
            x0, y0, x1, y1 = s["bbox"]
            assert not changed[y0:y1, x0:x1].any()
        assert s["is_fake"] and not s["masks"]
    positives = [s for s in samples if s["task"][0] in "rb" and not s["negative"]]
    for s in positives:  # the region or box asked about does hold changed pixels
        changed = whole[s["pair_id"]]
        if s["task"].startswith("r_"):
            region = decode_mask(s["region_masks"][-1] if s["task"] == "r_loc" else s["region_masks"][0])
            assert (region & changed).any()
        else:
            x0, y0, x1, y1 = s["bbox"]
            assert changed[y0:y1, x0:x1].any()


def test_splits_are_identity_disjoint_and_shards_bounded(samples, images, output, report):
    ids = {split: {s["subject_id"] or s["pair_id"] for s in samples if s["split"] == split}
           for split in ("train", "test")}
    assert ids["train"] and ids["test"] and not ids["train"] & ids["test"]
    import pyarrow as pa

    sizes = {}
    for folder in ("train", "test", "rejected"):
        sizes[folder] = []
        for path in sorted((output / folder).glob("data-*.arrow")):
            with pa.memory_map(str(path)) as src:
                sizes[folder].append(pa.ipc.open_stream(src).read_all().num_rows)
    assert sum(sizes["train"]) + sum(sizes["test"]) == len(images) == report["images"]["total"]
    for folder, found in sizes.items():  # as few files as --max_rows_per_shard 8 allows, near-equal
        assert len(found) == max(1, math.ceil(sum(found) / 8)), (folder, found)
        assert max(found) <= 8 and max(found) - min(found) <= 1, (folder, found)
    assert len(sizes["train"]) + len(sizes["test"]) >= 4  # more rows than one shard may hold


def test_each_crop_is_stored_once_with_every_sample_about_it(images, samples, report):
    """A pair gives two rows, its fake crop (every sample but the real det) and its real
    crop (the real det only); no image bytes repeat across rows."""
    import hashlib

    by_pair: dict[str, list[dict]] = {}
    for row in images:
        by_pair.setdefault(row["pair_id"], []).append(row)
    assert len(by_pair) == report["pairs_written"]
    for pair_id, rows in by_pair.items():
        assert sorted(r["image_id"] for r in rows) == [f"{pair_id}/fake", f"{pair_id}/real"]
        real = next(r for r in rows if not r["is_fake"])
        assert [s["task"] for s in real["samples"]] == ["det"]
    digests = [hashlib.sha256(row["image"]["bytes"]).hexdigest() for row in images]
    assert len(set(digests)) == len(images)
    assert len(samples) == report["samples"]["total"] == sum(len(r["samples"]) for r in images)


def test_validate_passes_and_catches_a_broken_report(output, tmp_path):
    from build_tools.cli import main
    from build_tools.validate import validate

    assert validate(output).ok, validate(output).problems
    assert main(["validate", str(output)]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(output, broken)
    report = json.loads((broken / "run_report.json").read_text())
    report["pairs_rejected"] -= 1
    report["samples"]["by_split"]["train"] += 1
    (broken / "run_report.json").write_text(json.dumps(report))
    problems = validate(broken).problems
    assert any("inputs" in p for p in problems) and any("train has" in p for p in problems)


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "run_report.json"}


def test_rerun_is_byte_identical(manifest, output, tmp_path):
    again = tmp_path / "again"
    run_pipeline(manifest, again, "--max_rows_per_shard", "8", "--test_fraction", "0.5")
    first, second = _shard_bytes(output), _shard_bytes(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_output_folder_of_something_else_is_refused(manifest, tmp_path, capsys):
    foreign = tmp_path / "data"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "keep.txt").write_text("not ours")
    with pytest.raises(SystemExit) as exit_:
        run_pipeline(manifest, foreign)
    assert exit_.value.code == 2
    assert "choose an empty or new folder" in capsys.readouterr().err
    assert (foreign / "train" / "keep.txt").read_text() == "not ours"


def test_ratings_sit_only_on_the_rated_answers(samples, report):
    """The rate stage judges the describer's texts; only the samples whose answers render
    them (positive toe and age) carry its rating.  A real image's det sample, cls, loc
    (a mask) and the honest negatives claim no concept check they never had."""
    from pipelines.fifa.samples import judged_answer

    assert report["options"]["rater"] == "evidence"
    rated = {s["task"] for s in samples if s["rating"] is not None}
    assert rated == {"i_toe", "i_age", "r_toe", "r_age", "b_toe", "b_age"}
    for s in samples:
        assert (s["rating"] is not None) == judged_answer(s["task"], s["negative"]), (s["task"], s["negative"])
        if not judged_answer(s["task"], s["negative"]):
            assert s["hallucinated_concepts"] == []
    real_det = [s for s in samples if s["task"] == "det" and not s["is_fake"]]
    assert real_det and all(s["rating"] is None for s in real_det)


def test_validate_refuses_a_rating_on_an_unrated_answer(output, tmp_path):
    import datasets

    from build_tools.validate import validate

    broken = tmp_path / "broken"
    shutil.copytree(output, broken)
    train = datasets.load_from_disk(str(output / "train"))
    pair_rating = next(s["rating"] for row in train["samples"] for s in row if s["rating"])
    moved = train.map(lambda samples: {"samples": [{**s, "rating": pair_rating if s["task"] == "det" else s["rating"]}
                                                   for s in samples]}, input_columns=["samples"])
    shutil.rmtree(broken / "train")
    moved.save_to_disk(str(broken / "train"), num_shards=len(list((output / "train").glob("*.arrow"))))
    problems = validate(broken).problems
    assert any("(det): carries the pair's rating" in p for p in problems), problems


# --- bad inputs in two places, and balanced shards ------------------------------------------

N_SMALL = 3  # good pairs: 54 samples about 6 crops, all in train


@pytest.fixture(scope="module")
def two_copies(tmp_path_factory) -> tuple[Path, Path]:
    """The same bad-input manifest (3 good pairs, the generator's bad pairs, a truncated
    PNG, a text file named .png, an empty file, a missing file, a folder for an image and
    a misspelt column) in two folders, each run with at most 10 rows a shard."""
    from pipelines.fifa.sample_data import make_sample_pairs

    source = tmp_path_factory.mktemp("bad_inputs") / "data"
    make_sample_pairs(source, n=N_SMALL, seed=4)
    good = (source / "pairs" / "0000_real.png").read_bytes()
    (source / "pairs" / "cut.png").write_bytes(good[:200])
    (source / "pairs" / "notes.png").write_text("not an image\n")
    (source / "pairs" / "empty.png").write_bytes(b"")
    rows = (source / "manifest.jsonl").read_text()
    extra = [{"pair_id": "x-truncated", "real": "pairs/0000_real.png", "fake": "pairs/cut.png"},
             {"pair_id": "x-text", "real": "pairs/notes.png", "fake": "pairs/0000_fake.png"},
             {"pair_id": "x-empty", "real": "pairs/0000_real.png", "fake": "pairs/empty.png"},
             {"pair_id": "x-missing", "real": "pairs/absent.png", "fake": "pairs/0000_fake.png"},
             {"pair_id": "x-folder", "real": "pairs", "fake": "pairs/0000_fake.png"},
             {"pair_id": "x-misspelt", "rael": "pairs/0000_real.png", "fake": "pairs/0000_fake.png"}]
    (source / "bad.jsonl").write_text(rows + "".join(json.dumps(r) + "\n" for r in extra) + NOT_JSON)
    outputs = []
    for name in ("first", "second place"):
        copy = tmp_path_factory.mktemp("copy") / name
        shutil.copytree(source, copy)
        out = copy.parent / "out"
        run_pipeline(copy / "bad.jsonl", out, "--max_rows_per_shard", "4", "--test_fraction", "0")
        outputs.append(out)
    return outputs[0], outputs[1]


def test_rejected_table_is_the_same_wherever_the_data_lies(two_copies):
    """No addresses, temporary paths or timings in a detail; image paths as the manifest
    wrote them: the two copies give byte-identical rejected tables."""
    import datasets

    first, second = two_copies
    rows = list(datasets.load_from_disk(str(first / "rejected")))
    reasons = {r["pair_id"]: r["reason"] for r in rows}
    assert {"decode_error", "missing_file", "size_mismatch", "no_face", "multiple_faces", "misaligned",
            "not_localized", "face_too_small", "bad_manifest_row"} <= set(reasons.values())
    assert [reasons[k] for k in ("x-truncated", "x-text", "x-empty", "x-missing", "x-folder", "x-misspelt")] == [
        "decode_error", "decode_error", "decode_error", "missing_file", "decode_error", "bad_manifest_row"]
    for row in rows:
        text = json.dumps(row)
        assert not re.search(r"0x[0-9a-f]{6,}", text) and str(first.parent) not in text, row
        assert not re.search(r"\d+\.\d+ ?(s|ms)\b", row["detail"]), row  # no timings
    by_id = {r["pair_id"]: r for r in rows}
    assert by_id["x-text"]["detail"] == "real notes.png: cannot decode image: not a known image format"
    assert by_id["x-missing"]["detail"] == "real absent.png does not exist"
    assert (by_id["x-missing"]["real"], by_id["x-missing"]["fake"]) == ("pairs/absent.png", "pairs/0000_fake.png")
    assert by_id["x-misspelt"]["detail"] == "missing real (the row has columns: fake, pair_id, rael)"
    a, b = _shard_bytes(first / "rejected"), _shard_bytes(second / "rejected")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_shards_are_as_few_as_allowed_and_near_equal(two_copies):
    """6 image rows at most 4 a shard: 2 files of 3 rows (it once gave files of 1 to 6
    rows), the same bytes on a re-run elsewhere, loadable, valid."""
    import datasets
    import pyarrow as pa

    from build_tools.validate import validate

    first, second = two_copies
    files = sorted((first / "train").glob("data-*.arrow"))
    sizes = []
    for path in files:
        with pa.memory_map(str(path)) as src:
            sizes.append(pa.ipc.open_stream(src).read_all().num_rows)
    assert sizes == [3] * 2
    assert [f.name for f in files] == [f"data-{i:05d}-of-00002.arrow" for i in range(2)]
    report = json.loads((first / "run_report.json").read_text())
    assert report["shards"]["train"] == {"files": 2, "rows": 6, "bytes": sum(f.stat().st_size for f in files)}
    a, b = _shard_bytes(first), _shard_bytes(second)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    dataset = datasets.load_from_disk(str(first))
    assert dataset["train"].num_rows == 6 and dataset["test"].num_rows == 0
    assert sum(len(samples) for samples in dataset["train"]["samples"]) == 54
    assert validate(first).ok, validate(first).problems


def test_the_flat_view_is_a_row_per_sample_with_its_image(dataset, samples, report):
    """`flat_dataset`, the one call for a row per sample, gives every sample once with its
    crop's bytes and the flat schema (`FifaSample`); its provenance lists the sample's
    instruction template first."""
    import datasets

    from schemas.features import hf_features
    from schemas.fifa import FifaSample, flat_dataset

    flat = {split: flat_dataset(dataset[split]) for split in ("train", "test")}
    for split, ds in flat.items():
        assert ds.features.to_dict() == hf_features(FifaSample).to_dict()
        assert ds.num_rows == report["samples"]["by_split"][split]
    rows = [r for ds in flat.values() for r in ds.cast_column("image", datasets.Image(decode=False))]
    assert sorted(r["sample_id"] for r in rows) == sorted(s["sample_id"] for s in samples)
    by_id = {s["sample_id"]: s for s in samples}
    for row in rows:
        ours = by_id[row["sample_id"]]
        assert row["image"]["bytes"] == ours["image"]["bytes"] and row["conversations"] == ours["conversations"]
        assert row["provenance"]["prompt_templates"][0]["id"].startswith(f"fifa_instructions/{row['task']}@")


def test_validate_refuses_a_crop_stored_twice(output, tmp_path):
    import datasets

    from build_tools.validate import validate

    broken = tmp_path / "broken"
    shutil.copytree(output, broken)
    train = datasets.load_from_disk(str(output / "train"))
    twice = datasets.concatenate_datasets([train, train.select([0])])
    shutil.rmtree(broken / "train")
    twice.save_to_disk(str(broken / "train"), num_shards=len(list((output / "train").glob("*.arrow"))))
    problems = validate(broken).problems
    assert any(f"{train[0]['image_id']}: duplicate image_id (a crop stored twice)" in p for p in problems), problems
    assert any("train has" in p and "images" in p for p in problems), problems


def test_each_crop_carries_the_real_faces_landmarks(images):
    """The `landmarks` column: 68 iBUG points in 0..1, the same on a pair's real and fake
    crops, and where a face mesh found afresh on the stored real crop puts them (another path:
    the mesh on the crop's pixels, not the original's mesh warped into the crop)."""
    import io

    from PIL import Image

    from pipelines.vision.faces import FaceAnalyzer
    from pipelines.vision.landmarks68 import ibug68_from_mesh

    by_pair: dict[str, list[dict]] = {}
    for row in images:
        by_pair.setdefault(row["pair_id"], []).append(row)
    errors = []
    with FaceAnalyzer() as analyzer:
        for rows in by_pair.values():
            points = [np.asarray(r["landmarks"]) for r in rows]
            assert all(p.shape == (68, 2) and (p >= 0).all() and (p <= 1).all() for p in points)
            assert all(np.array_equal(p, points[0]) for p in points)
            real = next((r for r in rows if not r["is_fake"]), None)
            if real is None:
                continue
            crop = np.asarray(Image.open(io.BytesIO(real["image"]["bytes"])).convert("RGB"))
            found = ibug68_from_mesh(analyzer.geometry(crop).landmarks) / np.array([crop.shape[1], crop.shape[0]])
            interocular = np.linalg.norm(found[45] - found[36])
            errors.append(float(np.linalg.norm(found - points[0], axis=1).mean() / interocular))
    assert len(errors) >= 3
    assert max(errors) < 0.03, errors  # measured 0.4-0.9 % of the eye distance

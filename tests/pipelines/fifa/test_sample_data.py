"""The sample pairs: every edit present, ground truth that matches the pixels and the
intended region and side, bad pairs that really are bad, byte-identical re-runs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fict.regions import FACE_OVAL, label_map
from pipelines.fifa.sample_data import (
    BAD_PAIRS,
    GT_MIN_CHANGE,
    METHODS,
    largest_channel_change,
    make_sample_pairs,
    mirror_concept,
)
from pipelines.vision.faces import FaceAnalyzer, FaceRejected
from pipelines.vision.images import ImageRejected, read_image
from schemas.common import RejectReason

N_GOOD = len(METHODS)  # every edit once
SEED = 0
REQUIRED = {"pair_id", "real", "fake", "method", "category", "subject_id", "gt_mask", "gt_concepts"}
# Encodings whose files hold exactly the pixels the ground truth was measured on.
LOSSLESS = {"png", "gray_png", "rgba_png", "png16"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    manifest = make_sample_pairs(out, n=N_GOOD, seed=SEED)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return out, rows


@pytest.fixture(scope="module")
def good(sample):
    out, rows = sample
    pairs = []
    for row in rows:
        if row["expected_reject"] is None:
            real, fake = read_image(out / row["real"]), read_image(out / row["fake"])
            gt = cv2.imread(str(out / row["gt_mask"]), cv2.IMREAD_UNCHANGED)
            pairs.append((row, real, fake, gt))
    return pairs


@pytest.fixture(scope="module")
def faces():
    with FaceAnalyzer() as analyzer:
        yield analyzer


def _diff(real, fake):
    return np.abs(real.astype(np.int16) - fake.astype(np.int16)).mean(-1)


def _largest(real, fake):
    return largest_channel_change(real, fake)


def test_manifest_rows_and_keys(sample):
    out, rows = sample
    assert len(rows) == N_GOOD + len(BAD_PAIRS)
    assert len({r["pair_id"] for r in rows}) == len(rows)
    for row in rows:
        assert REQUIRED <= set(row), row["pair_id"]
        assert {"expected_reject", "encoding", "source_photo", "seed"} <= set(row)
        assert (out / row["real"]).is_file()
        # The missing_file pair's fake is listed but never written.
        assert (out / row["fake"]).is_file() == (row["expected_reject"] != "missing_file")
        assert not row["real"].startswith("/")  # relative to the folder
    assert [r["expected_reject"] for r in rows[:N_GOOD]] == [None] * N_GOOD
    assert {r["method"] for r in rows[:N_GOOD]} == set(METHODS)
    assert {r["category"] for r in rows[:N_GOOD]} == {"face editing"}
    assert {r["subject_id"] for r in rows[:N_GOOD]} == {"astronaut", "grace_hopper"}


def test_reject_reasons_are_typed_and_complete(sample):
    _, rows = sample
    reasons = [r["expected_reject"] for r in rows if r["expected_reject"] is not None]
    assert sorted(reasons) == sorted(reason.value for reason in BAD_PAIRS)
    assert {RejectReason(value) for value in reasons} == {
        RejectReason.MISALIGNED, RejectReason.SIZE_MISMATCH, RejectReason.NOT_LOCALIZED,
        RejectReason.DECODE_ERROR, RejectReason.NO_FACE, RejectReason.FACE_TOO_SMALL,
        RejectReason.MULTIPLE_FACES, RejectReason.MISSING_FILE}
    # New bad pairs are appended: the earlier ones keep their place after the good pairs.
    assert list(BAD_PAIRS[:6]) == [
        RejectReason.MISALIGNED, RejectReason.SIZE_MISMATCH, RejectReason.NOT_LOCALIZED,
        RejectReason.DECODE_ERROR, RejectReason.NO_FACE, RejectReason.FACE_TOO_SMALL]


def test_encodings_match_the_files(sample):
    out, rows = sample
    seen = set()
    for row in rows[:N_GOOD]:
        enc = row["encoding"]
        seen.add(enc)
        real = cv2.imread(str(out / row["real"]), cv2.IMREAD_UNCHANGED)
        fake = cv2.imread(str(out / row["fake"]), cv2.IMREAD_UNCHANGED)
        assert row["real"].endswith(".jpg") == (enc == "jpeg")
        assert real.ndim == (2 if enc == "gray_png" else 3)
        assert (fake.dtype, real.dtype) == ((np.uint16,) * 2 if enc == "png16" else (np.uint8,) * 2)
        assert fake.shape[-1] == 4 if enc == "rgba_png" else fake.shape == real.shape
    # Re-encoding and unusual PNG layouts are all represented in a 14-pair set.
    assert {"png", "png_noise", "jpeg", "rgba_png", "png16"} <= seen


def test_gt_masks_match_size_and_pixels(good):
    for row, real, fake, gt in good:
        name = row["pair_id"]
        assert gt.shape == real.shape[:2] == fake.shape[:2], name
        assert set(np.unique(gt)) <= {0, 255}, name
        truth = gt > 0
        assert truth.sum() >= 30, name
        diff = _diff(real, fake)
        # Noise and JPEG move pixels a little; the edit still stands out.
        assert diff[truth].mean() >= 10, (name, diff[truth].mean())
        if row["encoding"] in LOSSLESS:  # the files hold the very pixels measured
            assert _largest(real, fake)[truth].min() > GT_MIN_CHANGE, name


def test_edits_are_local(good):
    for row, real, fake, gt in good:
        if row["encoding"] not in LOSSLESS:
            continue
        name = row["pair_id"]
        truth = gt > 0
        diff = _diff(real, fake)
        assert diff[~truth].mean() < 0.1, name
        assert _largest(real, fake)[~truth].max() <= GT_MIN_CHANGE, name  # the truth is every change
        # Beyond the soft edge nothing changed at all.
        far = cv2.dilate(truth.astype(np.uint8), np.ones((31, 31), np.uint8)) == 0
        assert diff[far].max() == 0, name


def test_gt_concepts_lie_under_the_edited_region_and_side(good, tree):
    for row, *_ in good:
        name = row["pair_id"]
        assert row["gt_concepts"], name
        allowed = {a for t in row["target_concepts"] for a in tree.atomic_descendants(t)}
        assert set(row["gt_concepts"]) <= allowed, name
        assert all(tree[c].atomic for c in row["gt_concepts"])
        if row["side"] in ("left", "right"):
            other = "right_" if row["side"] == "left" else "left_"
            assert not any(c.startswith(other) for c in row["gt_concepts"]), name


def test_one_sided_edits_land_in_their_region(good, faces, tree):
    """The label map recomputed on the written real image holds the ground truth on
    the intended side; the mirror region holds almost none of it."""
    checked = 0
    for row, real, fake, gt in good:
        if row["side"] not in ("left", "right") or row["encoding"] in ("gray_png", "jpeg"):
            continue  # the label map is recomputed on the very real image the edit saw
        g = faces.geometry(real)
        crop = g.warp(real)
        labels = label_map(g.landmarks_crop, g.landmarks[:, 2], faces.segment(crop) > 0.5, g.crop_size)
        h, w = real.shape[:2]
        labels = g.unwarp(labels, (w, h))
        reach = g.unwarp(np.ones(crop.shape[:2], np.uint8), (w, h)) > 0

        def region(concepts):
            ids = [tree.atomic_index[a] for c in concepts for a in tree.atomic_descendants(c)]
            return np.isin(labels, ids) & reach

        truth = gt > 0
        target = region(row["target_concepts"])
        mirror = region([mirror_concept(c) for c in row["target_concepts"]])
        inside = (truth & target).sum() / truth.sum()
        on_mirror = (truth & mirror).sum() / truth.sum()
        # The truth is every changed pixel, the feathered border outside the region too.
        assert inside >= 0.7, (row["pair_id"], inside)
        assert on_mirror <= 0.02, (row["pair_id"], on_mirror)
        # The subject's left is the image's right in these upright (|angle| <= 12 deg) photos.
        nose_x = g.landmarks[1, 0]
        centre_x = np.nonzero(truth)[1].mean()
        assert (centre_x > nose_x) == (row["side"] == "left"), row["pair_id"]
        checked += 1
    assert checked >= 3


def test_bad_pairs_are_bad_in_the_named_way(sample, faces):
    out, rows = sample
    bad = {r["expected_reject"]: r for r in rows if r["expected_reject"]}

    with pytest.raises(ImageRejected) as exc:
        read_image(out / bad["decode_error"]["fake"])
    assert exc.value.reason == RejectReason.DECODE_ERROR

    row = bad["size_mismatch"]
    assert read_image(out / row["real"]).shape != read_image(out / row["fake"]).shape

    row = bad["misaligned"]
    real, fake = (cv2.cvtColor(read_image(out / row[k]), cv2.COLOR_RGB2GRAY).astype(np.float32)
                  for k in ("real", "fake"))
    (dx, dy), response = cv2.phaseCorrelate(real, fake)
    assert 5.5 <= np.hypot(dx, dy) <= 8.5 and response > 0.3
    assert np.allclose((dx, dy), row["shift_px"], atol=0.5)

    row = bad["no_face"]
    assert faces.detect(read_image(out / row["real"])) == []

    row = bad["face_too_small"]
    found = faces.detect(read_image(out / row["real"]))
    assert found and found[0].size < faces.config.min_face_px

    row = bad["not_localized"]  # most of the face changed, not one feature
    real, fake = read_image(out / row["real"]), read_image(out / row["fake"])
    g = faces.geometry(real)
    oval = np.zeros(real.shape[:2], np.uint8)
    cv2.fillConvexPoly(oval, np.round(g.landmarks[FACE_OVAL, :2]).astype(np.int32), 1)
    assert np.mean(_largest(real, fake)[oval > 0] > GT_MIN_CHANGE) > 0.6
    assert len(row["gt_concepts"]) > 40

    row = bad["multiple_faces"]  # two faces, both strong and large enough, one edited
    real, fake = read_image(out / row["real"]), read_image(out / row["fake"])
    assert real.shape == fake.shape
    found = faces.detect(real)
    assert len(found) == 2, found
    assert all(f.score >= faces.config.second_face_confidence for f in found)
    assert all(f.size >= 1.5 * faces.config.min_face_px for f in found)
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in found)
    assert centres[0] < real.shape[1] / 2 < centres[1]  # side by side
    truth = cv2.imread(str(out / row["gt_mask"]), cv2.IMREAD_GRAYSCALE) > 0
    assert truth.sum() >= 30 and _largest(real, fake)[truth].min() > GT_MIN_CHANGE
    edited = (slice(None), slice(0, real.shape[1] // 2)) if row["edited_side"] == "left" else (
        slice(None), slice(real.shape[1] // 2, None))
    assert truth[edited].sum() == truth.sum()  # the edit is on one of the faces only
    with pytest.raises(FaceRejected) as face_exc:
        faces.the_face(real)
    assert face_exc.value.reason == RejectReason.MULTIPLE_FACES

    row = bad["missing_file"]  # the real is a usable face photo, the fake is not there
    assert len(faces.detect(read_image(out / row["real"]))) == 1
    assert not (out / row["fake"]).exists()
    with pytest.raises(ImageRejected) as exc:
        read_image(out / row["fake"])
    assert exc.value.reason == RejectReason.MISSING_FILE


def test_same_seed_gives_identical_files(sample, tmp_path):
    out, rows = sample
    again = make_sample_pairs(tmp_path, n=N_GOOD, seed=SEED)
    assert again.read_bytes() == (out / "manifest.jsonl").read_bytes()
    first = sorted(p.name for p in (out / "pairs").iterdir())
    missing = next(r["fake"] for r in rows if r["expected_reject"] == "missing_file")
    assert not (tmp_path / missing).exists()
    assert first == sorted(p.name for p in (tmp_path / "pairs").iterdir())
    for name in first:
        assert (out / "pairs" / name).read_bytes() == (tmp_path / "pairs" / name).read_bytes(), name


def test_cli_arguments_write_only_the_bad_pairs_for_n_0(tmp_path, capsys):
    from build_tools.cli import build_parser, main

    assert build_parser().parse_args(["sample-data", "--out", "x"]).n == 40
    assert main(["sample-data", "-o", str(tmp_path), "--n", "0", "--seed", "3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["expected_reject"] for r in rows] == [reason.value for reason in BAD_PAIRS]
    assert "sample-0000-misaligned" in capsys.readouterr().out

"""Acceptance on generated pairs: mask IoU against ground truth, the intended concepts
flagged and far ones not, bad pairs rejected with their reasons, files from the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from build_tools.cli import main
from pipelines.fifa.sample_data import make_sample_pairs
from schemas.common import RejectReason

N_GOOD = 28  # every edit method twice


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    manifest = make_sample_pairs(out, n=N_GOOD, seed=7)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return out, rows


@pytest.fixture(scope="module")
def analysed(sample, analyzer):
    out, rows = sample
    return [(row, analyzer.analyze_files(out / row["real"], out / row["fake"])) for row in rows]


def _truth_in_crop(out, row, result):
    gt = cv2.imread(str(out / row["gt_mask"]), cv2.IMREAD_GRAYSCALE)
    return result.geometry.warp(gt, cv2.INTER_LINEAR) >= 128


def _good(analysed):
    return [(row, result) for row, result in analysed if not row.get("expected_reject")]


def test_every_good_pair_is_analysed(analysed):
    good = _good(analysed)
    assert len(good) == N_GOOD
    failed = [(row["pair_id"], result.analysis.reason) for row, result in good if not result.ok]
    assert not failed


def test_default_mask_mean_iou(sample, analysed):
    out, _ = sample
    ious = {}
    for row, result in _good(analysed):
        truth = _truth_in_crop(out, row, result)
        mask = result.artifact_mask
        ious[row["pair_id"]] = np.count_nonzero(mask & truth) / max(np.count_nonzero(mask | truth), 1)
    mean_iou = float(np.mean(list(ious.values())))
    print(f"mean IoU {mean_iou:.3f}; lowest: {sorted(ious.items(), key=lambda kv: kv[1])[:3]}")
    assert mean_iou >= 0.7


def test_intended_concepts_flagged_far_concepts_not(sample, analysed, tree):
    out, _ = sample
    missed, far_flagged, mirror_flagged = [], [], []
    for row, result in _good(analysed):
        flagged = {c.id for c in result.analysis.concepts if c.artifact and c.atomic}
        for concept in row["gt_concepts"]:
            if concept not in flagged:
                missed.append((row["pair_id"], concept))
            mirror = ("right_" + concept[5:] if concept.startswith("left_") else
                      "left_" + concept[6:] if concept.startswith("right_") else None)
            if mirror and mirror not in row["gt_concepts"] and mirror in flagged:
                mirror_flagged.append((row["pair_id"], mirror))
        # Far: atomic regions that do not come within 24 crop px of the true change.
        truth = _truth_in_crop(out, row, result).astype(np.uint8)
        near = cv2.dilate(truth, np.ones((49, 49), np.uint8)).astype(bool)
        near_labels = set(np.unique(result.labels[near]).tolist())
        far = {tree.atomic[k].id for k in range(len(tree.atomic)) if k not in near_labels}
        far_flagged += [(row["pair_id"], c) for c in flagged & far]
    assert not missed, missed
    assert not mirror_flagged, mirror_flagged
    assert not far_flagged, far_flagged


def test_bad_pairs_rejected_with_their_reason(analysed):
    bad = [(row, result) for row, result in analysed if row.get("expected_reject")]
    reasons = {row["expected_reject"] for row, _ in bad}
    assert reasons >= {"misaligned", "size_mismatch", "not_localized", "decode_error", "no_face",
                       "face_too_small", "multiple_faces", "missing_file"}
    for row, result in bad:
        assert result.analysis.status == "rejected", row["pair_id"]
        assert result.analysis.reason == RejectReason(row["expected_reject"]), (
            row["pair_id"], result.analysis.reason, result.analysis.detail)


def test_analyze_cli_writes_the_pair_folder(sample, tmp_path, tree):
    out, rows = sample
    row = next(r for r in rows if not r.get("expected_reject"))
    target = tmp_path / "pair"
    assert main(["analyze", str(out / row["real"]), str(out / row["fake"]), "--out", str(target)]) == 0
    record = json.loads((target / "analysis.json").read_text())
    assert record["status"] == "ok"
    assert np.array(record["crop_transform"]).shape == (2, 3)
    assert record["crop_size"] == [512, 512]
    assert len(record["concepts"]) == 184
    assert set(record["concepts"][0]) >= {"id", "name", "atomic", "coverage", "share", "artifact"}
    mask = cv2.imread(str(target / "artifact_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255} and mask.any()
    from PIL import Image

    labels = np.asarray(Image.open(target / "label_map.png"))
    assert labels.shape == (512, 512) and labels.max() < len(tree.atomic)
    overlay = cv2.imread(str(target / "overlay.png"))
    assert overlay is not None and overlay.shape[1] > 4 * overlay.shape[0] / 2
    # Mapping the crop mask back with the stored transform lands on the ground truth.
    gt = cv2.imread(str(out / row["gt_mask"]), cv2.IMREAD_GRAYSCALE) > 0
    back = cv2.warpAffine(mask, np.array(record["crop_transform"]), gt.shape[::-1],
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    assert np.count_nonzero(back & gt) / np.count_nonzero(back | gt) >= 0.5


def test_rejected_pair_cli_record(sample, tmp_path):
    out, rows = sample
    row = next(r for r in rows if r.get("expected_reject") == "size_mismatch")
    assert main(["analyze", str(out / row["real"]), str(out / row["fake"]), "--out", str(tmp_path)]) == 3  # 3: rejected
    record = json.loads((tmp_path / "analysis.json").read_text())
    assert record["status"] == "rejected" and record["reason"] == "size_mismatch"
    assert not (tmp_path / "artifact_mask.png").exists()


def test_reanalysis_is_byte_identical(sample, analysed, analyzer):
    out, _ = sample
    row, first = _good(analysed)[0]
    again = analyzer.analyze_files(out / row["real"], out / row["fake"])
    assert again.analysis.model_dump_json() == first.analysis.model_dump_json()
    assert np.array_equal(again.labels, first.labels)

"""FiFa-Bench metrics on hand-made cases whose values are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from fict.mentions import matcher_for
from schemas.common import RleMask
from schemas.masks import encode_mask
from training.metrics import (
    aggregate,
    category_accuracy,
    concept_mentions,
    cumulative_iou,
    detection_metrics,
    mask_iou,
    mean_iou,
    meteor,
)

# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("scores, labels, auc", [
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # every fake above every real
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # every fake below every real
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all 4 (fake, real) pairs tied: 4 · 1/2 / 4
    # 3 fakes 0.9, 0.4, 0.6 and 3 reals 0.5, 0.3, 0.6.  Pairs a fake wins: 0.9 beats all 3,
    # 0.4 beats 0.3, 0.6 beats 0.5 and 0.3 and ties 0.6 (half): 3 + 1 + 2.5 = 6.5 of 9.
    # By ranks: 0.3 0.4 0.5 0.6 0.6 0.9 -> 1 2 3 4.5 4.5 6; fakes 2 + 4.5 + 6 = 12.5;
    # (12.5 - 3·4/2) / (3·3) = 6.5 / 9 = 13/18.
    ([0.9, 0.4, 0.6, 0.5, 0.3, 0.6], [1, 1, 1, 0, 0, 0], 13 / 18),
])
def test_auc_by_ranks(scores, labels, auc):
    assert detection_metrics(scores, labels)["auc"] == pytest.approx(auc)


def test_auc_does_not_depend_on_sample_order():
    scores = np.array([0.9, 0.4, 0.6, 0.5, 0.3, 0.6])
    labels = np.array([1, 1, 1, 0, 0, 0])
    order = np.random.default_rng(0).permutation(6)
    assert detection_metrics(scores[order], labels[order])["auc"] == pytest.approx(13 / 18)


def test_acer_on_a_small_confusion():
    # 4 fakes: 0.3 is classified real -> APCER = 1/4.
    # 6 reals: 0.6 and 0.55 are classified fake -> BPCER = 2/6 = 1/3.
    # ACER = (1/4 + 1/3) / 2 = 7/24; accuracy = (3 + 4) / 10.
    scores = [0.9, 0.8, 0.3, 0.7, 0.1, 0.2, 0.6, 0.4, 0.55, 0.3]
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    out = detection_metrics(scores, labels)
    assert out["apcer"] == pytest.approx(1 / 4)
    assert out["bpcer"] == pytest.approx(1 / 3)
    assert out["acer"] == pytest.approx(7 / 24)
    assert out["accuracy"] == pytest.approx(0.7)
    assert out["n"] == 10
    # Fakes all score above reals except the 0.3 fake (which ties a 0.3 real):
    # fake pairs won: 0.9, 0.8, 0.7 beat all 6 (18); 0.3 beats 0.1, 0.2, ties 0.3 (2.5) -> 20.5/24.
    assert out["auc"] == pytest.approx(20.5 / 24)


def test_threshold_is_inclusive_and_hard_predictions_work():
    # A score equal to the threshold is classified fake.
    assert detection_metrics([0.5], [1])["apcer"] == 0.0
    assert detection_metrics([0.5], [0])["bpcer"] == 1.0
    out = detection_metrics([1, 0, 0, 1], [1, 1, 0, 0])  # one miss each way
    assert (out["apcer"], out["bpcer"], out["acer"], out["accuracy"]) == (0.5, 0.5, 0.5, 0.5)
    assert detection_metrics([0.2, 0.4], [1, 1], threshold=0.3)["apcer"] == 0.5


def test_one_class_or_no_samples():
    out = detection_metrics([0.9, 0.2], [1, 1])  # fakes only
    assert out["auc"] is None and out["bpcer"] is None and out["acer"] is None
    assert out["apcer"] == 0.5 and out["accuracy"] == 0.5
    empty = detection_metrics([], [])
    assert empty["n"] == 0 and all(v is None for k, v in empty.items() if k != "n")
    with pytest.raises(ValueError):
        detection_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError):
        detection_metrics([0.1], [0, 1])


def test_category_accuracy():
    assert category_accuracy(["face_swap", "attribute", "entire"], ["face_swap", "entire", "entire"]) \
        == pytest.approx(2 / 3)
    assert category_accuracy([], []) is None
    with pytest.raises(ValueError):
        category_accuracy(["a"], [])


# --------------------------------------------------------------------------- masks


def _box(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_mask_iou_small_arrays():
    empty = np.zeros((4, 4), bool)
    a = _box((4, 4), 0, 2, 0, 2)  # 4 pixels
    b = _box((4, 4), 0, 2, 1, 3)  # 4 pixels, sharing column 1 of rows 0-1 with a
    assert mask_iou(a, b) == pytest.approx(2 / 6)  # |a∩b| = 2, |a∪b| = 4 + 4 - 2
    assert mask_iou(a, a) == 1.0
    assert mask_iou(empty, empty) == 1.0  # nothing predicted where there is nothing
    assert mask_iou(a, empty) == 0.0 and mask_iou(empty, a) == 0.0
    # COCO RLE dicts and RleMask records read as their masks.
    rle = encode_mask(b)
    assert mask_iou(encode_mask(a), rle) == pytest.approx(1 / 3)
    assert mask_iou(a, RleMask(size=rle["size"], counts=rle["counts"])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((4, 5), bool))


def test_mean_iou_and_cumulative_iou_differ():
    # Pair 1: one pixel, found exactly -> IoU 1 (I 1, U 1).
    # Pair 2: a 3x3 truth (9 px), predicted 3 px inside it -> IoU 3/9 (I 3, U 9).
    # mIoU = (1 + 1/3) / 2 = 2/3; cumulative = (1 + 3) / (1 + 9) = 0.4.
    pairs = [(_box((5, 5), 2, 3, 2, 3), _box((5, 5), 2, 3, 2, 3)),
             (_box((5, 5), 0, 1, 0, 3), _box((5, 5), 0, 3, 0, 3))]
    assert mean_iou(pairs) == pytest.approx(2 / 3)
    assert cumulative_iou(pairs) == pytest.approx(0.4)
    assert mean_iou([]) is None and cumulative_iou([]) is None
    empty = np.zeros((2, 2), bool)
    assert cumulative_iou([(empty, empty)]) == 1.0 and mean_iou([(empty, empty)]) == 1.0


# --------------------------------------------------------------------------- METEOR


def test_meteor_identical_sentence_is_just_under_one():
    # 5 words, all matched in one chunk: P = R = Fmean = 1, penalty = 0.5 · (1/5)^3 = 0.004.
    text = "The left eye looks blurred."
    assert meteor(text, [text]) == pytest.approx(1 - 0.5 * (1 / 5) ** 3) == pytest.approx(0.996)
    # Case and punctuation do not count.
    assert meteor("the LEFT eye, looks blurred", [text]) == pytest.approx(0.996)


def test_meteor_two_chunks_by_hand():
    # Candidate "the lips are blurred" (4 words), reference "the lips look slightly blurred" (5).
    # Matches: "the lips" (one chunk) and "blurred" (a second): m = 3, chunks = 2.
    # P = 3/4, R = 3/5, Fmean = P·R / (0.9·P + 0.1·R) = 0.45 / 0.735 = 30/49.
    # penalty = 0.5 · (2/3)^3 = 4/27; score = 30/49 · 23/27 = 690/1323 ≈ 0.52154.
    assert meteor("the lips are blurred", ["the lips look slightly blurred"]) == pytest.approx(690 / 1323)
    # Same words, reordered: "the cat sat" and "on the mat" are 2 chunks of 6 matches:
    # P = R = 1, penalty = 0.5 · (2/6)^3 = 1/54; score = 53/54.
    assert meteor("the cat sat on the mat", ["on the mat the cat sat"]) == pytest.approx(53 / 54)


def test_meteor_alignment_keeps_runs_together():
    # "the eye" is a run in both texts; aligning the first "the" of the candidate instead
    # would make 2 chunks.  m = 2, chunks = 1, P = 2/5, R = 1:
    # Fmean = 0.4 / (0.36 + 0.1) = 20/23; penalty = 0.5 · (1/2)^3 = 1/16; score = 20/23 · 15/16 = 75/92.
    assert meteor("the nose and the eye", ["the eye"]) == pytest.approx(75 / 92)


def test_meteor_no_overlap_and_several_references():
    assert meteor("nothing here", ["the lips are blurred"]) == 0.0
    assert meteor("", ["the lips"]) == 0.0
    refs = ["the nose is sharp", "the lips look slightly blurred", "the lips are blurred"]
    # The best reference is the identical one: 1 - 0.5 · (1/4)^3 = 1 - 1/128.
    assert meteor("the lips are blurred", refs) == pytest.approx(1 - 1 / 128)
    assert meteor("the lips are blurred", refs) == max(meteor("the lips are blurred", [r]) for r in refs)
    assert meteor("the lips are blurred", refs[:2]) == pytest.approx(690 / 1323)
    with pytest.raises(ValueError):
        meteor("the lips", [])


# --------------------------------------------------------------------------- concepts


def _closed(tree, ids):
    """The flagged set as the analysis writes it: every flagged node with its ancestors."""
    return sorted({n.id for node_id in ids for n in tree.path(node_id)})


def test_the_tree_names_used_here(tree):
    assert tree["left_upper_lip"].name == "left upper lip"
    assert tree["nose_tip"].name == "nose tip"
    assert [n.id for n in tree.path("left_upper_lip")] == [
        "facial_image", "face", "lower_face", "mouth_region", "lips", "upper_lip",
        "left_upper_lip_half", "left_upper_lip"]
    assert tree["left_eye"].name == "left eye" and tree["upper_lip"].name == "upper lip"


@pytest.mark.parametrize("closed", [False, True])
def test_concept_mentions_precision_and_recall(tree, closed):
    flagged = ["left_upper_lip", "nose_tip"]
    if closed:  # the full, upward-closed flagged set gives the same figures
        flagged = _closed(tree, flagged)

    # Both flagged leaves named: 2/2 correct, 2/2 recalled.
    out = concept_mentions("The left upper lip is blurred and the nose tip looks smooth.", flagged, tree)
    assert out["named"] == ["left_upper_lip", "nose_tip"]
    assert out["targets"] == ["nose_tip", "left_upper_lip"]  # tree order
    assert (out["precision"], out["recall"]) == (1.0, 1.0)

    # "lips" contains the flagged left upper lip (correct); "left eye" is unflagged.
    # precision 1/2; neither target named: recall 0/2.
    out = concept_mentions("The lips and the left eye show artifacts.", flagged, tree)
    assert out["correct"] == ["lips"] and out["incorrect"] == ["left_eye"]
    assert (out["precision"], out["recall"]) == (0.5, 0.0)

    # One target named, plus an ancestor and an unflagged concept: precision 2/3, recall 1/2.
    out = concept_mentions("The face is fake: the nose tip is smoothed, the hair is untouched.", flagged, tree)
    assert out["named"] == ["face", "nose_tip", "hair"]
    assert out["recalled"] == ["nose_tip"]
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == 0.5

    # On the closed set, the incorrect names are the pipeline's hallucinated concepts.
    text = "The whole image, the cheeks and the left upper lip [[not_a_node]]."
    out = concept_mentions(text, flagged, tree)
    assert out["incorrect"] == matcher_for(tree).hallucinated(text, set(_closed(tree, flagged)))
    assert out["incorrect"] == ["cheeks", "not_a_node"]  # an unknown reference is never correct
    assert out["precision"] == pytest.approx(2 / 4) and out["recall"] == 0.5


def test_a_descendant_of_a_flagged_node_is_not_correct(tree):
    # Only "lips" is flagged (its own coverage passed; no part of it on its own).
    flagged = _closed(tree, ["lips"])
    out = concept_mentions("The upper lip is smeared.", flagged, tree)
    assert out["incorrect"] == ["upper_lip"] and out["targets"] == ["lips"]
    assert (out["precision"], out["recall"]) == (0.0, 0.0)
    out = concept_mentions("The lips are smeared.", flagged, tree)
    assert (out["precision"], out["recall"]) == (1.0, 1.0)


def test_nothing_named_or_nothing_flagged(tree):
    out = concept_mentions("This photo looks fine.", ["nose_tip"], tree)
    assert out["named"] == [] and out["precision"] is None and out["recall"] == 0.0
    out = concept_mentions("The nose tip is smoothed.", [], tree)
    assert out["precision"] == 0.0 and out["recall"] is None and out["targets"] == []
    with pytest.raises(ValueError, match="not_a_node"):
        concept_mentions("the nose", ["not_a_node"], tree)


# --------------------------------------------------------------------------- aggregate


def test_aggregate_ignores_none_and_non_numbers():
    rows = [{"precision": 1.0, "recall": None, "named": ["lips"], "never": None},
            {"precision": 0.5, "recall": 0.25, "named": [], "never": None},
            {"precision": None, "recall": None, "correct": True}]
    # precision (1 + 0.5) / 2; recall 0.25 alone; a bool counts 1; lists are not averaged.
    assert aggregate(rows) == {"precision": 0.75, "recall": 0.25, "never": None, "correct": 1.0}
    assert aggregate([]) == {}

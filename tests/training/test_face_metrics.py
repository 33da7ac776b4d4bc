"""FaceInstruct (Face-LLaVA) metrics: the building blocks on hand-worked cases, `parse_answer`
on the offline describer's own answers (it must read back the label they were written
from) and on negated and meaningless texts, and `face_metrics` on small hand-made rows."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator

import pytest

from pipelines.faceinstruct import labels as fi_labels
from pipelines.faceinstruct.describe import ORDER, OfflineDescriber
from pipelines.faceinstruct.measure import BANDS
from schemas.faceinstruct import FaceItem, FaceMeasures
from training.metrics import (
    AU_NAMES,
    CELEBA_ATTRIBUTES,
    EMOTION_OF,
    FACE_TASKS,
    f1_per_label,
    face_metrics,
    mean_absolute_error,
    parse_answer,
    uar,
    war,
)

# --------------------------------------------------------------------------- building blocks

# 3 classes: a 4 samples (3 right), b 2 (1 right), c 2 (1 right).
CONFUSION_TRUE = ["a", "a", "a", "a", "b", "b", "c", "c"]
CONFUSION_PRED = ["a", "a", "a", "b", "b", "a", "c", "a"]


def test_uar_and_war_differ_on_an_unbalanced_confusion():
    # UAR = (3/4 + 1/2 + 1/2) / 3 = 7/12; WAR = (3 + 1 + 1) / 8 = 5/8.
    assert uar(CONFUSION_PRED, CONFUSION_TRUE) == pytest.approx(7 / 12)
    assert war(CONFUSION_PRED, CONFUSION_TRUE) == pytest.approx(5 / 8)


def test_uar_averages_over_the_reference_classes_only():
    # "d" is predicted but never a reference: it only costs class a a hit.  a 1/2, b 1/1.
    assert uar(["a", "d", "b"], ["a", "a", "b"]) == pytest.approx(0.75)
    assert war(["a", "d", "b"], ["a", "a", "b"]) == pytest.approx(2 / 3)


def test_an_unparsed_prediction_is_never_right():
    assert war([None, "a"], ["a", "a"]) == pytest.approx(0.5)
    assert uar([None, None], [None, None]) == 0.0  # even against a None reference


def test_empty_and_mismatched_inputs():
    assert uar([], []) is None and war([], []) is None and mean_absolute_error([], []) is None
    with pytest.raises(ValueError):
        uar(["a"], [])
    with pytest.raises(ValueError):
        f1_per_label([{1}], [], [1])


def test_f1_per_label():
    pred = [{1, 2}, {1}, set(), {2}]
    true = [{1}, {1, 2}, {2}, set()]
    # AU1: TP 2, FP 0, FN 0 -> 1.  AU2: TP 0, FP 2, FN 2 -> 0.
    # AU4: TP 0, FP 0, FN 0 -> undefined.  AU5 in no set either.
    assert f1_per_label(pred, true, [1, 2, 4]) == {1: 1.0, 2: 0.0, 4: None}
    # TP 1, FP 1, FN 1: precision 1/2, recall 1/2, F1 = 2·1 / (2 + 1 + 1) = 1/2.
    assert f1_per_label([{7}, {7}, set()], [{7}, set(), {7}], [7]) == {7: 0.5}


def test_mean_absolute_error():
    assert mean_absolute_error([30, 40.5, 20], [34, 40, 20]) == pytest.approx((4 + 0.5 + 0) / 3)


# --------------------------------------------------------------------------- face_metrics


def _row(task, prediction, reference):
    return {"task": task, "prediction": prediction, "reference": reference}


def test_face_metrics_expression_compares_emotions():
    rows = [
        _row("expression", {"expression": "happiness"}, {"expression": "Happy"}),      # right
        _row("expression", {"expression": "anger"}, {"expression": "Angry"}),          # right
        _row("expression", {"expression": "anger"}, '{"expression":"Anger"}'),          # right, JSON text
        _row("expression", {"expression": "sadness"}, {"expression": "Anger"}),        # wrong
        _row("expression", None, {"expression": "Sad"}),                               # unparsed: wrong
    ]
    out = face_metrics(rows)["expression"]
    # happiness 1/1, anger 2/3, sadness 0/1 -> UAR 5/9; WAR 3/5.
    assert out["uar"] == pytest.approx(5 / 9)
    assert out["war"] == pytest.approx(3 / 5)
    assert (out["n"], out["unparsed"]) == (5, 1)


def test_face_metrics_au_counts_an_unparsed_answer_wrong_on_every_au():
    rows = [
        _row("au", {"aus": [1, 12]}, {"aus": [1, 12]}),
        _row("au", {"aus": [12]}, {"aus": [1]}),
        _row("au", None, {"aus": [12]}),  # unparsed: AU12 missed, AU1 claimed
    ]
    out = face_metrics(rows)["au"]
    # AU1: TP 1, FP 1 (unparsed), FN 1 -> 2/4.  AU12: TP 1, FP 1, FN 1 -> 2/4.
    assert out["f1_per_au"] == {1: pytest.approx(0.5), 12: pytest.approx(0.5)}
    assert out["mean_f1"] == pytest.approx(0.5)
    assert (out["n"], out["unparsed"]) == (3, 1)
    # A given AU set: AU2 never active nor predicted -> None, left out of the mean.
    rows = [_row("au", {"aus": [1]}, {"aus": [1]})]
    out = face_metrics(rows, aus=[1, 2])["au"]
    assert out["f1_per_au"] == {1: 1.0, 2: None} and out["mean_f1"] == 1.0


def test_face_metrics_attribute_mean_accuracy_over_all_forty():
    rows = [
        _row("attribute", {"attributes": ["Male", "Smiling"]}, {"attributes": ["Male"]}),  # Smiling wrong
        _row("attribute", {"attributes": []}, {"attributes": []}),                          # all right
        _row("attribute", None, {"attributes": ["Young"]}),                                 # all 40 wrong
    ]
    out = face_metrics(rows)["attribute"]
    assert set(out["per_attribute"]) == set(CELEBA_ATTRIBUTES)
    assert out["per_attribute"]["Smiling"] == pytest.approx(1 / 3)
    assert out["per_attribute"]["Male"] == pytest.approx(2 / 3)
    assert out["per_attribute"]["Bald"] == pytest.approx(2 / 3)
    # 39 attributes at 2/3, Smiling at 1/3.
    assert out["mean_accuracy"] == pytest.approx((39 * 2 / 3 + 1 / 3) / 40)
    assert out["unparsed"] == 1


def test_face_metrics_age_and_deepfake():
    rows = [
        _row("age", {"age": 30}, {"age": 34}),
        _row("age", {"age": 42.5}, {"age": 40}),
        _row("age", None, {"age": 20}),  # left out of the MAE, counted
        _row("deepfake", {"fake": True}, {"fake": True, "method": "FaceSwap"}),
        _row("deepfake", {"fake": True}, {"fake": False, "method": None}),
        _row("deepfake", None, {"fake": False, "method": None}),
    ]
    out = face_metrics(rows)
    assert out["age"] == {"mae": pytest.approx(3.25), "n": 3, "unparsed": 1}
    assert out["deepfake"] == {"accuracy": pytest.approx(1 / 3), "n": 3, "unparsed": 1}
    assert set(out) == {"age", "deepfake"}  # only the tasks present
    assert face_metrics([_row("age", None, {"age": 3})])["age"]["mae"] is None


def test_face_metrics_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        face_metrics([_row("pose", None, {})])


# --------------------------------------------------------------------------- the describer's answers


class _Media:
    """What `OfflineDescriber.describe` reads of a `FaceMedia`."""

    def __init__(self, item: FaceItem, measures: FaceMeasures):
        self.item, self.measures = item, measures


def _measures() -> list[FaceMeasures]:
    """Faces that make the describer say every cue it has: each measure low, in the band
    and high (face measures together, pose measures together)."""
    def levels(name):
        low, high = BANDS[name]
        return (low - 0.05 * max(1.0, abs(low)), (low + high) / 2, high + 0.05 * max(1.0, abs(high)))

    face = ("mouth_corner_lift", "brow_raise", "eye_opening", "mouth_opening")
    out = [FaceMeasures(yaw=0.0, pitch=0.0, roll=0.0, **dict(zip(face, combo, strict=True)))
           for combo in itertools.product(*(levels(n) for n in face))]
    pose = ("yaw", "pitch", "roll")
    out += [FaceMeasures(**dict(zip(pose, combo, strict=True)))
            for combo in itertools.product(*(levels(n) for n in pose))]
    out.append(FaceMeasures())  # nothing measured
    assert set(ORDER) == set(face) | set(pose)
    return out


def _labels() -> Iterator[tuple[str, dict]]:
    """Labels over the whole vocabulary the readers write."""
    names = {*fi_labels.DFEW_CLASSES.values(), *fi_labels.MAFW_CLASSES.values(), *fi_labels.FERV39K_CLASSES,
             *fi_labels.CREMA_D_CLASSES.values(), *fi_labels.AFFECTNET_CLASSES.values(),
             *fi_labels.RAFDB_CLASSES.values()}
    for name in sorted(names):
        yield "expression", {"expression": name}
    rng = random.Random(0)
    aus = sorted(AU_NAMES)
    for au_set in ([], *([a] for a in aus), list(fi_labels.DISFA_AUS), [3, 8, 12, 19],
                   *(sorted(rng.sample(aus, rng.randint(2, 8))) for _ in range(20))):
        yield "au", {"aus": au_set}
    for attrs in ([], *([a] for a in CELEBA_ATTRIBUTES), list(CELEBA_ATTRIBUTES),
                  *(sorted(rng.sample(CELEBA_ATTRIBUTES, rng.randint(2, 15)), key=CELEBA_ATTRIBUTES.index)
                    for _ in range(20))):
        yield "attribute", {"attributes": attrs}
    for age in range(101):
        yield "age", {"age": age}
    yield "deepfake", {"fake": False, "method": None}
    yield "deepfake", {"fake": True, "method": None}
    for method in (*fi_labels.FFPP_METHODS, "faceswap-wav2lip", "fsgan", "rtvc"):
        yield "deepfake", {"fake": True, "method": method}


def _recovered(task: str, parsed: dict | None, label: dict) -> bool:
    """Whether a parsed answer is the label (an expression as its emotion noun)."""
    if parsed is None:
        return False
    if task == "expression":
        return parsed["expression"] == EMOTION_OF[label["expression"].lower()]
    if task == "au":
        return parsed["aus"] == label["aus"]
    if task == "attribute":
        return sorted(parsed["attributes"]) == sorted(label["attributes"])
    if task == "age":
        return parsed["age"] == label["age"]
    return parsed["fake"] == label["fake"]


@pytest.fixture(scope="module")
def described() -> list[tuple[str, dict, str]]:
    """(task, label, the offline describer's answer) for every label of `_labels` on every
    face of `_measures`, as image and as video."""
    describer = OfflineDescriber()
    measures = _measures()
    out = []
    for i, (task, label) in enumerate(_labels()):
        for media_type in ("image", "video"):
            item = FaceItem(source_dataset="x", source_path=f"{i}.jpg", media=f"/{i}.jpg",
                            media_type=media_type, task=task, label=label, origin="test")
            for m in measures[i % 3::3]:  # a third of the faces per label keeps the test fast
                out.append((task, label, describer.describe(_Media(item, m))))
    return out


def test_the_describers_answers_give_back_their_labels(described):
    """`parse_answer` reads the label back from >= 95 % of the describer's answers per task
    (on these texts every one is read back)."""
    totals = {t: 0 for t in FACE_TASKS}
    misses: dict[str, list[str]] = {t: [] for t in FACE_TASKS}
    for task, label, text in described:
        totals[task] += 1
        if not _recovered(task, parse_answer(task, text, label), label):
            misses[task].append(f"{label} <- {text!r}")
    for task in FACE_TASKS:
        assert totals[task] > 0
        rate = 1 - len(misses[task]) / totals[task]
        assert rate >= 0.95, (task, rate, misses[task][:5])
    assert not any(misses.values()), {t: m[:3] for t, m in misses.items() if m}


def test_the_describers_answers_score_perfectly(described):
    rows = [_row(task, parse_answer(task, text), json.dumps(label)) for task, label, text in described]
    out = face_metrics(rows)
    assert out["expression"]["uar"] == out["expression"]["war"] == 1.0
    assert out["au"]["mean_f1"] == 1.0
    assert out["attribute"]["mean_accuracy"] == 1.0
    assert out["age"]["mae"] == 0.0
    assert out["deepfake"]["accuracy"] == 1.0
    assert all(v["unparsed"] == 0 for v in out.values())


# --------------------------------------------------------------------------- parsing rules


@pytest.mark.parametrize("text, expected", [
    ("The facial expression reads as surprise.", "surprise"),
    ("She looks happy.", "happiness"),
    ("He is not happy; he looks angry.", "anger"),
    ("The face is neither sad nor fearful but rather disgusted.", "disgust"),
    ("An expression of contempt rather than anger.", "contempt"),
    ("Not surprised at all, just neutral.", "neutral"),
    ("The person is clearly afraid.", "fear"),
    ("There is no doubt this face is sad.", "sadness"),
])
def test_expression_rule(text, expected):
    assert parse_answer("expression", text) == {"expression": expected}


@pytest.mark.parametrize("text, expected", [
    ("The face does not show AU12.", []),
    ("The face does not show AU12 (Lip Corner Puller).", []),
    ("AU1 and AU 2 are active, but the face does not show AU12.", [1, 2]),
    ("The Lip Corner Puller and the cheek raiser are active.", [6, 12]),
    ("Active: AU4 (Brow Lowerer); AU25 (Lips Part) is not active.", [4]),
    ("AUs 6, 12 and 25 are present.", [6, 12, 25]),
    ("Action unit 17 is visible, without AU15.", [17]),
    ("No facial action unit is clearly active.", []),
    ("All brow actions except AU4 are active: AU1, AU2.", [1, 2]),
])
def test_au_rule(text, expected):
    assert parse_answer("au", text) == {"aus": expected}


@pytest.mark.parametrize("text, expected", [
    ("The face shows these attributes: bags under eyes, eyeglasses, no beard, wearing hat.",
     ["Bags_Under_Eyes", "Eyeglasses", "No_Beard", "Wearing_Hat"]),
    ("A young woman with wavy hair, smiling, not wearing a hat.", ["Smiling", "Wavy_Hair", "Young"]),
    ("A man with a beard and glasses; he is not smiling.", ["Eyeglasses", "Male"]),
    ("He does not have a beard but has a mustache.", ["Male", "Mustache", "No_Beard"]),
    ("She has blonde hair and earrings.", ["Blond_Hair", "Wearing_Earrings"]),
    ("No_Beard, Heavy_Makeup, Wearing_Lipstick", ["Heavy_Makeup", "No_Beard", "Wearing_Lipstick"]),
    ("The face shows none of the listed attributes clearly.", []),
])
def test_attribute_rule(text, expected):
    parsed = parse_answer("attribute", text)
    assert parsed is not None and sorted(parsed["attributes"]) == expected


@pytest.mark.parametrize("text, expected", [
    ("34 years old is a reasonable estimate of this person's age.", 34),
    ("The person looks about 30-35 years old.", 32.5),
    ("Somewhere between 40 and 50.", 45),
    ("Likely in their late 20s.", 28),
    ("Probably in her 60s.", 65),
    ("An estimated age of 27.5 years.", 27.5),
    ("Out of 500 faces, this one looks 42.", 42),  # 500 is no age
])
def test_age_rule(text, expected):
    assert parse_answer("age", text) == {"age": expected}


@pytest.mark.parametrize("text, fake", [
    ("Fake: the face has been manipulated (Deepfakes).", True),
    ("Real: the face shows no sign of manipulation.", False),
    ("This face is not fake.", False),
    ("It is not a real face; it was generated by a face swap.", True),
    ("The video appears authentic.", False),
    ("There are clear signs of forgery around the mouth.", True),
    ("The face shows no evidence of tampering, so it is genuine.", False),
    ("The face isn't genuine.", True),
])
def test_deepfake_rule(text, fake):
    assert parse_answer("deepfake", text) == {"fake": fake}


@pytest.mark.parametrize("task", FACE_TASKS)
@pytest.mark.parametrize("text", ["", "lorem ipsum dolor sit amet", "I cannot help with that request.",
                                  "The image is too dark to tell."])
def test_garbage_states_no_label(task, text):
    assert parse_answer(task, text) is None


def test_everything_negated_states_no_expression():
    assert parse_answer("expression", "The face is not happy and not sad.") is None


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        parse_answer("pose", "frontal")

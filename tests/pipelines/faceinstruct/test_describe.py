"""The offline describer says only what was measured, the offline rater catches a text that
contradicts a measurement or leaves out the label, and the label-leak check finds texts that
give away their writer was told the label.  The measurements themselves do not depend on
where the face is, how large, or how it is tilted in the image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipelines.faceinstruct.describe import (
    CUES,
    OfflineDescriber,
    OfflineRater,
    contradictions,
    label_leak,
    states_label,
)
from pipelines.faceinstruct.measure import BANDS, level, measure
from schemas.faceinstruct import FaceItem, FaceMeasures


@pytest.fixture(scope="module")
def photo_points():
    """The 68 points of the two packaged photos (smiling astronaut, neutral Grace Hopper)."""
    from pipelines.faceinstruct.media import FaceCropper
    from pipelines.vision.face_photos import astronaut, grace_hopper

    with FaceCropper() as cropper:
        return {name: cropper.crop_face(photo())[2] * 256 for name, photo in
                (("astronaut", astronaut), ("grace_hopper", grace_hopper))}


def test_measures_do_not_depend_on_place_size_or_tilt(photo_points):
    rng = np.random.default_rng(0)
    for points in photo_points.values():
        base = measure(points)
        for _ in range(5):
            angle, scale = rng.uniform(-0.4, 0.4), rng.uniform(0.5, 2.0)
            rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            moved = measure(points @ rot.T + rng.uniform(-100, 100, 2))
            for name in ("mouth_opening", "mouth_corner_lift", "brow_raise", "eye_opening", "yaw", "pitch"):
                assert getattr(moved, name) == pytest.approx(getattr(base, name), abs=0.01 if name not in
                                                             ("yaw", "pitch") else 0.2), name
            assert moved.roll == pytest.approx(base.roll + np.degrees(angle), abs=0.2)


def test_the_smile_and_the_closed_mouth_are_measured(photo_points):
    smile, neutral = measure(photo_points["astronaut"]), measure(photo_points["grace_hopper"])
    assert level(smile, "mouth_corner_lift") == "high" and level(neutral, "mouth_corner_lift") is None
    assert level(smile, "mouth_opening") == "high" and level(neutral, "mouth_opening") is None
    for m in (smile, neutral):  # frontal, upright, eyes open, brows at rest
        assert all(level(m, name) is None for name in ("yaw", "pitch", "roll", "eye_opening", "brow_raise"))


def _item(task: str, label: dict, media_type: str = "image") -> FaceItem:
    return FaceItem(source_dataset="x", source_path="a.jpg", media="/a.jpg", media_type=media_type, task=task,
                    label=label, origin="test")


class _Media:
    def __init__(self, item, measures):
        self.item, self.measures = item, measures


def _every_level_combination():
    """FaceMeasures at the low, middle and high end of each of three measures."""
    values = {name: (BANDS[name][0] - 0.05, sum(BANDS[name]) / 2, BANDS[name][1] + 0.05)
              for name in ("mouth_corner_lift", "brow_raise", "eye_opening")}
    for combo in itertools.product(*values.values()):
        yield FaceMeasures(mouth_opening=0.0, yaw=0.0, pitch=0.0, roll=0.0, **dict(zip(values, combo, strict=True)))


LABELS = [("expression", {"expression": "Happy"}), ("au", {"aus": [6, 12]}),
          ("attribute", {"attributes": ["Male", "Smiling"]}), ("age", {"age": 41}),
          ("deepfake", {"fake": True, "method": "FaceSwap"}), ("deepfake", {"fake": False, "method": None})]


@pytest.mark.parametrize("task, label", LABELS)
def test_the_offline_describer_states_the_label_and_only_measured_cues(task, label):
    describer, rater = OfflineDescriber(), OfflineRater()
    for measures in _every_level_combination():
        media = _Media(_item(task, label), measures)
        text = describer.describe(media)
        assert states_label(task, label, text), text
        assert label_leak(text) is None
        if task != "attribute":  # an attribute's name (`Smiling`) is the label, not a claim of the describer's
            assert contradictions(measures, text) == []
        for (name, lvl), words in CUES.items():
            if words.lower() in text.lower():
                assert level(measures, name) == lvl or any(
                    level(measures, other) == other_lvl for (other, other_lvl), w in CUES.items() if w == words), text
        rating = rater.rate(media, text)
        assert rating.label_consistency == 10 and rating.media_consistency == 10


def test_the_offline_rater_catches_contradictions_and_a_missing_label():
    rater = OfflineRater()
    frowning = FaceMeasures(mouth_corner_lift=-0.1, mouth_opening=0.0, brow_raise=0.2, eye_opening=0.3)
    media = _Media(_item("expression", {"expression": "Sad"}), frowning)
    said_smile = rater.rate(media, "The face shows sadness, though the person is smiling broadly.")
    assert said_smile.media_consistency < 10 and said_smile.overall < 6
    assert "smiling" in said_smile.reason
    no_label = rater.rate(media, "The corners of the mouth are turned down.")
    assert no_label.label_consistency == 2 and no_label.overall < 6
    happy = _Media(_item("expression", {"expression": "Happy"}), frowning)
    against = rater.rate(happy, "The expression reads as happiness.")
    assert against.label_accuracy < 6 and "cues against the label" in against.reason


@pytest.mark.parametrize("text", [
    "The video was labelled as sadness.", "As the ground truth says, the person is 40.",
    "I was told the face is fake.", "The given label is anger, which the brows show.",
    "According to the annotation, AU12 is active.",
])
def test_label_leaks_are_found(text):
    assert label_leak(text)


@pytest.mark.parametrize("text", [
    "The face shows happiness: the mouth corners are drawn up.", "Fake: blending seams along the jaw.",
    "41 years old is a reasonable estimate.", "The eyebrows are raised and the eyes opened wide.",
])
def test_honest_texts_do_not_leak(text):
    assert label_leak(text) is None

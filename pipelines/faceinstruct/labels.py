"""The source datasets' official class names, index maps and label wording.

Every name here is spelled as the dataset's own documentation spells it (sources in
`../shared/references/faceinstruct_sources.md`); readers turn indices and codes into these
names, and `label_text` words a label for people.
"""

from __future__ import annotations

from typing import Any

from schemas.faceinstruct import AU_NAMES

# --- expression -----------------------------------------------------------------------------

# DFEW split CSVs, label 1..7 (official README "Notes").
DFEW_CLASSES = {1: "Happy", 2: "Sad", 3: "Neutral", 4: "Angry", 5: "Surprise", 6: "Disgust", 7: "Fear"}
# MAFW single_label 1..11; the split files carry the words.
MAFW_CLASSES = {1: "anger", 2: "disgust", 3: "fear", 4: "happiness", 5: "neutral", 6: "sadness", 7: "surprise",
                8: "contempt", 9: "anxiety", 10: "helplessness", 11: "disappointment"}
# FERV39k: the label words are the emotion folder names.
FERV39K_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
# CREMA-D file-name codes, with the README's names (no Surprise class).
CREMA_D_CLASSES = {"ANG": "Anger", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral", "SAD": "Sad"}
# AffectNet expression codes: 0..7 are expressions; 8..10 label no expression.
AFFECTNET_CLASSES = {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear", 5: "Disgust",
                     6: "Anger", 7: "Contempt"}
AFFECTNET_NO_EXPRESSION = {8: "None", 9: "Uncertain", 10: "No-Face"}
# RAF-DB basic, label 1..7.
RAFDB_CLASSES = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}

# --- action units ---------------------------------------------------------------------------

DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
# DISFA codes intensity 0-5 per frame; an AU counts as active from intensity 2, the
# convention of the AU-detection literature (ME-GraphAU's `if AUIntensity >= 2`);
# FaceInstruct's own rule is not published.
DISFA_ACTIVE_INTENSITY = 2
# BP4D AU_OCC: 1 present, 0 absent, 9 not coded (never "present").
BP4D_PRESENT = 1

# --- attributes -----------------------------------------------------------------------------

# list_eval_partition: 0 train, 1 validation, 2 test; FaceInstruct has train and test only.
CELEBA_SPLITS = {0: "train", 1: "test", 2: "test"}

# --- deepfake -------------------------------------------------------------------------------

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
FFPP_COMPRESSIONS = ("raw", "c23", "c40")
# FakeAVCeleb's `type` column: whether the face in the video is fake.
FAKEAVCELEB_FAKE_VIDEO = {"RealVideo-RealAudio": False, "RealVideo-FakeAudio": False,
                          "FakeVideo-RealAudio": True, "FakeVideo-FakeAudio": True}


def au_phrase(au: int) -> str:
    """`AU12 (Lip Corner Puller)`."""
    name = AU_NAMES.get(au)
    return f"AU{au} ({name})" if name else f"AU{au}"


def label_text(task: str, label: dict[str, Any]) -> str:
    """A label as people read it: `expression: Happy`, `AU1 (Inner Brow Raiser), AU12 ...`,
    `attributes: Male, Smiling`, `age: 34`, `fake (Deepfakes)`."""
    if task == "expression":
        return f"expression: {label['expression']}"
    if task == "au":
        aus = label["aus"]
        return "active AUs: " + (", ".join(au_phrase(a) for a in aus) if aus else "none")
    if task == "attribute":
        names = [a.replace("_", " ") for a in label["attributes"]]
        return "attributes: " + (", ".join(names) if names else "none of the 40")
    if task == "age":
        return f"age: {label['age']}"
    if task == "deepfake":
        if not label["fake"]:
            return "real"
        return f"fake ({label['method']})" if label.get("method") else "fake"
    raise ValueError(f"unknown task {task!r}")

"""Label-assisted descriptions and their ratings.

* `OfflineDescriber` (the default, `--describer evidence`) writes only what it measured on
  the face (`pipelines.faceinstruct.measure`: mouth opening and corner height, brow raise,
  eye opening, head pose) and the label; where nothing was measured clearly it says so
  instead of inventing a cue.
* `LlmDescriber` asks Gemini, OpenAI or a compatible server with the face, the label and
  the task's prompt (`prompts/data/faceinstruct_prompts.yaml`); a video goes to Gemini as
  the crop-track video, to the others as its sampled frames.
* `OfflineRater` and `LlmRater` score the four FaceInstruct criteria (1-10).  The offline
  rater checks that the description states the label and contradicts no measurement.
* `label_leak` finds a description that gives away that its writer was told the label;
  the rate stage rejects it (`label_leak`) whoever wrote it.
"""

from __future__ import annotations

import hashlib
import json
import re

from pipelines.faceinstruct.labels import au_phrase, label_text
from pipelines.faceinstruct.measure import level
from pipelines.faceinstruct.media import FaceMedia
from pipelines.llm.request import ImagePart, LlmRequest
from prompts.llm_prompts import PromptLibrary, load_face_prompts
from schemas.common import TemplateRef
from schemas.faceinstruct import EMOTION_OF, FaceMeasures
from schemas.llm import FaceDescription, FaceRating

# --- what the measurements let a description say -----------------------------------------

# (measure, level) -> the cue in words.  Only these claims are ever made from measurements.
CUES: dict[tuple[str, str], str] = {
    ("mouth_corner_lift", "high"): "the corners of the mouth are drawn up",
    ("mouth_corner_lift", "low"): "the corners of the mouth are turned down",
    ("mouth_opening", "high"): "the lips are parted",
    ("brow_raise", "high"): "the eyebrows are raised",
    ("brow_raise", "low"): "the eyebrows are drawn down toward the eyes",
    ("eye_opening", "high"): "the eyes are opened wide",
    ("eye_opening", "low"): "the eyes are narrowed",
    ("yaw", "high"): "the head is turned toward the right of the frame",
    ("yaw", "low"): "the head is turned toward the left of the frame",
    ("pitch", "high"): "the head is tilted up",
    ("pitch", "low"): "the head is tilted down",
    ("roll", "high"): "the head is tilted to one side",
    ("roll", "low"): "the head is tilted to one side",
}
# Words that claim the opposite of a measured level; the offline rater counts a claim as a
# contradiction when the measurement is clearly at the other end.
CONTRADICTIONS: dict[tuple[str, str], re.Pattern] = {
    ("mouth_corner_lift", "low"): re.compile(r"\b(smil\w*|grin\w*|corners?\b[^.]{0,40}\b(up|upward|raised|lifted))",
                                             re.IGNORECASE),
    ("mouth_corner_lift", "high"): re.compile(r"\b(frown\w*|corners?\b[^.]{0,40}\b(down|downturned|downward))",
                                              re.IGNORECASE),
    ("mouth_opening", "low"): re.compile(r"\b(mouth (is )?(wide )?open|open mouth|lips (are )?(parted|apart)|"
                                         r"jaw (drops|dropped|is dropped))", re.IGNORECASE),
    ("eye_opening", "low"): re.compile(r"\b(wide[- ]open eyes|eyes (are )?(opened )?wide)", re.IGNORECASE),
    ("eye_opening", "high"): re.compile(r"\b(eyes (are )?(closed|shut)|squint\w*)", re.IGNORECASE),
    ("brow_raise", "low"): re.compile(r"\b(raised (eye)?brows|(eye)?brows (are )?raised)", re.IGNORECASE),
}
# For an expression label: the cues that would contradict it (the offline rater's check of
# the label's accuracy).  Only clear contradictions count; most labels allow most faces.
LABEL_CONTRADICTED_BY: dict[str, tuple[tuple[str, str], ...]] = {
    "happiness": (("mouth_corner_lift", "low"),),
    "sadness": (("mouth_corner_lift", "high"),),
    "surprise": (("brow_raise", "low"), ("eye_opening", "low")),
    "anger": (("mouth_corner_lift", "high"), ("brow_raise", "high")),
    "disgust": (("mouth_corner_lift", "high"),),
    "fear": (("eye_opening", "low"),),
}
# For CelebA attributes: the positive attributes a measured cue contradicts.
ATTRIBUTE_CONTRADICTED_BY: dict[str, tuple[tuple[str, str], ...]] = {
    "Smiling": (("mouth_corner_lift", "low"),),
}
ORDER = ("mouth_corner_lift", "mouth_opening", "brow_raise", "eye_opening", "yaw", "pitch", "roll")
POSE = ("yaw", "pitch", "roll")


def cues(measures: FaceMeasures, names: tuple[str, ...] = ORDER) -> list[str]:
    """The clear cues a face shows, in words, in a fixed order (one per measure at most)."""
    out = []
    for name in names:
        lvl = level(measures, name)
        if lvl and (name, lvl) in CUES and CUES[(name, lvl)] not in out:
            out.append(CUES[(name, lvl)])
    return out


def _sentence(parts: list[str]) -> str:
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def _emotion(label: dict) -> str:
    name = str(label["expression"])
    return EMOTION_OF.get(name.lower(), name.lower())


class OfflineDescriber:
    """Descriptions from the label and the face's measurements only (no model)."""

    name = "evidence"
    model = None

    def __init__(self) -> None:
        table = json.dumps({"cues": {f"{k[0]}:{k[1]}": v for k, v in CUES.items()}}, sort_keys=True)
        self.template = TemplateRef(id="faceinstruct_offline_describer@v1",
                                    version=hashlib.sha256(table.encode()).hexdigest()[:12])

    def templates(self) -> list[TemplateRef]:
        return [self.template]

    def describe(self, media: FaceMedia) -> str:
        item, m = media.item, media.measures
        where = "At the middle of the clip, " if item.media_type == "video" else ""
        face = cues(m, tuple(n for n in ORDER if n not in POSE))
        pose = cues(m, POSE)
        if item.task == "expression":
            lead = f"The facial expression reads as {_emotion(item.label)}."
        elif item.task == "au":
            aus = item.label["aus"]
            lead = ("The active facial action units are " + ", ".join(au_phrase(a) for a in aus) + "."
                    if aus else "No facial action unit is clearly active.")
        elif item.task == "attribute":
            names = [a.replace("_", " ").lower() for a in item.label["attributes"]]
            lead = ("The face shows these attributes: " + ", ".join(names) + "."
                    if names else "The face shows none of the listed attributes clearly.")
        elif item.task == "age":
            lead = f"{item.label['age']} years old is a reasonable estimate of this person's age."
        else:
            fake = item.label["fake"]
            method = item.label.get("method")
            lead = (f"Fake: the face has been manipulated{f' ({method})' if method else ''}." if fake
                    else "Real: the face shows no sign of manipulation.")
        parts = [lead]
        if item.task in ("expression", "au"):
            if face:
                parts.append(where.capitalize() + _sentence(face)[0].lower() + _sentence(face)[1:]
                             if where else _sentence(face))
            else:
                parts.append("The mouth, eyes and brows show no strong movement that the landmarks pick up.")
        if pose:
            parts.append(_sentence(pose))
        return " ".join(parts)


def label_leak(text: str) -> str | None:
    """The phrase that gives away a given label ("labelled as", "the ground truth", "I was
    told"), or None."""
    match = LEAK.search(text)
    return match.group(0) if match else None


LEAK = re.compile(
    r"\b(labell?ed|the label|given label|provided label|manual label|ground[- ]truth|annotat(ed|ion|or)s?|"
    r"tagged as|was (told|given|provided)|were (told|given|provided)|as (indicated|stated) (in|by) the)\b",
    re.IGNORECASE)


def states_label(task: str, label: dict, text: str) -> bool:
    """Whether the description states the label (the class or its emotion noun, every
    active AU, every positive attribute, the age, real or fake)."""
    low = text.lower()
    if task == "expression":
        name = str(label["expression"]).lower()
        return name in low or _emotion(label) in low
    if task == "au":
        return all(re.search(rf"\bau ?{a}\b", low) for a in label["aus"])
    if task == "attribute":
        return all(a.replace("_", " ").lower() in low.replace("_", " ") for a in label["attributes"])
    if task == "age":
        return re.search(rf"\b{label['age']}\b", low) is not None
    return ("fake" in low) if label["fake"] else ("real" in low or "authentic" in low or "genuine" in low)


def contradictions(measures: FaceMeasures, text: str) -> list[str]:
    """The claims of `text` that a measurement contradicts, as `measure: claim`."""
    found = []
    for (name, lvl), pattern in CONTRADICTIONS.items():
        if level(measures, name) == lvl:
            match = pattern.search(text)
            if match:
                found.append(f"{name} is {lvl} but the text says {match.group(0)!r}")
    return found


class OfflineRater:
    """Scores from checks a program can make: the label stated, no measurement
    contradicted, and (expressions, CelebA's Smiling) no measured cue that contradicts the
    label."""

    name = "evidence"
    model = None

    def templates(self) -> list[TemplateRef]:
        return []

    def rate(self, media: FaceMedia, description: str) -> FaceRating:
        item, m = media.item, media.measures
        stated = states_label(item.task, item.label, description)
        claims = description
        against = []
        if item.task == "expression":
            cues_against = LABEL_CONTRADICTED_BY.get(_emotion(item.label), ())
        elif item.task == "attribute":
            cues_against = tuple(c for a in item.label["attributes"] for c in ATTRIBUTE_CONTRADICTED_BY.get(a, ()))
            for name in item.label["attributes"]:  # stating the label is no claim about the face's cues
                claims = re.sub(re.escape(name.replace("_", " ")), " ", claims, flags=re.IGNORECASE)
        else:
            cues_against = ()
        for name, lvl in cues_against:
            if level(m, name) == lvl:
                against.append(CUES[(name, lvl)])
        wrong = contradictions(m, claims)
        label_consistency = 10 if stated else 2
        media_consistency = max(1, 10 - 5 * len(wrong))  # one clear contradiction sinks a sample
        label_accuracy = 9 if not against else 4
        # A sample is as good as its weakest check: a face whose measured cues speak against
        # its label is not a sample to teach the label with.
        overall = min(label_consistency, media_consistency, label_accuracy)
        reasons = [("states the label" if stated else "does not state the label")]
        reasons.append("contradicts no measurement" if not wrong else "; ".join(wrong))
        if against:
            reasons.append(f"the face shows cues against the label: {', '.join(against)}")
        return FaceRating(label_accuracy=label_accuracy, media_consistency=media_consistency,
                          label_consistency=label_consistency, overall=overall, reason="; ".join(reasons))


# --- models --------------------------------------------------------------------------------


def media_parts(media: FaceMedia, backend: str) -> list[ImagePart]:
    """The face as the provider takes it: an image as itself; a video to Gemini as the
    crop-track video, to the others as its sampled frames."""
    if media.video is None:
        return [ImagePart(media.image, _mime(media.image))]
    if backend == "gemini":
        return [ImagePart(media.video, "video/mp4")]
    return [ImagePart(frame, _mime(frame)) for frame in media.frames]


def _mime(data: bytes) -> str:
    return "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"


def label_words(task: str, label: dict) -> str:
    """The label as the prompts state it."""
    if task == "expression":
        return _emotion(label)
    if task == "au":
        return ", ".join(au_phrase(a) for a in label["aus"]) or "no action unit"
    if task == "attribute":
        return ", ".join(a.replace("_", " ") for a in label["attributes"]) or "none of the usual attributes"
    if task == "age":
        return str(label["age"])
    if not label["fake"]:
        return "real"
    return f"fake, made with {label['method']}" if label.get("method") else "fake"


class LlmDescriber:
    """Label-assisted descriptions by a model (`pipelines.llm`)."""

    def __init__(self, client, prompts: PromptLibrary | None = None):
        self.client = client
        self.prompts = prompts or load_face_prompts()
        self.name, self.model = client.backend.name, client.backend.model

    def templates(self) -> list[TemplateRef]:
        return [t.ref for k, t in self.prompts.templates.items() if k != "rating"]

    def describe(self, media: FaceMedia) -> str:
        item = media.item
        template = self.prompts[item.task]
        system, user = template.render(media=item.media_type, label=label_words(item.task, item.label))
        request = LlmRequest(template=template.ref, system=system, user=user, schema=FaceDescription,
                             images=tuple(media_parts(media, self.client.backend.name)))
        return self.client.ask(request).description.strip()


class LlmRater:
    """The four criteria scored by a model."""

    def __init__(self, client, prompts: PromptLibrary | None = None):
        self.client = client
        self.prompts = prompts or load_face_prompts()
        self.name, self.model = client.backend.name, client.backend.model

    def templates(self) -> list[TemplateRef]:
        return [self.prompts["rating"].ref]

    def rate(self, media: FaceMedia, description: str) -> FaceRating:
        item = media.item
        template = self.prompts["rating"]
        system, user = template.render(media=item.media_type, task=item.task,
                                       label=label_text(item.task, item.label), description=description)
        request = LlmRequest(template=template.ref, system=system, user=user, schema=FaceRating,
                             images=tuple(media_parts(media, self.client.backend.name)))
        return self.client.ask(request)

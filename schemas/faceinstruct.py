"""Records of the FaceInstruct pipeline: the items readers find, rejected rows, samples.

An item is one labelled medium of a source dataset: an image, a video, or one labelled
frame of a video (DISFA).  A shard row (`FaceSample`) is one item's face crop (the middle
frame for a video, with the sampled crop frames beside it), its 68 landmarks per kept
frame, its label and the instruction sample about it.  The shard schema (HF `Features`)
is derived from `FaceSample` by `schemas.features`, so a column is defined once, here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Rejected, TemplateRef, Turn
from schemas.features import HF_IMAGE
from schemas.llm import FaceRating

TASKS = ("expression", "au", "attribute", "age", "deepfake")
MEDIA_TYPES = ("image", "video")
SPLITS = ("train", "test")
# The `--source NAME` of each dataset reader, with the task it labels.
SOURCES: dict[str, str] = {
    "dfew": "expression", "mafw": "expression", "ferv39k": "expression", "crema_d": "expression",
    "affectnet": "expression", "rafdb": "expression",
    "disfa": "au", "bp4d": "au",
    "celeba": "attribute",
    "morph": "age", "utkface": "age",
    "ffpp": "deepfake", "fakeavceleb": "deepfake",
}
assert set(SOURCES.values()) == set(TASKS)

# The label vocabularies the pipeline writes and the training metrics read.
# The emotion each official name means, in one vocabulary: for the describer's wording
# and for grouping in reports (the label column keeps the official name).
EMOTION_OF = {
    "happy": "happiness", "happiness": "happiness", "sad": "sadness", "sadness": "sadness",
    "neutral": "neutral", "angry": "anger", "anger": "anger", "surprise": "surprise",
    "disgust": "disgust", "fear": "fear", "contempt": "contempt", "anxiety": "anxiety",
    "helplessness": "helplessness", "disappointment": "disappointment",
}
# FACS names (Ekman & Friesen), for the AUs DISFA and BP4D code.
AU_NAMES = {
    1: "Inner Brow Raiser", 2: "Outer Brow Raiser", 4: "Brow Lowerer", 5: "Upper Lid Raiser",
    6: "Cheek Raiser", 7: "Lid Tightener", 9: "Nose Wrinkler", 10: "Upper Lip Raiser",
    11: "Nasolabial Deepener", 12: "Lip Corner Puller", 13: "Cheek Puffer", 14: "Dimpler",
    15: "Lip Corner Depressor", 16: "Lower Lip Depressor", 17: "Chin Raiser", 18: "Lip Pucker",
    20: "Lip Stretcher", 22: "Lip Funneler", 23: "Lip Tightener", 24: "Lip Pressor", 25: "Lips Part",
    26: "Jaw Drop", 27: "Mouth Stretch", 28: "Lip Suck",
}
# The 40 CelebA attributes, in the dataset's column order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def label_json(label: dict[str, Any]) -> str:
    """The `label` column's text: the task's JSON object, keys sorted, compact."""
    return json.dumps(label, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class FaceItem(BaseModel):
    """One labelled medium a reader found (an image, a video, or a frame of a video)."""

    model_config = ConfigDict(frozen=True)

    source_dataset: str = Field(description="the --source NAME, or the manifest's value")
    source_path: str = Field(description="the media's path relative to the source root, as the dataset names "
                             "it (a frame folder for a frame-folder video)")
    source_frame: int | None = Field(default=None, description="0-based frame of the decoded video, for an "
                                     "item that is one frame of it")
    media: str = Field(description="where the media is: a local path or a filesystem URL")
    media_type: str = Field(description="image or video (a frame of a video is an image item)")
    task: str
    label: dict[str, Any] = Field(description="the task's label object (see `label_json`)")
    split: str | None = Field(default=None, description="the dataset's official split; none: by identity hash")
    subject_id: str | None = Field(default=None, description="the person, when the dataset says")
    origin: str = Field(description="where the item was read: the label file or manifest, and its line")
    # Where the pipeline read the item from (its items list or the user's manifest) and the
    # row: what tells two rows naming the same item apart.
    manifest: str = ""
    row: int = 0

    @property
    def item_id(self) -> str:
        """Stable id of the item from its source identity."""
        import hashlib

        key = f"{self.source_dataset}\0{self.source_path}\0{self.source_frame}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def rejected(self, stage: str, reason: str, detail: str, **fields) -> RejectedItem:
        return RejectedItem(source_dataset=self.source_dataset, source_path=self.source_path,
                            source_frame=self.source_frame, task=self.task, stage=stage, reason=reason,
                            detail=detail, origin=self.origin, **fields)

    # The shared stage shell names a unit by `pair_id` in its logs.
    @property
    def pair_id(self) -> str:
        return self.item_id


class RejectedItem(Rejected):
    """An input that produced no sample, with where and why."""

    source_dataset: str
    source_path: str
    source_frame: int | None = None
    task: str | None = None
    stage: str
    reason: str
    detail: str
    origin: str | None = Field(default=None, description="the label file or manifest and line the input came from")
    rating: FaceRating | None = Field(default=None, description="the rater's scores (rate stage)")
    description: str | None = Field(default=None, description="the description that was judged (rate stage)")


class FaceMeasures(BaseModel):
    """Face measurements from the 68 landmarks of one frame (null where they cannot be
    taken).  Distances are in inter-ocular units (outer eye corners), angles in degrees."""

    mouth_opening: float | None = Field(default=None, description="inner-lip gap over mouth width")
    mouth_corner_lift: float | None = Field(default=None, description="lip corners above the lip centre line, "
                                            "inter-ocular units (positive: corners up)")
    brow_raise: float | None = Field(default=None, description="mean brow height above the eye centres, "
                                     "inter-ocular units")
    eye_opening: float | None = Field(default=None, description="mean eye aspect ratio (lid gap over eye width)")
    yaw: float | None = Field(default=None, description="head turn, degrees (positive: toward image-right)")
    pitch: float | None = Field(default=None, description="head tilt up/down, degrees (positive: chin up)")
    roll: float | None = Field(default=None, description="head roll in the image plane, degrees")


class Provenance(BaseModel):
    origin: str = Field(description="the label file or manifest, and its line")
    describer: str
    model: str | None = None
    rater: str | None = None
    rater_model: str | None = None
    prompt_templates: list[TemplateRef]
    facext_version: str
    options_hash: str = Field(description="hash of the options that shape the samples")


class FaceSample(BaseModel):
    """One row of a FaceInstruct shard: one item, its face crop(s) and its instruction sample."""

    sample_id: str = Field(description="unique id of the sample (from the item's source identity)")
    task: str = Field(description="expression, au, attribute, age or deepfake")
    media_type: str = Field(description="image or video")
    source_dataset: str = Field(description="the --source NAME, or the manifest's value")
    source_path: str = Field(description="the media's path relative to the source root, as the dataset names it")
    source_frame: int | None = Field(default=None, description="0-based frame of the decoded video (an item "
                                     "that is one frame of a video); null otherwise")
    split: str = Field(description="train or test")
    subject_id: str | None = None
    image: bytes = Field(json_schema_extra=HF_IMAGE, description="the face crop (a video's middle sampled frame)")
    frames: list[bytes] = Field(description="a video's sampled crop frames (--frames, uniform), encoded; "
                                "empty for an image")
    frame_indices: list[int] = Field(description="which frames of the kept crop track were sampled")
    fps: float | None = Field(default=None, description="frame rate of the kept crop track (video)")
    track_frames: int = Field(description="frames of the kept crop track (1 for an image)")
    video: bytes | None = Field(default=None, description="a video's crop track as mp4 (no audio, at `fps`), "
                                "the frames `landmarks` describe; null for an image")
    landmarks: list[list[list[float]]] = Field(description="68 iBUG points (x, y) per kept frame, normalised "
                                               "to the crop (0..1)")
    crop_transform: list[list[float]] = Field(description="2x3, source pixels -> crop pixels (the middle frame's)")
    label: str = Field(description="the label, a JSON object keyed by task (see the README)")
    label_text: str = Field(description="the label for people")
    conversations: list[Turn] = Field(description="instruction (`human`) and description (`gpt`), LLaVA style")
    rating: FaceRating | None = None
    measurements: FaceMeasures = Field(description="what was measured on the face from the landmarks (the "
                                       "middle frame; the offline describer's evidence)")
    provenance: Provenance

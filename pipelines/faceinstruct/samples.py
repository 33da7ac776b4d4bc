"""FaceInstruct samples: an item's face, its instruction (one of the task's 100, chosen by
seed and item) and its description, as one shard row (`schemas.faceinstruct.FaceSample`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.common.splits import identity_split
from pipelines.faceinstruct.labels import label_text
from pipelines.faceinstruct.media import FaceMedia
from prompts.faceinstruct_instructions import load_face_instructions
from schemas.common import Turn
from schemas.faceinstruct import FaceSample, Provenance, label_json
from schemas.llm import FaceRating
from schemas.version import facext_version


@dataclass(frozen=True)
class SampleConfig:
    seed: int = 0
    test_fraction: float = 0.1


def split_of(item, test_fraction: float) -> str:
    """The dataset's official split; else by identity (the subject within its dataset,
    else the item), so no person is in both splits."""
    if item.split is not None:
        return item.split
    key = f"{item.source_dataset}/{item.subject_id}" if item.subject_id else item.item_id
    return identity_split(key, test_fraction)


class SampleMaker:
    def __init__(self, config: SampleConfig, options_hash: str, describer: tuple[str, str | None, list],
                 rater: tuple[str | None, str | None, list]):
        """`describer` and `rater`: (name, model, prompt templates) of who wrote and scored the texts."""
        self.config, self.options_hash = config, options_hash
        self.describer, self.rater = describer, rater
        self.instructions = load_face_instructions()
        self.version = facext_version()

    def make(self, media: FaceMedia, description: str, rating: FaceRating | None) -> FaceSample:
        item = media.item
        question = self.instructions.instruction(item.task, item.media_type, item.item_id, self.config.seed)
        templates = [self.instructions.template, *self.describer[2], *self.rater[2]]
        provenance = Provenance(origin=item.origin, describer=self.describer[0], model=self.describer[1],
                                rater=self.rater[0], rater_model=self.rater[1], prompt_templates=templates,
                                facext_version=self.version, options_hash=self.options_hash)
        landmarks = [[[round(float(v), 5) for v in point] for point in frame] for frame in media.landmarks]
        return FaceSample(
            sample_id=item.item_id, task=item.task, media_type=item.media_type, source_dataset=item.source_dataset,
            source_path=item.source_path, source_frame=item.source_frame,
            split=split_of(item, self.config.test_fraction), subject_id=item.subject_id, image=media.image,
            frames=media.frames, frame_indices=media.frame_indices, fps=media.fps, track_frames=media.track_frames,
            video=media.video, landmarks=landmarks,
            crop_transform=[[float(v) for v in row] for row in media.transform],
            label=label_json(item.label), label_text=label_text(item.task, item.label),
            conversations=[Turn(**{"from": "human", "value": question}),
                           Turn(**{"from": "gpt", "value": description})],
            rating=rating, measurements=media.measures, provenance=provenance)

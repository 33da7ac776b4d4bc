"""The output folder of a FaceInstruct run (`pipelines.common.run_output`): FaceInstruct's
records, and its report sections (per source dataset, video tracks)."""

from __future__ import annotations

from typing import Any

from pipelines.common.run_output import RunOutput
from pipelines.common.run_report import build_report
from schemas.common import Stage
from schemas.faceinstruct import SPLITS, TASKS, FaceSample, RejectedItem
from schemas.llm import FACE_CRITERIA

# Rejected rows of one media differ by frame, origin and what was decided.
REJECTED_ORDER = ("source_dataset", "source_path", "source_frame", "origin", "stage", "reason", "detail")
STAGES = (Stage.MANIFEST, Stage.READ, Stage.FACE, Stage.DESCRIBE, Stage.RATE, Stage.SAMPLES)


class FaceInstructOutput(RunOutput):
    pipeline = "faceinstruct_build"
    sample_type = FaceSample
    rejected_type = RejectedItem
    splits = SPLITS
    rejected_order = REJECTED_ORDER
    sort_fields = ("sample_id",)
    unit = "items"

    def build_report(self, events: dict[tuple, float], shards: dict, wall_s: float,
                     batch: dict | None) -> dict[str, Any]:
        return build_report(self.settings, events, shards, wall_s, batch, pipeline=self.pipeline, tasks=TASKS,
                            splits=SPLITS, unit=self.unit, stage_rows=STAGES, criteria=FACE_CRITERIA,
                            head={"sources": [{"name": n, "root": r} for n, r in self.settings.sources]},
                            sections={"by_source": sources_report(self.settings, events),
                                      "video": video_report(events)})


def sources_report(settings, events: dict[tuple, float]) -> dict[str, Any]:
    """Per source dataset: items the reader found, label rows it could not use, samples
    written, and every reject by reason (`inputs == written + rejected` per source)."""
    read = {name: {"items_found": items, "reader_rejected": rejected} for name, items, rejected in
            settings.source_counts}
    out: dict[str, Any] = {}
    for key, value in sorted(events.items()):
        if key[0] == "source":
            entry = out.setdefault(key[1], {"written": 0, "rejected": 0, "by_reason": {}})
            if key[2] == "written":
                entry["written"] += int(value)
            else:
                entry["rejected"] += int(value)
                entry["by_reason"][key[3]] = entry["by_reason"].get(key[3], 0) + int(value)
    for name, entry in out.items():
        entry["inputs"] = entry["written"] + entry["rejected"]
        entry.update(read.get(name, {}))
    return out


def video_report(events: dict[tuple, float]) -> dict[str, Any]:
    """Over the written videos: track frames, frames bridged because their face was
    missing, and the mean box jitter of the detector's boxes and of the smoothed track."""
    videos = int(events.get(("video_jitter", "videos"), 0))

    def mean(name: str) -> float | None:
        return round(events.get(("video_jitter", name), 0.0) / videos, 6) if videos else None

    return {"videos": videos, "track_frames": int(events.get(("video_frames", "track"), 0)),
            "frames_without_face_bridged": int(events.get(("video_frames", "failed"), 0)),
            "mean_jitter": {"detector": mean("detector"), "track": mean("track")}}

"""The FaceInstruct pipeline: its options, its graph and its run (the driver users call is
`pipelines/faceinstruct_build.py`).

Reads top to bottom like the method: read the datasets' labels (in the driver) -> crop the
face of each image, video or frame (exactly one face; a smooth track over a video) and
its 68 landmarks -> label-assisted description -> rating on the four criteria -> the
instruction sample -> write.  Every input ends as a sample or as a row of
`OUTPUT/rejected`; the counts are in `OUTPUT/run_report.json`.  With neither `--source`
nor `--input` it runs on the bundled sample datasets.
"""

from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common.beam_tags import EVENTS, OK, PENDING, REJECTED, split_outputs
from pipelines.common.llm_options import LlmFlags, add_dry_run_flag, bare_flags
from pipelines.common.logs import setup_pipeline
from pipelines.common.manifest_io import ReadManifest
from pipelines.common.options import add_arguments, pipeline_argv
from pipelines.common.progress import count_into
from pipelines.common.run_options import RunFlags
from pipelines.common.runners import drive
from pipelines.common.shards import join
from pipelines.common.spill import SpilledBatches
from pipelines.faceinstruct.options import FaceInstructFlags
from pipelines.faceinstruct.output import FaceInstructOutput
from pipelines.faceinstruct.samples import SampleConfig
from pipelines.faceinstruct.settings import NOT_OURS, FaceInstructSettings, items_parser
from pipelines.faceinstruct.stages import CropFaces, CropVideoFrames, Describe, MakeSample, Rate
from schemas.common import RejectReason


class FaceInstructOptions(PipelineOptions):
    """Beam's view of the pipeline's options: `FaceInstructFlags`, the run options and the LLM layer's."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_arguments(parser, FaceInstructFlags, "FaceInstruct")
        add_arguments(parser, RunFlags, "Run", exclude=NOT_OURS["run"])
        add_arguments(parser, LlmFlags, "LLM layer", exclude=NOT_OURS["llm"])
        add_dry_run_flag(parser)

    @classmethod
    def from_argv(cls, argv: list[str], also: tuple[str, ...] = ()) -> FaceInstructOptions:
        return cls(pipeline_argv(argv, cls, bare_flags, also))


def stage(pcoll, label: str, fn, tags=(OK, REJECTED, EVENTS)) -> dict:
    return split_outputs(pcoll | label >> beam.ParDo(fn), label, tags)


def _is_frame(item) -> bool:
    return item.source_frame is not None


def _item_id(media) -> str:
    return media.item.item_id


def _is_whole(item) -> bool:
    return item.source_frame is None


def _source_event(row):
    return (("source", row.source_dataset, "rejected", row.reason), 1)


def describer_of(settings: FaceInstructSettings) -> tuple:
    """(name, model, prompt templates) of who writes the descriptions."""
    from pipelines.faceinstruct.describe import OfflineDescriber
    from prompts.llm_prompts import load_face_prompts

    if settings.describer_llm is None:
        return ("evidence", None, OfflineDescriber().templates())
    refs = [t.ref for k, t in load_face_prompts().templates.items() if k != "rating"]
    return (settings.describer, settings.describer_llm.model, refs)


def rater_of(settings: FaceInstructSettings) -> tuple:
    from prompts.llm_prompts import load_face_prompts

    if settings.rater == "none":
        return (None, None, [])
    if settings.rater_llm is None:
        return ("evidence", None, [])
    return (settings.rater, settings.rater_llm.model, [load_face_prompts()["rating"].ref])


def build(p: beam.Pipeline, settings: FaceInstructSettings, output: FaceInstructOutput,
          progress_dir: str | None = None) -> None:
    """The graph.  Each stage's refusals go to `rejected`, its counts to `events`."""
    media = settings.media_config()
    inputs = p | "Read items" >> ReadManifest(settings.manifests, items_parser(settings.allow_absolute_paths),
                                              settings.row_caps if settings.limit is not None else None,
                                              RejectReason.DUPLICATE_ITEM, "this media and frame")
    # Two filters, not a Partition: the Dask runner hands every output of a multi-output
    # step all elements (see `pipelines.common.beam_tags`).
    frames = inputs["pairs"] | "Frames of videos" >> beam.Filter(_is_frame)
    whole = inputs["pairs"] | "Whole media" >> beam.Filter(_is_whole)
    cropped = stage(whole, "Crop faces", CropFaces(media, settings.analysis_cache))
    by_video = frames | "Key by video" >> beam.Map(lambda item: (item.media, item)) | "Group frames" >> beam.GroupByKey()
    cropped_frames = stage(by_video, "Crop video frames", CropVideoFrames(media, settings.analysis_cache))
    # Batches spread over workers; a batch's faces are described `--llm_concurrency` at a
    # time.  Grouped by a hash of the item, spilled (a shuffle carries references, not
    # crops): BatchElements would emit its last batch from finish_bundle, which the Dask
    # runner loses.
    batches = (cropped[OK], cropped_frames[OK]) | "Batch faces" >> SpilledBatches(
        output.spill_dir, _item_id, settings.batches())
    llm_tags = (OK, REJECTED, EVENTS, PENDING)
    described = stage(batches, "Describe", Describe(settings.describer, settings.describer_llm), llm_tags)
    rated = stage(described[OK], "Rate", Rate(settings.rater if settings.rater != "none" else None,
                                              settings.rater_llm, settings.min_rating), llm_tags)
    samples = stage(rated[OK], "Make sample",
                    MakeSample(SampleConfig(seed=settings.seed, test_fraction=settings.test_fraction),
                               settings.options_hash(), describer_of(settings), rater_of(settings)))
    rejected = ((inputs["rejected"], cropped[REJECTED], cropped_frames[REJECTED], described[REJECTED],
                 rated[REJECTED], samples[REJECTED]) | "All rejected" >> beam.Flatten())
    per_source = rejected | "Rejects per source" >> beam.Map(_source_event)
    events = (inputs["events"], cropped[EVENTS], cropped_frames[EVENTS], described[EVENTS], rated[EVENTS],
              samples[EVENTS], per_source)
    output.write(samples[OK], rejected, events, (described[PENDING], rated[PENDING]))
    if progress_dir:
        for i, pcoll in enumerate((rejected, samples[OK])):
            _ = pcoll | f"Progress {i}" >> beam.ParDo(count_into(join(progress_dir, "finished")))


def run(argv: list[str] | None = None, runner=None) -> FaceInstructOutput:
    """Run the pipeline (Beam's options and ours from argv); `runner` overrides --runner."""
    argv = setup_pipeline(argv)
    options = FaceInstructOptions.from_argv(list(sys.argv[1:] if argv is None else argv))
    settings = FaceInstructSettings.from_options(options.view_as(FaceInstructOptions))
    output = FaceInstructOutput(settings)
    if settings.dry_run:
        raise SystemExit("faceinstruct_build: --dry_run is not supported yet (fifa_annotate has it)")
    return drive(output, options, runner, lambda p, settings, progress_dir: build(p, settings, output, progress_dir),
                 progress_phases, "item")


def progress_phases(settings: FaceInstructSettings) -> list[tuple]:
    """The progress line: items finished (written or rejected) of the inputs."""
    return [("faceinstruct_build", "finished", settings.expected_inputs)]

if __name__ == "__main__":
    run()

"""The FiFa-Instruct pipeline: its options, its graph and its run (the driver users call
is `pipelines/fifa_annotate.py`).

Reads top to bottom like the method: read manifest -> load and validate pair -> face
geometry -> artifact analysis -> concepts and evidence -> describe -> rate -> make
samples -> write.  Every input ends as samples or as a row of `OUTPUT/rejected`; the counts are in
`OUTPUT/run_report.json`.  With no options it runs on the bundled sample pairs.
"""

from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common.beam_tags import CACHED, EVENTS, OK, PENDING, REJECTED, split_outputs
from pipelines.common.llm_options import LlmFlags, add_dry_run_flag, bare_flags
from pipelines.common.logs import setup_pipeline
from pipelines.common.manifest_io import ReadManifest
from pipelines.common.options import add_arguments, pipeline_argv
from pipelines.common.progress import count_into
from pipelines.common.run_options import RunFlags
from pipelines.common.runners import drive
from pipelines.common.shards import join
from pipelines.common.spill import SpilledBatches
from pipelines.fifa.options import FifaFlags
from pipelines.fifa.output import FifaOutput
from pipelines.fifa.pairs import pair_parser
from pipelines.fifa.settings import FifaSettings
from pipelines.fifa.stages import (
    AnalyseArtifacts,
    ConceptsAndEvidence,
    Describe,
    LoadPair,
    LocateFace,
    MakeSamples,
    Rate,
    analyses_kept,
)


class FifaOptions(PipelineOptions):
    """Beam's view of the pipeline's options: the flags of `FifaFlags` and the LLM layer's `LlmFlags`."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_arguments(parser, FifaFlags, "FiFa-Instruct")
        add_arguments(parser, RunFlags, "Run")
        add_arguments(parser, LlmFlags, "LLM layer")
        add_dry_run_flag(parser)

    @classmethod
    def from_argv(cls, argv: list[str], also: tuple[str, ...] = ()) -> FifaOptions:
        """The options of a command line, `--config` and a bare `--dry_run` included; an
        unknown option exits 2 before any work (`pipelines.common.options.pipeline_argv`).
        `also`: the caller's own flags, offered as suggestions."""
        return cls(pipeline_argv(argv, cls, bare_flags, also))  # FifaOptions' parser: --help lists ours


def stage(pcoll, label: str, fn, tags=(OK, REJECTED)) -> dict:
    """One stage: its DoFn, then its outputs by tag."""
    return split_outputs(pcoll | label >> beam.ParDo(fn), label, tags)


def pair_id_of(item) -> str:
    return item.pair.pair_id


def build(p: beam.Pipeline, settings: FifaSettings, output: FifaOutput, progress_dir: str | None = None) -> None:
    """The graph.  Each stage's refusals go to `rejected`, its counts to `events`; with
    `progress_dir` (local runs) every finished pair is also counted there."""
    analysis = settings.analysis_config()
    manifest = p | "Read manifest" >> ReadManifest(settings.manifests, pair_parser(settings.allow_absolute_paths),
                                                   settings.row_caps if settings.limit is not None else None)
    # Pairs whose analysis the cache holds skip the face models and the analysis (`cached`).
    cache = settings.analysis_cache
    loaded = stage(manifest["pairs"], "Load and validate pair", LoadPair(cache, analysis),
                   (OK, REJECTED, EVENTS, CACHED))
    located = stage(loaded[OK], "Face geometry", LocateFace(analysis, cache))
    artifacts = stage(located[OK], "Artifact analysis", AnalyseArtifacts(analysis, cache))
    concepts = stage(artifacts[OK], "Concepts and evidence", ConceptsAndEvidence(analysis, cache),
                     (OK, REJECTED, EVENTS))
    analysed = (concepts[OK], loaded[CACHED])  # spilled apart, met as references (`SpilledBatches`)
    # Batches spread over workers; a batch's pairs are described `--llm_concurrency` at a time.
    batches = analysed | "Batch pairs" >> SpilledBatches(output.spill_dir, pair_id_of, settings.batches())
    described = stage(batches, "Describe", Describe(settings.describer, settings.describer_llm),
                      (OK, REJECTED, EVENTS, PENDING))
    rated = stage(described[OK], "Rate", Rate(settings.rater if settings.rater != "none" else None,
                                              settings.rater_llm, settings.min_rating, settings.max_hallucinated),
                  (OK, REJECTED, EVENTS, PENDING))
    samples = stage(rated[OK], "Make samples",
                    MakeSamples(settings.sample_config(), settings.options_hash()), (OK, REJECTED, EVENTS))
    rejected = ((manifest["rejected"], loaded[REJECTED], located[REJECTED], artifacts[REJECTED],
                 concepts[REJECTED], described[REJECTED], rated[REJECTED], samples[REJECTED])
                | "All rejected" >> beam.Flatten())
    events = (manifest["events"], loaded[EVENTS], concepts[EVENTS], described[EVENTS], rated[EVENTS],
              samples[EVENTS])
    output.write(samples[OK], rejected, events, (described[PENDING], rated[PENDING]))
    if progress_dir:
        count_progress(progress_dir, "analysed", manifest["rejected"], loaded[REJECTED], located[REJECTED],
                       artifacts[REJECTED], concepts[REJECTED], *analysed)
        count_progress(progress_dir, "passed", *analysed)
        count_progress(progress_dir, "finished", described[REJECTED], rated[REJECTED], samples[REJECTED])
        count_progress(progress_dir, "finished", described[EVENTS], rated[EVENTS], samples[EVENTS],
                       weight=_finishing, first=3)


def count_progress(folder: str, group: str, *pcolls, weight=None, first: int = 0) -> None:
    """Counts pairs into `folder/group` for the progress line.  Each collection is counted
    in the stage that makes it (a Flatten would hold the counts back to the end of a
    local run)."""
    for i, pcoll in enumerate(pcolls, first):
        _ = pcoll | f"Progress {group} {i}" >> beam.ParDo(count_into(join(folder, group), weight))


FINISHED = ("pairs_written", "pending")  # events that end a pair's way (rejects end the others')


def _finishing(event) -> int:
    """1 for the events that end a pair's way (written, or waiting for a batch answer)."""
    return int(event[1]) if event[0][0] in FINISHED else 0


def run(argv: list[str] | None = None, runner=None) -> FifaOutput:
    """Run the pipeline (Beam's options and ours from argv); `runner` overrides --runner."""
    argv = setup_pipeline(argv)  # first: quiet unless -v/--verbose, before the runner starts workers
    options = FifaOptions.from_argv(list(sys.argv[1:] if argv is None else argv))
    settings = FifaSettings.from_options(options.view_as(FifaOptions))
    output = FifaOutput(settings)
    if settings.dry_run:
        from pipelines.fifa.plan import dry_run

        print(dry_run(settings))
        return output
    return drive(output, options, runner, lambda p, settings, progress_dir: build(p, settings, output, progress_dir),
                 progress_phases, "pair", analyses_kept(settings.analysis_cache))


def progress_phases(settings: FifaSettings) -> list[tuple]:
    """The progress line's phases: pairs analysed of the inputs, then pairs finished of those passed."""
    return [("fifa_annotate: analysing", "analysed", settings.expected_inputs),
            ("fifa_annotate: describing, rating, writing", "finished", "passed")]


if __name__ == "__main__":
    run()

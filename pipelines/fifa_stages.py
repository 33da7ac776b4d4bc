"""The Beam shells of the FiFa-Instruct stages.

Each shell holds the library object of its stage (set up once per worker), runs it on
one element, counts what happened (Beam metrics), and sends a pair the stage refuses
to the `rejected` output as a `RejectedRow`: with its typed reason, or with
`internal_error` and the exception when the library itself fails, so one bad sample
never stops a run.  Elements between the shells are `InFlight` records; outputs are
`(tag, value)` pairs (see `pipelines.beam_tags`).
"""

from __future__ import annotations

import logging
import threading
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines.beam_tags import OK, REJECTED, TAGS, event
from schemas.analysis import PairRejected, RejectReason, Stage
from schemas.fifa import PairInput, RejectedRow

NAMESPACE = "facext"
log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """A pair between stages: the manifest row, what the stages made of it so far, and
    seconds spent per sub-step."""

    pair: PairInput
    timings: dict[str, float] = field(default_factory=dict)
    real: np.ndarray | None = None
    fake: np.ndarray | None = None
    located: Any = None  # pipelines.analysis.LocatedPair
    artifacts: Any = None  # pipelines.artifacts.ArtifactMask


def rejected_row(pair: PairInput, stage: str, reason: str, detail: str) -> RejectedRow:
    return RejectedRow(pair_id=pair.pair_id, stage=stage, reason=reason, detail=detail,
                       real=pair.real, fake=pair.fake, method=pair.method or None,
                       category=pair.category or None, subject_id=pair.subject_id,
                       manifest=pair.manifest, row=pair.row)


class StageFn(beam.DoFn):
    """A stage over one pair: `step(element)` returns the next element, or yields several
    (and `event(...)` counts), and raises `PairRejected` to refuse the pair."""

    stage: Stage

    def __init__(self) -> None:
        name = self.stage.value
        self.seen = Metrics.counter(NAMESPACE, f"{name}_in")
        self.passed = Metrics.counter(NAMESPACE, f"{name}_out")
        self.refused = Metrics.counter(NAMESPACE, f"{name}_rejected")
        self.failed = Metrics.counter(NAMESPACE, f"{name}_internal_error")

    def pair_of(self, element) -> PairInput:
        return element.pair

    def step(self, element):
        raise NotImplementedError

    def process(self, element):
        self.seen.inc()
        pair = self.pair_of(element)
        try:
            out = self.step(element)
            results = list(out) if _is_generator(out) else [out]
        except PairRejected as exc:
            self.refused.inc()
            yield REJECTED, rejected_row(pair, self.stage.value, exc.reason.value, exc.detail)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must cost one pair, not the run
            self.failed.inc()
            log.error("%s failed on pair %s:\n%s", self.stage.value, pair.pair_id, traceback.format_exc())
            detail = f"{type(exc).__name__}: {exc}"
            yield REJECTED, rejected_row(pair, self.stage.value, RejectReason.INTERNAL_ERROR.value, detail)
            return
        self.passed.inc()
        for result in results:
            yield result if _is_tagged(result) else (OK, result)


def _is_tagged(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0] in TAGS


def _is_generator(value) -> bool:
    return isinstance(value, types.GeneratorType)


_per_thread = threading.local()


def shared_analyzer(config):
    """One `PairAnalyzer` per thread and config: runners may set a DoFn up many times
    (Dask: once per partition), and loading the face models takes a second."""
    from pipelines.analysis import PairAnalyzer

    cache = _per_thread.__dict__.setdefault("analyzers", {})
    if config not in cache:
        cache[config] = PairAnalyzer(config)
    return cache[config]


class AnalyzerStage(StageFn):
    """A stage that runs the analysis library (face models loaded on first use)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.analyzer = None

    def setup(self) -> None:
        self.analyzer = shared_analyzer(self.config)


class LoadPair(StageFn):
    """Stage 1: decode both images, normalise channels, check they match in size."""

    stage = Stage.READ

    def step(self, element: PairInput) -> InFlight:
        from pipelines.analysis import read_pair

        item = InFlight(element)
        item.real, item.fake = read_pair(element.real, element.fake, item.timings)
        return item

    def pair_of(self, element: PairInput) -> PairInput:
        return element


class LocateFace(AnalyzerStage):
    """Stage 2: the one face, its mesh, the aligned crop of both images, the label map."""

    stage = Stage.FACE

    def step(self, item: InFlight) -> InFlight:
        item.located = self.analyzer.locate(item.real, item.fake, item.timings)
        item.real = item.fake = None  # only the crops go on
        return item


class AnalyseArtifacts(AnalyzerStage):
    """Stage 3: the artifact mask from the RGB difference, and the pair-level gates."""

    stage = Stage.ARTIFACT

    def step(self, item: InFlight) -> InFlight:
        item.artifacts = self.analyzer.artifacts(item.located, item.timings)
        return item


class ConceptsAndEvidence(AnalyzerStage):
    """Stages 4-5: coverage of the 184 FICT nodes, evidence for the flagged ones."""

    stage = Stage.CONCEPTS

    def step(self, item: InFlight):
        from pipelines.samples import AnalyzedPair

        result = self.analyzer.concepts(item.located, item.artifacts, item.timings)
        if not any(c.artifact for c in result.analysis.concepts):
            raise PairRejected(RejectReason.NO_ARTIFACT,
                               f"no concept reaches the coverage threshold "
                               f"(artifact fraction {result.analysis.artifact_fraction:.4f})")
        analysed = AnalyzedPair(
            pair=item.pair, analysis=result.analysis,
            real_png=encode_png(result.real_crop), fake_png=encode_png(result.fake_crop),
            labels=result.labels, artifact_mask=result.artifact_mask,
        )
        for stage, seconds in item.timings.items():
            yield event(("seconds", stage), seconds)
        yield analysed


class Describe(StageFn):
    """Stage 6: the texts, per concept, then per parent, then the image."""

    stage = Stage.DESCRIBE

    def __init__(self, describer: str) -> None:
        super().__init__()
        self.describer_name = describer
        self.describer = None

    def setup(self) -> None:
        from fict.tree import load_tree
        from pipelines.describe import make_describer

        self.describer = make_describer(self.describer_name, load_tree())

    def step(self, item):
        return item, self.describer.describe(item.analysis, key=item.pair.pair_id)

    def pair_of(self, element):
        return element.pair


class MakeSamples(StageFn):
    """Stage 8: the samples of the 11 tasks, as shard rows."""

    stage = Stage.SAMPLES

    def __init__(self, sample_config, options_hash: str) -> None:
        super().__init__()
        self.sample_config = sample_config
        self.options_hash = options_hash
        self.maker = None
        self.made = Metrics.counter(NAMESPACE, "samples")

    def setup(self) -> None:
        from build_tools.version import facext_version
        from fict.tree import load_tree
        from pipelines.samples import SampleMaker
        from prompts.instructions import load_library

        self.maker = SampleMaker(load_tree(), load_library("fifa"), self.sample_config,
                                 facext_version=facext_version(), options_hash=self.options_hash)

    def pair_of(self, element):
        return element[0].pair

    def step(self, element):
        from schemas.features import to_row

        item, description = element
        samples = self.maker.make(item, description)
        self.made.inc(len(samples))
        yield event(("pairs_written",))
        for sample in samples:
            yield event(("samples", sample.task, sample.split))
            yield OK, to_row(sample)


# zlib level 1: a 512 px crop encodes in a quarter of level 6's time (23 vs 98 ms) for 8 % more bytes.
PNG_COMPRESSION = 1


def encode_png(image: np.ndarray) -> bytes:
    """Lossless, deterministic PNG of an RGB image (forensic crops keep every pixel)."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()

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

from pipelines.beam_tags import OK, PENDING, REJECTED, TAGS, event
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


def rejected_row(pair: PairInput, stage: str, reason: str, detail: str, **fields) -> RejectedRow:
    return RejectedRow(pair_id=pair.pair_id, stage=stage, reason=reason, detail=detail,
                       real=pair.real, fake=pair.fake, method=pair.method or None,
                       category=pair.category or None, subject_id=pair.subject_id,
                       manifest=pair.manifest, row=pair.row, **fields)


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

    def attempt(self, element) -> tuple[str, list]:
        """Run the step: ("passed", its tagged outputs), or ("refused" | "failed", the
        rejected row).  Touches no Beam state, so it may run on any thread."""
        pair = self.pair_of(element)
        try:
            out = self.step(element)
            results = list(out) if _is_generator(out) or isinstance(out, list) else [out]
        except PairRejected as exc:
            row = rejected_row(pair, self.stage.value, exc.reason.value, exc.detail, **exc.fields)
            return "refused", [(REJECTED, row)]
        except self.passed_up():
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must cost one pair, not the run
            log.error("%s failed on pair %s:\n%s", self.stage.value, pair.pair_id, traceback.format_exc())
            detail = f"{type(exc).__name__}: {exc}"
            return "failed", [(REJECTED, rejected_row(pair, self.stage.value,
                                                      RejectReason.INTERNAL_ERROR.value, detail))]
        outputs = [result if _is_tagged(result) else (OK, result) for result in results]
        return ("refused" if any(tag == REJECTED for tag, _ in outputs) else "passed"), outputs

    def passed_up(self) -> tuple[type[BaseException], ...]:
        """Exceptions that are not failures of the pair (a subclass handles them)."""
        return ()

    def count(self, outcome: str) -> None:
        self.seen.inc()
        counter = {"passed": self.passed, "refused": self.refused, "failed": self.failed}.get(outcome)
        if counter is not None:
            counter.inc()

    def process(self, element):
        outcome, outputs = self.attempt(element)
        self.count(outcome)
        yield from outputs


class ConcurrentStage(StageFn):
    """A stage over a batch of pairs, `concurrency` of them at a time.

    Model calls spend their time waiting on the network, so the pairs of a batch run on a
    thread pool (the LLM client bounds the calls in flight and their rate).  Batches, not
    single elements buffered across `process` calls, because outputs emitted from
    `finish_bundle` are lost on some runners (Dask).  The OK results of a batch leave as
    one list when `keep_batches`, else one by one.
    """

    keep_batches = False

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.pool = None

    def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self.concurrency > 1:
            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"facext-{self.stage.value}")

    def pair_of(self, element):
        return element[0].pair if isinstance(element, tuple) else element.pair

    def process(self, batch: list):
        results = self.pool.map(self.attempt, batch) if self.pool else map(self.attempt, batch)
        kept = []
        for outcome, outputs in results:
            self.count(outcome)
            for tag, value in outputs:
                if tag == OK and self.keep_batches:
                    kept.append(value)
                else:
                    yield tag, value
        yield from self.after_batch()
        if kept:
            yield OK, kept

    def after_batch(self):
        """Events to emit once a batch is done."""
        return ()

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


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
        analysed = analysed_pair(item.pair, self.analyzer.concepts(item.located, item.artifacts, item.timings))
        for stage, seconds in item.timings.items():
            yield event(("seconds", stage), seconds)
        yield analysed


def analysed_pair(pair: PairInput, result):
    """What the analysis hands on (`AnalyzedPair`); a pair with no flagged concept is refused."""
    from pipelines.samples import AnalyzedPair

    if not any(c.artifact for c in result.analysis.concepts):
        raise PairRejected(RejectReason.NO_ARTIFACT,
                           f"no concept reaches the coverage threshold "
                           f"(artifact fraction {result.analysis.artifact_fraction:.4f})")
    return AnalyzedPair(
        pair=pair, analysis=result.analysis,
        real_png=encode_png(result.real_crop), fake_png=encode_png(result.fake_crop),
        labels=result.labels, artifact_mask=result.artifact_mask,
    )


def analyse_pair(analyzer, pair: PairInput):
    """Stages 1-5 on one pair outside Beam (dry runs, estimates); raises PairRejected."""
    from pipelines.analysis import read_pair

    real, fake = read_pair(pair.real, pair.fake)
    located = analyzer.locate(real, fake)
    return analysed_pair(pair, analyzer.concepts(located, analyzer.artifacts(located)))


def llm_errors_as_rejections(fn):
    """Turn the LLM client's failures into typed rejections of the pair."""
    from functools import wraps

    @wraps(fn)
    def wrapped(*args, **kwargs):
        from pipelines.llm.client import LlmFailed, LlmInvalid

        try:
            return fn(*args, **kwargs)
        except LlmFailed as exc:
            raise PairRejected(RejectReason.LLM_FAILED, str(exc)) from None
        except LlmInvalid as exc:
            raise PairRejected(RejectReason.LLM_INVALID_OUTPUT, str(exc)) from None

    return wrapped


class LlmStage(ConcurrentStage):
    """A stage that may ask a model: one shared client per process, its usage counted."""

    def __init__(self, llm) -> None:
        super().__init__(llm.concurrency if llm is not None else 1)
        self.llm = llm
        self.client = None

    def setup(self) -> None:
        super().setup()
        if self.llm is not None:
            from pipelines.llm.config import shared_client

            self.client = shared_client(self.llm)

    def passed_up(self):
        from pipelines.llm.client import LlmDeferred

        return (LlmDeferred,)

    def attempt(self, element):
        from pipelines.llm.client import LlmDeferred

        try:
            return super().attempt(element)
        except LlmDeferred as exc:  # batch submit: the pair waits for the batch's answers
            backend, model = self.client.backend, self.client.model
            lines = [(PENDING, (self.llm.slug, backend.batch_line(r, r.key(backend.name, model))))
                     for r in exc.requests]
            return "pending", [*lines, event(("pending", self.stage.value))]

    def after_batch(self):
        if self.client is not None:
            for name, amount in self.client.stats.drain().items():
                yield event(("llm", self.client.name, self.client.model, name), amount)


class Describe(LlmStage):
    """Stage 6: the texts, per concept, then per parent, then the image."""

    stage = Stage.DESCRIBE
    keep_batches = True

    def __init__(self, describer: str, llm=None) -> None:
        super().__init__(llm)
        self.describer_name = describer
        self.describer = None

    def setup(self) -> None:
        from fict.tree import load_tree
        from pipelines.describe import make_describer

        super().setup()
        if self.client is not None:
            from pipelines.llm.writers import LlmDescriber

            self.describer = LlmDescriber(load_tree(), self.client)
        else:
            self.describer = make_describer(self.describer_name, load_tree())

    @llm_errors_as_rejections
    def step(self, item):
        return item, self.describer.describe(item.analysis, key=item.pair.pair_id, pair=item)


class Rate(LlmStage):
    """Stage 7: the hallucination check and the rating; pairs below the bars go to `rejected`."""

    stage = Stage.RATE

    def __init__(self, rater: str | None, llm=None, min_rating: float = 6,
                 max_hallucinated: int | None = 0) -> None:
        super().__init__(llm)
        self.rater_name = rater
        self.min_rating = min_rating
        self.max_hallucinated = max_hallucinated
        self.rater = self.matcher = self.tree = None

    def setup(self) -> None:
        from fict.tree import load_tree
        from pipelines.concept_mentions import matcher_for
        from pipelines.rating import make_rater

        super().setup()
        tree = self.tree = load_tree()
        self.matcher = matcher_for(tree)
        if self.client is not None:
            from pipelines.llm.writers import LlmRater

            self.rater = LlmRater(tree, self.client)
        elif self.rater_name is not None:
            self.rater = make_rater(self.rater_name, tree)

    def pair_of(self, element):
        return element[0].pair

    @llm_errors_as_rejections
    def step(self, element) -> list:
        """The pair's events, then the pair or its rejected row: the hallucination and
        rating counts include the pairs they reject, so they measure the backend."""
        from schemas.fifa import TextCheck
        from schemas.llm import CRITERIA

        item, description = element
        flagged = set(item.flagged)
        texts = [description.image, *description.concepts.values()]
        mentioned = [self.matcher.mentioned(text) for text in texts]  # one scan a text
        found = [[c for c in ids if c not in flagged] for ids in mentioned]
        hallucinated = list(dict.fromkeys(c for names in found for c in names))
        out = [event(("hallucination", "texts"), len(texts)),
               event(("hallucination", "texts_hallucinating"), sum(1 for names in found if names)),
               event(("hallucination", "mentions"), sum(len(ids) for ids in mentioned)),
               event(("hallucination", "hallucinated_mentions"), sum(len(names) for names in found))]

        def reject(reason: RejectReason, detail: str, **fields) -> list:
            row = rejected_row(item.pair, self.stage.value, reason.value, detail,
                               hallucinated_concepts=hallucinated, texts=self.judged(description), **fields)
            return [*out, (REJECTED, row)]

        if self.max_hallucinated is not None and len(hallucinated) > self.max_hallucinated:
            return reject(RejectReason.HALLUCINATED,
                          f"the texts name {len(hallucinated)} concept(s) with no artifact "
                          f"(at most {self.max_hallucinated}): {', '.join(hallucinated)}")
        rating = None
        if self.rater is not None:
            rating = self.rater.rate(item.analysis, description.concepts, description.image,
                                     key=item.pair.pair_id, pair=item)
            out += [event(("rating", c, str(getattr(rating, c)))) for c in CRITERIA]
            if rating.overall < self.min_rating:
                return reject(RejectReason.LOW_RATING,
                              f"overall {rating.overall} < --min_rating {self.min_rating:g}: {rating.reason}",
                              rating=rating)
        check = TextCheck(rating=rating, rater=getattr(self.rater, "name", None),
                          rater_model=getattr(self.rater, "model", None),
                          templates=self.rater.templates() if self.rater is not None else [],
                          hallucinated_concepts=hallucinated)
        return [*out, (OK, (item, description, check))]


    def judged(self, description) -> list:
        """The texts as a person reads them, for the rejected row (so a reviewer sees what
        was dropped, not only why)."""
        from pipelines.describe import render
        from schemas.fifa import JudgedText

        texts = [JudgedText(text=render(description.image, self.tree, grounded=False))]
        return texts + [JudgedText(concept=c, text=render(t, self.tree, grounded=False))
                        for c, t in description.concepts.items()]


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

        item, description, check = element
        samples = self.maker.make(item, description, check)
        self.made.inc(len(samples))
        yield event(("pairs_written",))
        yield from concept_events(item.analysis)
        templates = {(t.id, t.version) for sample in samples for t in sample.provenance.prompt_templates}
        for template_id, version in sorted(templates):
            yield event(("template", template_id, version))
        for sample in samples:
            yield event(("samples", sample.task, sample.split))
            yield OK, to_row(sample)


COVERAGE_BINS = 10


def concept_events(analysis) -> list:
    """Dataset-level figures of a written pair: which concepts were flagged, how much of
    each flagged atomic region the artifact covers, and how much of the face changed
    (coverage and changed fraction in tenths: bin b holds [b/10, (b+1)/10))."""
    def tenth(x: float) -> str:
        return str(min(int(x * COVERAGE_BINS), COVERAGE_BINS - 1))

    out = [event(("flagged", c.id)) for c in analysis.concepts if c.artifact]
    out += [event(("coverage", tenth(c.coverage))) for c in analysis.concepts if c.artifact and c.atomic]
    if analysis.changed_face_fraction is not None:
        out.append(event(("changed_face", tenth(analysis.changed_face_fraction))))
    return out


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

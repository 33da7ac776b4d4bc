"""The Beam stages of FiFa-Instruct, over the shared stage shell (`pipelines.common.stages`).

Elements between the stages are `InFlight` records: the manifest row, what the stages
made of it so far, and seconds spent per sub-step.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics

from pipelines.common.beam_tags import OK, REJECTED, event
from pipelines.common.stages import NAMESPACE, LlmStage, StageFn, llm_errors_as_rejections
from schemas.common import PairRejected, RejectReason, Stage
from schemas.fifa import PairInput


@dataclass
class InFlight:
    """A pair between stages: the manifest row, what the stages made of it so far, and
    seconds spent per sub-step."""

    pair: PairInput
    timings: dict[str, float] = field(default_factory=dict)
    real: np.ndarray | None = None
    fake: np.ndarray | None = None
    located: Any = None  # pipelines.fifa.analysis.LocatedPair
    artifacts: Any = None  # pipelines.fifa.artifacts.ArtifactMask


_per_thread = threading.local()


def shared_analyzer(config):
    """One `PairAnalyzer` per thread and config: runners may set a DoFn up many times
    (Dask: once per partition), and loading the face models takes a second."""
    from pipelines.fifa.analysis import PairAnalyzer

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
        from pipelines.fifa.analysis import read_pair

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
    from pipelines.fifa.samples import AnalyzedPair

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
    from pipelines.fifa.analysis import read_pair

    real, fake = read_pair(pair.real, pair.fake)
    located = analyzer.locate(real, fake)
    return analysed_pair(pair, analyzer.concepts(located, analyzer.artifacts(located)))


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
        from pipelines.fifa.describe import make_describer

        super().setup()
        if self.client is not None:
            from pipelines.fifa.llm_writers import LlmDescriber

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
        from fict.mentions import matcher_for
        from fict.tree import load_tree
        from pipelines.fifa.rating import make_rater

        super().setup()
        tree = self.tree = load_tree()
        self.matcher = matcher_for(tree)
        if self.client is not None:
            from pipelines.fifa.llm_writers import LlmRater

            self.rater = LlmRater(tree, self.client)
        elif self.rater_name is not None:
            self.rater = make_rater(self.rater_name, tree)

    def pair_of(self, element):
        return element[0].pair

    @llm_errors_as_rejections
    def step(self, element) -> list:
        """The pair's events, then the pair or its rejected row: the hallucination and
        rating counts include the pairs they reject, so they measure the backend."""
        from pipelines.common.rating import below_bar, rating_events
        from schemas.fifa import TextCheck

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
            row = item.pair.rejected(self.stage.value, reason.value, detail, hallucinated_concepts=hallucinated,
                                     texts=self.judged(description), **fields)
            return [*out, (REJECTED, row)]

        if self.max_hallucinated is not None and len(hallucinated) > self.max_hallucinated:
            return reject(RejectReason.HALLUCINATED,
                          f"the texts name {len(hallucinated)} concept(s) with no artifact "
                          f"(at most {self.max_hallucinated}): {', '.join(hallucinated)}")
        rating = None
        if self.rater is not None:
            rating = self.rater.rate(item.analysis, description.concepts, description.image,
                                     key=item.pair.pair_id, pair=item)
            out += rating_events(rating)
            low = below_bar(rating, self.min_rating)
            if low is not None:
                return reject(RejectReason.LOW_RATING, low, rating=rating)
        check = TextCheck(rating=rating, rater=getattr(self.rater, "name", None),
                          rater_model=getattr(self.rater, "model", None),
                          templates=self.rater.templates() if self.rater is not None else [],
                          hallucinated_concepts=hallucinated)
        return [*out, (OK, (item, description, check))]


    def judged(self, description) -> list:
        """The texts as a person reads them, for the rejected row (so a reviewer sees what
        was dropped, not only why)."""
        from pipelines.fifa.describe import render
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
        from fict.tree import load_tree
        from pipelines.fifa.samples import SampleMaker
        from prompts.instructions import load_library
        from schemas.version import facext_version

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

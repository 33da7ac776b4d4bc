"""The Beam stages of FiFa-Instruct, over the shared stage shell (`pipelines.common.stages`).

Elements between the stages are `InFlight` records: the manifest row, what the stages
made of it so far, and seconds spent per sub-step.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics

from pipelines.common.beam_tags import CACHED, OK, REJECTED, event
from pipelines.common.stages import NAMESPACE, LlmStage, StageFn, llm_errors_as_rejections
from pipelines.fifa.categories import ENTIRE_SYNTHESIS
from schemas.common import PairRejected, RejectReason, Stage
from schemas.fifa import CATEGORIES, PairInput


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
    cache_key: str | None = None  # the pair's entry in the analysis cache


# Bump when the analysis (stages 2-5) changes what it makes of the same pixels: the
# entries of the analysis cache made by older code are then never read.
ANALYSIS_CACHE_VERSION = 1


class AnalysisCache:
    """Finished analyses (stages 2-5) by content: the two images' pixels, the analysis
    settings and the code's version.  An entry holds what the analysis handed on (the
    `AnalyzedPair` without its manifest row) or the stage, reason and detail of its
    refusal, so a re-run or a resumed run repeats neither the face models nor the
    analysis of a pair it already finished."""

    def __init__(self, root: str, config) -> None:
        import dataclasses

        from pipelines.store import ContentStore
        from schemas.version import facext_version

        self.store = ContentStore(root, ".pkl")
        settings = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
        self.salt = f"{ANALYSIS_CACHE_VERSION}\x1f{facext_version()}\x1f{settings}".encode()

    def key(self, real: np.ndarray, fake: np.ndarray) -> str:
        digest = hashlib.sha256(self.salt)
        for image in (real, fake):
            digest.update(f"\x1f{image.shape}\x1f".encode())
            digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()

    def get(self, key: str) -> dict | None:
        data = self.store.get(key)
        try:
            entry = pickle.loads(data) if data is not None else None
            if entry is not None and "analysed" in entry:
                entry["analysed"] = {k: _unpack(v) for k, v in entry["analysed"].items()}
            return entry
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss, replaced by the next put
            return None

    def put(self, key: str, entry: dict) -> None:
        if "analysed" in entry:
            entry = {"analysed": {k: _pack(v) for k, v in entry["analysed"].items()}}
        self.store.put(key, pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))


def analyses_kept(root: str | None) -> Callable[[], str] | None:
    """For the Ctrl-C line: how many analyses this run finished into the cache at `root`
    (entries written since it started, counted only when asked; a local folder only, as
    listing an object store's entries is slow)."""
    if not root:
        return None
    if "://" in root:
        return lambda: f"finished analyses are kept in {root}"
    import time

    from pipelines.store import ContentStore

    store, started = ContentStore(root, ".pkl"), time.time()

    def kept() -> str:
        added = store.written_since(started)
        if not added:
            return "no analysis finished in this run"
        return f"{added} {'analysis' if added == 1 else 'analyses'} finished in this run, kept in {root}, " \
               f"will not be redone"

    return kept


# The label map and the artifact mask are most of an entry's bytes when stored raw (1.3 MB
# for a 512 px pair): the mask as bits and the label map through zlib level 1 take an entry
# to 0.8 MB (the crops, already PNG, are the rest) for about a millisecond.
def _pack(value):
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return ("bits", value.shape, np.packbits(value).tobytes())
    if isinstance(value, np.ndarray):
        return ("zlib", value.shape, value.dtype.str, zlib.compress(value.tobytes(), 1))
    return value


def _unpack(value):
    if isinstance(value, tuple) and value and value[0] == "bits":
        _, shape, data = value
        count = int(np.prod(shape))
        return np.unpackbits(np.frombuffer(data, np.uint8), count=count).astype(bool).reshape(shape)
    if isinstance(value, tuple) and value and value[0] == "zlib":
        _, shape, dtype, data = value
        return np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype)).reshape(shape).copy()
    return value


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
    """A stage that runs the analysis library (face models loaded on first use); with an
    analysis cache, its refusals are stored, so a re-run refuses the pair without the models."""

    def __init__(self, config, cache_root: str | None = None) -> None:
        super().__init__()
        self.config, self.cache_root = config, cache_root
        self.analyzer = self.cache = None

    def setup(self) -> None:
        self.analyzer = shared_analyzer(self.config)
        if self.cache_root:
            self.cache = AnalysisCache(self.cache_root, self.config)

    def attempt(self, element) -> tuple[str, list]:
        outcome, outputs = super().attempt(element)
        # A refusal is a property of the pixels (no face, not localised...); a failure
        # (internal_error) is not stored: the next run tries again.
        if outcome == "refused" and self.cache is not None and element.cache_key is not None:
            row = next(value for tag, value in outputs if tag == REJECTED)
            self.cache.put(element.cache_key, {"refused": (row.stage, row.reason, row.detail)})
        return outcome, outputs


SYNTHESIS_DETAIL = ("the manifest says entire synthesis: the whole image is generated, so its difference from "
                    "the real image marks no local artifact to explain (the same answer as a measured "
                    "global change; the images were not read)")


def synthesis_refusal(pair: PairInput) -> list:
    """An entire-synthesis fake, refused as a global change at the artifact stage without
    reading it, and counted apart in the report (`categories.entire_synthesis_rejected`)."""
    row = pair.rejected(Stage.ARTIFACT.value, RejectReason.GLOBAL_CHANGE.value, SYNTHESIS_DETAIL)
    return [(REJECTED, row), event(("entire_synthesis_rejected",))]


class LoadPair(StageFn):
    """Stage 1: decode both images, normalise channels, check they match in size.

    With an analysis cache, a pair whose analysis is stored leaves here as what stage 5
    made of it (tag `cached`), or as its stored refusal."""

    stage = Stage.READ

    def __init__(self, cache_root: str | None = None, config=None) -> None:
        super().__init__()
        self.cache_root, self.config = cache_root, config
        self.cache = None

    def setup(self) -> None:
        if self.cache_root:
            self.cache = AnalysisCache(self.cache_root, self.config)

    def step(self, element: PairInput):
        from pipelines.fifa.analysis import read_pair

        if element.category == ENTIRE_SYNTHESIS:
            return synthesis_refusal(element)
        item = InFlight(element)
        item.real, item.fake = read_pair(element.real, element.fake, item.timings)
        if self.cache is None:
            return item
        item.cache_key = self.cache.key(item.real, item.fake)
        entry = self.cache.get(item.cache_key)
        if entry is None:
            return [item, event(("analysis_cache", "misses"))]
        if "refused" in entry:
            stage, reason, detail = entry["refused"]
            return [(REJECTED, element.rejected(stage, reason, detail)), event(("analysis_cache", "hits"))]
        from pipelines.fifa.samples import AnalyzedPair

        return [(CACHED, AnalyzedPair(pair=element, **entry["analysed"])), event(("analysis_cache", "hits"))]

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
        if self.cache is not None and item.cache_key is not None:
            kept = {f.name: getattr(analysed, f.name) for f in fields(analysed) if f.name != "pair"}
            self.cache.put(item.cache_key, {"analysed": kept})
        for stage, seconds in item.timings.items():
            yield event(("seconds", stage), seconds)
        yield analysed


def analysed_pair(pair: PairInput, result):
    """What the analysis hands on (`AnalyzedPair`); a pair with no flagged concept is refused."""
    from pipelines.fifa.samples import AnalyzedPair

    if result.analysis.flags_nothing:
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
    """Stage 7: the hallucination and grounding checks and the rating; pairs below the
    bars go to `rejected`."""

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
        from pipelines.fifa.describe import ungrounded
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

        unmoored = ungrounded(self.tree, description)
        out.append(event(("hallucination", "texts_ungrounded"), len(unmoored)))
        if self.max_hallucinated is not None and len(hallucinated) > self.max_hallucinated:
            return reject(RejectReason.HALLUCINATED,
                          f"the texts name {len(hallucinated)} concept(s) with no artifact "
                          f"(at most {self.max_hallucinated}): {', '.join(hallucinated)}")
        if unmoored:
            return reject(RejectReason.UNGROUNDED,
                          f"{len(unmoored)} text(s) name none of the concepts they explain, so their "
                          f"answers would ground nothing: {', '.join(unmoored)}")
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
    """Stage 8: the samples of the 11 tasks, as shard rows (a row per distinct crop)."""

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
        rows = self.maker.make(item, description, check)
        self.made.inc(sum(len(row.samples) for row in rows))
        yield event(("pairs_written",))
        yield category_event(item.pair.category)
        yield from concept_events(item.analysis)
        templates = {(t.id, t.version) for row in rows
                     for t in (*row.provenance.prompt_templates, *(s.instructions for s in row.samples))}
        for template_id, version in sorted(templates):
            yield event(("template", template_id, version))
        for row in rows:
            yield event(("images", row.split))
            for sample in row.samples:
                yield event(("samples", sample.task, row.split))
            yield OK, to_row(row)


COVERAGE_BINS = 10


def category_event(category: str):
    """A written pair's category for the report: one of FiFa's four, a value facext does
    not know (no `cls` sample: counted with the value, never dropped silently), or none."""
    if category in CATEGORIES:
        return event(("category", category))
    return event(("unknown_category", category)) if category else event(("no_category",))


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
# zlib's RLE strategy would be 10 % faster again and 2-5 % smaller on face crops (13.4 vs
# 14.9 ms, 368 vs 375 KB on 512 px JPEG faces), but other bytes for the same pixels change
# every LLM cache key that shows a crop: a re-run would pay for those calls again.
PNG_COMPRESSION = 1


def encode_png(image: np.ndarray) -> bytes:
    """Lossless, deterministic PNG of an RGB image (forensic crops keep every pixel)."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()

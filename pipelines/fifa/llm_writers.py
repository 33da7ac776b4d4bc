"""The model-backed describer and rater (stages 6 and 7 with Gemini, OpenAI or a compatible
server), built on the same interfaces as the offline `evidence` ones.

The describer shows the model the real and fake crops with the concept's region outlined,
the concept's path in the tree and its measured evidence, and asks for plain prose.  The
concepts the prose names become `[[node_id]]` references when they are flagged, so they
can be grounded; names of unflagged concepts stay as written, and the hallucination check
counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import cv2
import numpy as np

from fict.mentions import matcher_for
from fict.tree import ConceptTree
from pipelines.common.rating import Rater
from pipelines.fifa.describe import Describer, evidence_phrases, grounded_leaves, render
from pipelines.llm.client import LlmClient, LlmDeferred
from pipelines.llm.request import ImagePart, LlmRequest
from prompts.llm_prompts import PromptLibrary, load_prompts
from schemas.analysis import ConceptCoverage, PairAnalysis
from schemas.common import TemplateRef
from schemas.llm import Explanation, Rating

OUTLINE_BGR = (0, 255, 0)
OUTLINE_NAME = "green"
OUTLINE_PX = 2
# The outlined crops are made for one prompt each (two per flagged concept), so their
# encoding is on the describe stage's path: PNG took 25 ms a crop, two cores' worth at
# 80 calls/s, where JPEG at 95 with full-resolution colour (4:4:4, so the thin outline
# keeps its hue) takes 1 ms and a fifth of the bytes.  The stored crops stay PNG.
OUTLINE_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


class PairImages:
    """The images a pair's prompts show, decoded and encoded once per pair."""

    def __init__(self, tree: ConceptTree, pair):
        self.tree, self.pair = tree, pair
        self._outlined: dict[str, tuple[ImagePart, ImagePart]] = {}

    @cached_property
    def real(self) -> ImagePart:
        return ImagePart(self.pair.real_png)

    @cached_property
    def fake(self) -> ImagePart:
        return ImagePart(self.pair.fake_png)

    @cached_property
    def _decoded(self) -> tuple[np.ndarray, np.ndarray]:
        return tuple(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
                     for png in (self.pair.real_png, self.pair.fake_png))

    def outlined(self, node_id: str) -> tuple[ImagePart, ImagePart]:
        """Both crops with the concept's region outlined."""
        if node_id not in self._outlined:
            member = self.tree.membership[self.tree.node_index[node_id]].astype(np.uint8)
            region = member[self.pair.labels]
            contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            parts = []
            for image in self._decoded:
                drawn = cv2.drawContours(image.copy(), contours, -1, OUTLINE_BGR, OUTLINE_PX)
                parts.append(ImagePart(cv2.imencode(".jpg", drawn, OUTLINE_JPEG)[1].tobytes(), "image/jpeg"))
            self._outlined[node_id] = (parts[0], parts[1])
        return self._outlined[node_id]

    def of_kind(self, kind: str, node_id: str | None = None) -> ImagePart:
        if kind == "real":
            return self.real
        if kind == "fake":
            return self.fake
        real, fake = self.outlined(node_id)
        return real if kind == "real_outlined" else fake


def evidence_text(concept: ConceptCoverage) -> str:
    """The measured evidence of one concept, as the lines a prompt shows."""
    e = concept.evidence
    if e is None:
        return f"- {concept.coverage:.0%} of the region changed"
    return "\n".join((
        f"- changed pixels: {e.area_px} ({concept.coverage:.0%} of the region)",
        f"- colour shift, fake minus real (CIE Lab): ΔL {e.delta_l:+.1f}, Δa {e.delta_a:+.1f}, Δb {e.delta_b:+.1f}",
        (f"- sharpness ×{e.sharpness_ratio:.2f}, edge strength ×{e.edge_ratio:.2f}, "
         f"texture change {e.texture_change:.1f}, mean difference {e.mean_abs_rgb_diff:.1f} grey levels"),
        f"- in words: {'; '.join(evidence_phrases(e))}",
    ))


def category_text(pair) -> str:
    pair_input = getattr(pair, "pair", None)
    category = getattr(pair_input, "category", "") or ""
    method = getattr(pair_input, "method", "") or ""
    if category and method:
        return f"{category}, {method}"
    return category or method or "method unknown"


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


class LlmDescriber(Describer):
    """Explanations written by a model through an `LlmClient`."""

    def __init__(self, tree: ConceptTree, client: LlmClient, prompts: PromptLibrary | None = None,
                 max_grounded: int = 6):
        super().__init__(tree, max_grounded)
        self.client = client
        self.prompts = prompts or load_prompts()
        self.name, self.model = client.name, client.model
        self.matcher = matcher_for(tree)

    def describe(self, analysis: PairAnalysis, key: str, pair=None):
        if pair is None:
            raise ValueError(f"the {self.name} describer needs the pair's crops")
        return super().describe(analysis, key, _Shown(pair, PairImages(self.tree, pair)))

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.client.in_flight.limit, thread_name_prefix="facext-describe-jobs")

    def run_jobs(self, jobs: dict[str, Callable[[], str]]) -> dict[str, str]:
        """The jobs of a level at once (they do not depend on each other; the client bounds
        the calls in flight), so a pair with many flagged concepts is not one slow chain.
        Every job runs even when some are deferred to a batch: a batch round then holds all
        of them.  A dry run goes in order, so its prompts are numbered the same every time."""
        if self.client.mode == "dry_run" or len(jobs) < 2:
            outcomes = {name: _outcome(job) for name, job in jobs.items()}
        else:
            futures = {name: self._pool.submit(_outcome, job) for name, job in jobs.items()}
            outcomes = {name: future.result() for name, future in futures.items()}
        done, deferred = {}, []
        for name, (text, error) in outcomes.items():
            if isinstance(error, LlmDeferred):
                deferred += error.requests
            elif error is not None:
                raise error
            else:
                done[name] = text
        if deferred:
            raise LlmDeferred(deferred)
        return done

    def _ask(self, template_key: str, images: list[ImagePart], **fields: str) -> str:
        template = self.prompts[template_key]
        system, user = template.render(**fields)
        answer = self.client.ask(LlmRequest(template.ref, system, user, Explanation, tuple(images)))
        return " ".join(answer.explanation.split())

    def _flagged(self, pair) -> set[str]:
        return {c.id for c in pair.analysis.concepts if c.artifact}

    def describe_concept(self, concept: ConceptCoverage, key: str, pair=None) -> str:
        template = self.prompts["concept_explanation"]
        images = [pair.images.of_kind(kind, concept.id) for kind in template.images]
        path = " > ".join(node.name for node in self.tree.path(concept.id))
        text = self._ask("concept_explanation", images, concept=concept.name, path=path, colour=OUTLINE_NAME,
                         evidence=evidence_text(concept), category=category_text(pair))
        return self.matcher.to_references(text, self._flagged(pair))

    def aggregate(self, node_id: str, parts: list[str], key: str, pair=None) -> str:
        plain = _bullets([render(part, self.tree, grounded=False) for part in parts])
        if node_id == self.tree.root.id:
            key_, fields = "image_aggregation", {"category": category_text(pair), "parts": plain}
        else:
            path = " > ".join(node.name for node in self.tree.path(node_id))
            key_, fields = "parent_aggregation", {"concept": self.tree[node_id].name, "path": path, "parts": plain}
        images = [pair.images.of_kind(kind, node_id) for kind in self.prompts[key_].images]
        text = self._ask(key_, images, **fields)
        return self.matcher.to_references(text, self._flagged(pair))

    def templates(self) -> list[TemplateRef]:
        return [self.prompts[k].ref for k in ("concept_explanation", "parent_aggregation", "image_aggregation")]


def _outcome(job: Callable[[], str]) -> tuple[str | None, Exception | None]:
    try:
        return job(), None
    except Exception as exc:  # noqa: BLE001 - handed back to the caller, which raises it
        return None, exc


class _Shown:
    """An analysed pair with its prompt images attached."""

    def __init__(self, pair, images: PairImages):
        self._pair, self.images = pair, images

    def __getattr__(self, name):
        return getattr(self._pair, name)


class LlmRater(Rater):
    """The four criteria scored by a model, from the crops, the evidence and the texts."""

    def __init__(self, tree: ConceptTree, client: LlmClient, prompts: PromptLibrary | None = None,
                 max_grounded: int = 6):
        self.tree, self.client = tree, client
        self.prompts = prompts or load_prompts()
        self.name, self.model = client.name, client.model
        self.max_grounded = max_grounded

    def rate(self, analysis: PairAnalysis, texts: dict[str, str], image_text: str, key: str,
             pair=None) -> Rating:
        if pair is None:
            raise ValueError(f"the {self.name} rater needs the pair's crops")
        template = self.prompts["rating"]
        images = PairImages(self.tree, pair)
        by_id = {c.id: c for c in analysis.concepts}
        leaves = grounded_leaves(self.tree, analysis, self.tree.root.id, self.max_grounded)
        flagged = ", ".join(self.tree[leaf].name for leaf in leaves)
        evidence = "\n".join(f"{self.tree[leaf].name}:\n{evidence_text(by_id[leaf])}" for leaf in leaves)
        shown = [f"image: {render(image_text, self.tree, grounded=False)}"]
        shown += [f"{self.tree[n].name}: {render(texts[n], self.tree, grounded=False)}" for n in leaves if n in texts]
        system, user = template.render(category=category_text(pair), flagged=flagged, evidence=evidence,
                                       texts=_bullets(shown))
        request = LlmRequest(template.ref, system, user, Rating,
                             tuple(images.of_kind(kind) for kind in template.images))
        return self.client.ask(request)

    def templates(self) -> list[TemplateRef]:
        return [self.prompts["rating"].ref]

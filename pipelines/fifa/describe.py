"""Stage 6: explanations of the artifacts, per concept, then per parent, then the image.

A describer writes text in which every concept it names appears as a reference
`[[node_id]]`; the sample maker later renders a reference as the concept's name (text
answers) or as `<p> name </p> [SEG]` with the concept's mask (grounded answers), so a
text can only ground concepts the analysis measured.  The offline `evidence` describer
writes deterministic sentences from the measured evidence alone and never refers to a
concept that was not flagged.  LLM describers plug in behind the same interface.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial

from pydantic import BaseModel, Field

from fict.tree import ConceptTree
from schemas.analysis import ConceptCoverage, ConceptEvidence, PairAnalysis
from schemas.common import TemplateRef

CONCEPT_REF = re.compile(r"\[\[([A-Za-z0-9_]+)\]\]")


class PairDescription(BaseModel):
    """Texts of one pair; concept names appear only as `[[node_id]]` references."""

    concepts: dict[str, str] = Field(description="flagged node id -> its explanation")
    image: str = Field(description="the whole image's explanation")
    describer: str
    model: str | None = None
    templates: list[TemplateRef] = Field(default_factory=list)


def referenced(text: str) -> list[str]:
    """Node ids referenced in a text, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in CONCEPT_REF.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def render(text: str, tree: ConceptTree, grounded: bool) -> str:
    """References as plain names, or as `<p> name </p> [SEG]` at their first mention."""
    done: set[str] = set()

    def name(match: re.Match) -> str:
        node_id = match.group(1)
        node_name = tree[node_id].name
        if grounded and node_id not in done:
            done.add(node_id)
            return f"<p> {node_name} </p> [SEG]"
        return node_name

    return CONCEPT_REF.sub(name, text)


def grounded_leaves(tree: ConceptTree, analysis: PairAnalysis, node_id: str,
                    limit: int) -> list[str]:
    """The flagged nodes under `node_id` (itself included) that have no flagged child:
    the most specific concepts with artifacts.  The `limit` largest by artifact pixels,
    returned in tree order."""
    by_id = {c.id: c for c in analysis.concepts}
    leaves = []

    def walk(nid: str) -> None:
        if not by_id[nid].artifact:
            return
        flagged_children = [c for c in tree[nid].children if by_id[c].artifact]
        if not flagged_children:
            leaves.append(nid)
        for child in flagged_children:
            walk(child)

    walk(node_id)
    largest = sorted(leaves, key=lambda nid: (-by_id[nid].artifact_px, tree.node_index[nid]))
    return sorted(largest[:limit], key=tree.node_index.__getitem__)


class Describer(ABC):
    """Writes the texts of one analysed pair.

    `describe` runs in two levels: every grounded leaf concept on its own (6a), then every
    flagged parent and the image from its leaves' texts (6b, 6c).  The texts of one level
    do not depend on each other, so a describer may run a level's jobs as it likes
    (`run_jobs`): the LLM describer gathers the requests a batch job must answer.
    """

    name: str
    model: str | None = None

    def __init__(self, tree: ConceptTree, max_grounded: int = 6):
        self.tree = tree
        self.max_grounded = max_grounded

    @abstractmethod
    def describe_concept(self, concept: ConceptCoverage, key: str, pair=None) -> str:
        """One flagged concept from its own evidence (stage 6a).  `pair` is the analysed
        pair (`pipelines.fifa.samples.AnalyzedPair`, crops included) when there is one."""

    @abstractmethod
    def aggregate(self, node_id: str, parts: list[str], key: str, pair=None) -> str:
        """A parent (or, for the root, the image) from its children's texts (6b, 6c)."""

    def templates(self) -> list[TemplateRef]:
        return []

    def run_jobs(self, jobs: dict[str, Callable[[], str]]) -> dict[str, str]:
        return {name: job() for name, job in jobs.items()}

    def describe(self, analysis: PairAnalysis, key: str, pair=None) -> PairDescription:
        """Per concept, then parents and the image."""
        by_id = {c.id: c for c in analysis.concepts}
        root = self.tree.root.id
        leaves = grounded_leaves(self.tree, analysis, root, len(by_id))
        texts = self.run_jobs({leaf: partial(self.describe_concept, by_id[leaf], key, pair) for leaf in leaves})
        jobs: dict[str, Callable[[], str]] = {}
        for node_id in (c.id for c in analysis.concepts if c.artifact and c.id not in texts and c.id != root):
            parts = [texts[leaf] for leaf in grounded_leaves(self.tree, analysis, node_id, self.max_grounded)]
            jobs[node_id] = partial(self.aggregate, node_id, parts, key, pair)
        image_parts = [texts[leaf] for leaf in grounded_leaves(self.tree, analysis, root, self.max_grounded)]
        if image_parts:
            jobs[IMAGE_JOB] = partial(self.aggregate, root, image_parts, key, pair)
        aggregated = self.run_jobs(jobs)
        image = aggregated.pop(IMAGE_JOB, "")
        texts.update(aggregated)
        if image_parts:
            texts[root] = " ".join(image_parts)
        texts = {c.id: texts[c.id] for c in analysis.concepts if c.id in texts}  # tree order
        return PairDescription(concepts=texts, image=image, describer=self.name, model=self.model,
                               templates=self.templates())


IMAGE_JOB = "\x00image"


def _pick(options: tuple[str, ...], *key: str) -> str:
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


# Thresholds for naming a change in words; below them the change is called subtle.
TONE_DELTA = 4.0  # Lab units
SHARPNESS_LOW, SHARPNESS_HIGH = 0.6, 1.6
EDGE_LOW, EDGE_HIGH = 0.75, 1.33
TEXTURE_CHANGE = 6.0  # grey levels of gradient magnitude


def evidence_phrases(e: ConceptEvidence) -> list[str]:
    """What changed, in words, each with the number it rests on."""
    tone = []
    if e.delta_l <= -TONE_DELTA:
        tone.append("darker")
    elif e.delta_l >= TONE_DELTA:
        tone.append("lighter")
    if e.delta_a >= TONE_DELTA:
        tone.append("redder")
    elif e.delta_a <= -TONE_DELTA:
        tone.append("greener")
    if e.delta_b >= TONE_DELTA:
        tone.append("more yellow")
    elif e.delta_b <= -TONE_DELTA:
        tone.append("bluer")
    phrases = []
    if tone:
        words = tone[0] if len(tone) == 1 else ", ".join(tone[:-1]) + " and " + tone[-1]
        phrases.append(f"{words} (ΔL {e.delta_l:+.1f}, Δa {e.delta_a:+.1f}, Δb {e.delta_b:+.1f})")
    if e.sharpness_ratio <= SHARPNESS_LOW:
        phrases.append(f"smoothed, with fine detail lost (sharpness ×{e.sharpness_ratio:.2f})")
    elif e.sharpness_ratio >= SHARPNESS_HIGH:
        phrases.append(f"over-sharpened (sharpness ×{e.sharpness_ratio:.2f})")
    elif e.edge_ratio <= EDGE_LOW:
        phrases.append(f"softer at its edges (edge strength ×{e.edge_ratio:.2f})")
    elif e.edge_ratio >= EDGE_HIGH:
        phrases.append(f"harder-edged (edge strength ×{e.edge_ratio:.2f})")
    elif e.texture_change >= TEXTURE_CHANGE:
        phrases.append(f"changed in texture (gradient change {e.texture_change:.1f})")
    if not phrases:
        phrases.append(f"subtly altered (mean difference {e.mean_abs_rgb_diff:.1f} grey levels)")
    return phrases


def extent_phrase(coverage: float) -> str:
    if coverage >= 0.6:
        return "across most of its area"
    if coverage >= 0.25:
        return "over part of its area"
    return "in a small patch"


class EvidenceDescriber(Describer):
    """Offline, deterministic sentences from the measured evidence."""

    name = "evidence"

    CONCEPT_SENTENCES = (
        "The [[{id}]] is {changes} compared with the real image, {extent}.",
        "In the [[{id}]], the pixels are {changes} relative to the real image, {extent}.",
        "The [[{id}]] has been altered: against the real image it is {changes}, {extent}.",
        "Manipulation traces sit in the [[{id}]], which is {changes} {extent}.",
        "Compared with the real image, the [[{id}]] is {changes}, {extent}.",
    )
    IMAGE_OPENINGS = (
        "This image was manipulated locally; {n} shows artifacts.",
        "The forgery is confined to a few places; {n} shows artifacts.",
        "Localized editing traces are visible; {n} shows artifacts.",
        "The changes are local rather than global; {n} shows artifacts.",
    )

    def describe_concept(self, concept: ConceptCoverage, key: str, pair=None) -> str:
        if concept.evidence is None:
            raise ValueError(f"{concept.id} is flagged but has no evidence")
        phrases = evidence_phrases(concept.evidence)
        changes = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        template = _pick(self.CONCEPT_SENTENCES, key, concept.id)
        return template.format(id=concept.id, changes=changes,
                               extent=extent_phrase(concept.coverage))

    def aggregate(self, node_id: str, parts: list[str], key: str, pair=None) -> str:
        body = " ".join(parts)
        if node_id != self.tree.root.id:
            return body
        count = "one region" if len(parts) == 1 else f"each of {len(parts)} regions"
        opening = _pick(self.IMAGE_OPENINGS, key, "image").format(n=count)
        return f"{opening} {body}"

    def templates(self) -> list[TemplateRef]:
        source = "\n".join(self.CONCEPT_SENTENCES + self.IMAGE_OPENINGS)
        version = hashlib.sha256(source.encode()).hexdigest()[:12]
        return [TemplateRef(id="evidence_describer@v1", version=version)]


DESCRIBERS = {"evidence": EvidenceDescriber}


def make_offline(registry: dict[str, type], kind: str, name: str, tree: ConceptTree, **options):
    """An offline describer or rater by name (the LLM ones are built from an `LlmClient`)."""
    try:
        cls = registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}") from None
    return cls(tree, **options)


def make_describer(name: str, tree: ConceptTree, **options) -> Describer:
    return make_offline(DESCRIBERS, "describer", name, tree, **options)

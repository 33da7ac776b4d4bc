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


def ungrounded(tree: ConceptTree, description: PairDescription) -> list[str]:
    """The texts that name none of the concepts they explain, by subject: `image` for the
    image text, else the node id.  A concept's text must reference that concept or a
    flagged concept under it; the image text must reference some flagged concept.  Such
    a text would give its explanation samples nothing to ground (`ungrounded`)."""
    out = []
    if description.image and not referenced(description.image):
        out.append("image")
    for node_id, text in description.concepts.items():
        if node_id == tree.root.id:
            continue  # the root's text is its leaves' texts, checked one by one
        if not any(node_id in {n.id for n in tree.path(ref)} for ref in referenced(text)):
            out.append(node_id)
    return out


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


_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve")


def _in_words(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else "many"


def _pick(options: tuple[str, ...], *key: str) -> str:
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


# Thresholds for naming a change in words; below them the change is called subtle.
TONE_DELTA = 4.0  # Lab units
SHARPNESS_LOW, SHARPNESS_HIGH = 0.6, 1.6
EDGE_LOW, EDGE_HIGH = 0.75, 1.33
TEXTURE_CHANGE = 6.0  # grey levels of gradient magnitude


# Words for each change the measurements show, as a person sees it in the fake image
# alone (the model being trained never sees the real one).  Each option uses the
# vocabulary the evidence rater checks directions by (`pipelines.fifa.rating.DIRECTIONS`).
TONE_WORDS = {
    "darker": ("darker", "darkened", "more shadowed"),
    "lighter": ("lighter", "brightened", "paler"),
    "redder": ("redder", "reddish", "flushed"),
    "greener": ("greenish", "greener"),
    "more yellow": ("yellowish", "more yellow"),
    "bluer": ("bluish", "bluer"),
}
DETAIL_WORDS = {
    "smoothed": ("unnaturally smooth, with fine detail lost", "blurred, its fine texture smoothed away",
                 "smoothed, with a loss of fine detail"),
    "sharpened": ("over-sharpened, with a harsh, gritty texture", "unnaturally sharpened",
                  "sharpened more than its surroundings"),
    "softer edges": ("softer at its edges", "blended in with blurred edges", "feathered, with softened edges"),
    "harder edges": ("harder-edged than it should be", "outlined by unnaturally hard edges",
                     "set off by crisper edges than its surroundings"),
    "texture": ("unevenly textured", "marked by a texture that does not match its surroundings",
                "patchy in texture"),
    "subtle": ("subtly retouched", "slightly reworked", "faintly altered"),
}
EXTENT_WORDS = {
    "most": ("across most of its area", "almost everywhere", "throughout"),
    "part": ("over part of its area", "in places", "over a portion of it"),
    "small": ("in a small patch", "in one small spot", "in a limited area"),
}


def evidence_changes(e: ConceptEvidence) -> list[str]:
    """The changes the measurements clearly show, as `TONE_WORDS` and `DETAIL_WORDS`
    keys: tone directions first, then at most one kind of detail change ("subtle" when
    nothing passes its threshold)."""
    changes = []
    for value, low, high in ((e.delta_l, "darker", "lighter"), (e.delta_a, "greener", "redder"),
                             (e.delta_b, "bluer", "more yellow")):
        if value <= -TONE_DELTA:
            changes.append(low)
        elif value >= TONE_DELTA:
            changes.append(high)
    if e.sharpness_ratio <= SHARPNESS_LOW:
        changes.append("smoothed")
    elif e.sharpness_ratio >= SHARPNESS_HIGH:
        changes.append("sharpened")
    elif e.edge_ratio <= EDGE_LOW:
        changes.append("softer edges")
    elif e.edge_ratio >= EDGE_HIGH:
        changes.append("harder edges")
    elif e.texture_change >= TEXTURE_CHANGE:
        changes.append("texture")
    if not changes:
        changes.append("subtle")
    return changes


def evidence_phrases(e: ConceptEvidence, *key: str) -> list[str]:
    """What changed, in words a viewer of the fake image could use, with no number and no
    comparison with an image the viewer does not have: the tone phrase, then the detail
    phrase, either may be absent.  `key` picks among synonyms."""
    changes = evidence_changes(e)
    tones = [_pick(TONE_WORDS[c], *key, c) for c in changes if c in TONE_WORDS]
    phrases = []
    if tones:
        phrases.append(tones[0] if len(tones) == 1 else ", ".join(tones[:-1]) + " and " + tones[-1])
        if len(tones) == len(changes):
            phrases[0] += " in colour"
    phrases += [_pick(DETAIL_WORDS[c], *key, c) for c in changes if c in DETAIL_WORDS]
    return phrases


def extent_phrase(coverage: float, *key: str) -> str:
    size = "most" if coverage >= 0.6 else "part" if coverage >= 0.25 else "small"
    return _pick(EXTENT_WORDS[size], *key, "extent")


class EvidenceDescriber(Describer):
    """Offline, deterministic sentences from the measured evidence: what is visible in
    the fake image, in words (the numbers stay in the sample's `concept_evidence`)."""

    name = "evidence"

    CONCEPT_SENTENCES = (
        "The [[{id}]] looks {changes}, {extent}.",
        "The [[{id}]] appears {changes} {extent}.",
        "Editing traces show in the [[{id}]], which is {changes} {extent}.",
        "Look at the [[{id}]]: it is {changes}, {extent}.",
        "The [[{id}]] has been retouched; it is {changes} {extent}.",
        "In the [[{id}]], the image is {changes} {extent}.",
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
        phrases = evidence_phrases(concept.evidence, key, concept.id)
        changes = phrases[0] if len(phrases) == 1 else (
            phrases[0] + (", and " if " and " in phrases[0] else " and ") + phrases[1])
        template = _pick(self.CONCEPT_SENTENCES, key, concept.id)
        return template.format(id=concept.id, changes=changes,
                               extent=extent_phrase(concept.coverage, key, concept.id))

    def aggregate(self, node_id: str, parts: list[str], key: str, pair=None) -> str:
        body = " ".join(parts)
        if node_id != self.tree.root.id:
            return body
        count = "one region" if len(parts) == 1 else f"each of {_in_words(len(parts))} regions"
        opening = _pick(self.IMAGE_OPENINGS, key, "image").format(n=count)
        return f"{opening} {body}"

    def templates(self) -> list[TemplateRef]:
        words = repr((TONE_WORDS, DETAIL_WORDS, EXTENT_WORDS))
        source = "\n".join(self.CONCEPT_SENTENCES + self.IMAGE_OPENINGS) + words
        version = hashlib.sha256(source.encode()).hexdigest()[:12]
        return [TemplateRef(id="evidence_describer@v2", version=version)]


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

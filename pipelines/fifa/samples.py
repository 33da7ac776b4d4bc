"""Stage 8: the samples of the 11 FiFa tasks from one analysed, described pair.

Plain code over arrays and records; `make_samples` is what the pipeline's "make
samples" step calls.  Every choice (which phrasing, which region, which box) is a
seeded hash of the sample id, so the same pair gives the same samples anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from fict.mentions import matcher_for
from fict.tree import ConceptTree
from pipelines.common.splits import identity_split, stable_hash
from pipelines.fifa.describe import PairDescription, grounded_leaves, referenced, render
from prompts.instructions import InstructionLibrary
from schemas.analysis import PairAnalysis
from schemas.common import RleMask, TemplateRef, Turn
from schemas.fifa import (
    CATEGORIES,
    ConceptMeasurement,
    FifaImage,
    PairInput,
    Provenance,
    TaskSample,
    TextCheck,
)
from schemas.masks import encode_mask


@dataclass(frozen=True)
class SampleConfig:
    seed: int = 0  # varies phrasings, regions and boxes; not the split
    test_fraction: float = 0.1
    max_grounded: int = 6  # concepts grounded in one answer at most
    min_negative_px: int = 400  # a negative region must be at least this large
    min_box_px: int = 40  # a concept counts inside a box with this many changed pixels
    box_margin: float = 0.15  # positive boxes grow by this fraction of their size


@dataclass
class AnalyzedPair:
    """What the analysis hands on: the record, the crops (PNG) and the two maps."""

    pair: PairInput
    analysis: PairAnalysis
    real_png: bytes
    fake_png: bytes
    labels: np.ndarray  # (h, w) uint8 atomic FICT indices
    artifact_mask: np.ndarray  # (h, w) bool

    @property
    def flagged(self) -> list[str]:
        return [c.id for c in self.analysis.concepts if c.artifact]


def split_of(pair: PairInput, test_fraction: float) -> str:
    """`test` for a stable `test_fraction` of identities (subject, else pair)."""
    return identity_split(pair.subject_id or pair.pair_id, test_fraction)


def judged_answer(task: str, negative: bool) -> bool:
    """Whether a sample's answer renders the describer's texts that the rate stage judged:
    the positive `toe` and `age` samples.  Only these carry the pair's rating; `det`,
    `cls`, `loc` (a mask) and the honest negatives answer in fixed phrasings of ours."""
    return task.endswith(("_toe", "_age")) and not negative


def sample_id(pair_id: str, task: str, variant: str) -> str:
    return hashlib.sha256(f"fifa\x1f{pair_id}\x1f{task}\x1f{variant}".encode()).hexdigest()[:20]


def image_id(pair_id: str, fake: bool) -> str:
    """`PAIR/fake` or `PAIR/real`: pair ids are unique in a run, so these are too."""
    return f"{pair_id}/{'fake' if fake else 'real'}"


class _Masks:
    """Region and artifact masks of one pair, computed and encoded on demand, once each
    (many samples of a pair share them)."""

    def __init__(self, tree: ConceptTree, item: AnalyzedPair):
        self.tree, self.item = tree, item
        self._region: dict[str, np.ndarray] = {}
        self._rle: dict[tuple[str, str | None], RleMask] = {}

    def region(self, node_id: str) -> np.ndarray:
        if node_id not in self._region:
            # A lookup table over the uint8 labels: 4 x faster than indexing with them.
            lut = np.zeros(256, np.uint8)
            member = self.tree.membership[self.tree.node_index[node_id]]
            lut[:len(member)] = member.astype(bool)
            self._region[node_id] = cv2.LUT(self.item.labels, lut).view(bool)
        return self._region[node_id]

    def artifact(self, node_id: str | None = None) -> np.ndarray:
        mask = self.item.artifact_mask
        return mask if node_id is None else mask & self.region(node_id)

    def region_rle(self, node_id: str) -> RleMask:
        key = ("region", node_id)
        if key not in self._rle:
            self._rle[key] = _rle(self.region(node_id))
        return self._rle[key]

    def artifact_rle(self, node_id: str | None = None) -> RleMask:
        key = ("artifact", node_id)
        if key not in self._rle:
            self._rle[key] = _rle(self.artifact(node_id))
        return self._rle[key]

    @cached_property
    def face(self) -> np.ndarray:
        return self.region("face")


def _box_mask(shape: tuple[int, int], box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def _bbox(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _rle(mask: np.ndarray) -> RleMask:
    return RleMask(**encode_mask(mask))


class SampleMaker:
    """Turns analysed, described pairs into samples (one maker per worker)."""

    def __init__(self, tree: ConceptTree, library: InstructionLibrary,
                 config: SampleConfig | None = None, *, facext_version: str, options_hash: str):
        self.tree = tree
        self.library = library
        self.config = config or SampleConfig()
        self.facext_version = facext_version
        self.options_hash = options_hash
        self.matcher = matcher_for(tree)

    def make(self, item: AnalyzedPair, description: PairDescription,
             check: TextCheck | None = None) -> list[FifaImage]:
        """The pair's shard rows: its fake crop with every sample about it, and its real
        crop with the real `det` sample.  `check` (the rate stage's finding) adds the
        rating to the samples whose answers are the judged texts (`judged_answer`), and
        to each answer that explains, the concepts it names without an artifact."""
        pair, cfg = item.pair, self.config
        masks = _Masks(self.tree, item)
        about: dict[bool, list[TaskSample]] = {True: [], False: []}  # is_fake -> its samples
        check = check or TextCheck()
        flagged = set(item.flagged)

        def add(task: str, variant: str, question: str, answer: str, *, fake: bool = True,
                seg: list[RleMask] = (), concepts: list[str] = (), bbox: list[int] | None = None,
                sid: str | None = None, explanation: str = "") -> None:
            """One sample; `explanation` is the describer's text the answer renders, the
            only part of an answer that can hallucinate (fixed phrasings are ours)."""
            negative = variant == "neg"
            sid = sid or sample_id(pair.pair_id, task, variant)
            if answer.count("[SEG]") != len(seg):
                raise AssertionError(f"{task}: {answer.count('[SEG]')} [SEG] but {len(seg)} masks")
            named = self.matcher.hallucinated(explanation, flagged) if explanation else []
            about[fake].append(TaskSample(
                sample_id=sid, task=task, negative=negative,
                conversations=[Turn(from_="human", value=question), Turn(from_="gpt", value=answer)],
                masks=list(seg), region_masks=[masks.region_rle(c) for c in concepts],
                concepts=list(concepts), bbox=bbox,
                rating=check.rating if judged_answer(task, negative) else None,
                hallucinated_concepts=named, instructions=self._instructions(task),
            ))

        lib, seed = self.library, cfg.seed

        def ask(task: str, sid: str, **fields) -> str:
            return lib.question(task, sid, seed, **fields)

        def say(kind: str, sid: str, **fields) -> str:
            return lib.answer(kind, sid, seed, **fields)

        # Detection: the fake and its real counterpart.
        for variant, fake in (("fake", True), ("real", False)):
            sid = sample_id(pair.pair_id, "det", variant)
            add("det", variant, ask("det", sid), say("det_fake" if fake else "det_real", sid),
                fake=fake, sid=sid)
        if pair.category in CATEGORIES:
            sid = sample_id(pair.pair_id, "cls", "fake")
            add("cls", "fake", ask("cls", sid), say("cls", sid, category=pair.category), sid=sid)

        # Image level.
        text = description.image
        grounded = referenced(text)
        for task in ("i_toe", "i_age", "i_loc"):
            sid = sample_id(pair.pair_id, task, "pos")
            if task == "i_toe":
                add(task, "pos", ask(task, sid), render(text, self.tree, grounded=False),
                    concepts=grounded, sid=sid, explanation=text)
            elif task == "i_age":
                add(task, "pos", ask(task, sid), render(text, self.tree, grounded=True),
                    seg=[masks.artifact_rle(c) for c in grounded], concepts=grounded, sid=sid,
                    explanation=text)
            else:
                add(task, "pos", ask(task, sid), say("loc", sid), seg=[masks.artifact_rle()], sid=sid)

        # Region level: a flagged concept, and an untouched one as the honest negative.
        positive = self._pick([c for c in item.flagged if c != self.tree.root.id], pair.pair_id, "r+")
        negative = self._pick(self._clean_regions(item), pair.pair_id, "r-")
        for task in ("r_toe", "r_age", "r_loc"):
            if positive is not None:
                sid = sample_id(pair.pair_id, task, "pos")
                name = self.tree[positive].name
                text = description.concepts[positive]
                refs = referenced(text)
                question = ask(task, sid, region=name)
                if task == "r_toe":
                    add(task, "pos", question, render(text, self.tree, False), concepts=refs, sid=sid,
                        explanation=text)
                elif task == "r_age":
                    add(task, "pos", question, render(text, self.tree, True),
                        seg=[masks.artifact_rle(c) for c in refs], concepts=refs, sid=sid,
                        explanation=text)
                else:
                    add(task, "pos", question, say("loc", sid), seg=[masks.artifact_rle(positive)],
                        concepts=[positive], sid=sid)
            if negative is not None:
                sid = sample_id(pair.pair_id, task, "neg")
                name = self.tree[negative].name
                add(task, "neg", ask(task, sid, region=name),
                    say("region_negative", sid, region=name), concepts=[negative], sid=sid)

        # Box level: a box around one concept's change, and a box with no change at all.
        leaves = grounded_leaves(self.tree, item.analysis, self.tree.root.id, cfg.max_grounded)
        anchor = self._pick(leaves, pair.pair_id, "b+")
        if anchor is not None:
            box = self._grow(_bbox(masks.artifact(anchor)), item.artifact_mask.shape)
            inside = _box_mask(item.artifact_mask.shape, box)
            in_box = [c for c in leaves if (masks.artifact(c) & inside).sum() >= cfg.min_box_px]
            if anchor not in in_box:
                in_box = sorted({*in_box, anchor}, key=self.tree.node_index.__getitem__)
            text = " ".join(description.concepts[c] for c in in_box)
            for task in ("b_toe", "b_age", "b_loc"):
                sid = sample_id(pair.pair_id, task, "pos")
                if task == "b_toe":
                    add(task, "pos", ask(task, sid), render(text, self.tree, False),
                        concepts=in_box, bbox=box, sid=sid, explanation=text)
                elif task == "b_age":
                    refs = referenced(text)  # a model's prose may not name every concept it covers
                    add(task, "pos", ask(task, sid), render(text, self.tree, True),
                        seg=[_rle(masks.artifact(c) & inside) for c in refs], concepts=refs,
                        bbox=box, sid=sid, explanation=text)
                else:
                    add(task, "pos", ask(task, sid), say("loc", sid),
                        seg=[_rle(item.artifact_mask & inside)], bbox=box, sid=sid)
            clean = self._clean_box(masks, box, pair.pair_id)
            if clean is not None:
                for task in ("b_toe", "b_age", "b_loc"):
                    sid = sample_id(pair.pair_id, task, "neg")
                    add(task, "neg", ask(task, sid), say("box_negative", sid), bbox=clean, sid=sid)
        provenance = self._provenance(pair, description, check)
        split = split_of(pair, cfg.test_fraction)
        return [FifaImage(
            image_id=image_id(pair.pair_id, fake), pair_id=pair.pair_id, split=split,
            image=item.fake_png if fake else item.real_png, is_fake=fake,
            category=pair.category, method=pair.method, subject_id=pair.subject_id,
            source_dataset=pair.source_dataset, crop_transform=item.analysis.crop_transform,
            landmarks=item.analysis.landmarks,
            provenance=provenance, concept_evidence=self._measurements(item) if fake else [],
            samples=about[fake],
        ) for fake in (True, False) if about[fake]]

    @staticmethod
    def _measurements(item: AnalyzedPair) -> list[ConceptMeasurement]:
        return [ConceptMeasurement(concept=c.id, coverage=c.coverage, artifact_px=c.artifact_px,
                                   evidence=c.evidence)
                for c in item.analysis.concepts if c.artifact and c.evidence is not None]

    # --- choices -------------------------------------------------------------------------

    def _pick(self, options: list[str], *key: str) -> str | None:
        if not options:
            return None
        return options[stable_hash(self.config.seed, *key) % len(options)]

    def _clean_regions(self, item: AnalyzedPair) -> list[str]:
        """Nodes with no changed pixel and enough area to ask about."""
        return [c.id for c in item.analysis.concepts
                if c.artifact_px == 0 and c.region_px >= self.config.min_negative_px
                and c.id != self.tree.root.id]

    def _grow(self, box: list[int], shape: tuple[int, int]) -> list[int]:
        x0, y0, x1, y1 = box
        mx = round((x1 - x0) * self.config.box_margin) + 4
        my = round((y1 - y0) * self.config.box_margin) + 4
        h, w = shape
        return [max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, w), min(y1 + my, h)]

    def _clean_box(self, masks: _Masks, box: list[int], pair_id: str) -> list[int] | None:
        """A box of the same size that holds no changed pixel and is mostly face; the
        first of a seeded order of grid positions, or None when there is none."""
        h, w = masks.item.artifact_mask.shape
        bw, bh = box[2] - box[0], box[3] - box[1]
        if bw >= w or bh >= h:
            return None
        # Summed-area tables: any box's pixel count in four lookups.
        art = cv2.integral(masks.item.artifact_mask.astype(np.uint8))
        face = cv2.integral(masks.face.astype(np.uint8))

        def area(table: np.ndarray, x: int, y: int) -> int:
            return int(table[y + bh, x + bw] - table[y, x + bw] - table[y + bh, x] + table[y, x])

        step = max(8, min(bw, bh) // 4)
        positions = [(x, y) for y in range(0, h - bh + 1, step) for x in range(0, w - bw + 1, step)]
        order = np.random.default_rng(stable_hash(self.config.seed, pair_id, "b-")).permutation(len(positions))
        for x, y in (positions[i] for i in order):
            if area(art, x, y) == 0 and area(face, x, y) >= 0.5 * bw * bh:
                return [x, y, x + bw, y + bh]
        return None

    def _instructions(self, task: str) -> TemplateRef:
        return TemplateRef(id=self.library.template_id(task), version=self.library.content_hash)

    def _provenance(self, pair: PairInput, description: PairDescription, check: TextCheck) -> Provenance:
        """What the pair's samples share: where the row came from, who wrote and judged
        its texts with which templates (each sample adds its own `instructions`)."""
        return Provenance(
            manifest=pair.manifest, row=pair.row, source_dataset=pair.source_dataset,
            describer=description.describer, model=description.model,
            rater=check.rater, rater_model=check.rater_model,
            prompt_templates=[*description.templates, *check.templates],
            facext_version=self.facext_version, options_hash=self.options_hash,
        )

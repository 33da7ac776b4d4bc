"""Rating a pair's texts on the papers' four criteria (1-10).

A rater reads the per-concept explanations and the image-level one of an analysed pair
and returns a `schemas.llm.Rating`.  The offline `evidence` rater scores the texts
against what the analysis measured, with no model; LLM raters plug in behind the same
interface (`make_rater`, like `make_describer`).  Texts may refer to concepts by
`[[node_id]]` reference or by plain name or alias; both are found by `ConceptMatcher`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from fict.mentions import matcher_for
from fict.tree import ConceptTree
from pipelines.common.rating import Rater
from pipelines.fifa.describe import (
    EDGE_HIGH,
    EDGE_LOW,
    SHARPNESS_HIGH,
    SHARPNESS_LOW,
    TONE_DELTA,
    grounded_leaves,
    make_offline,
)
from schemas.analysis import ConceptEvidence, PairAnalysis
from schemas.common import TemplateRef
from schemas.llm import Rating


@dataclass(frozen=True)
class Direction:
    """Words that claim a measurement moved one way between the real and the fake image.

    `measure` is a `ConceptEvidence` field; `sign` +1 says the fake is higher there (a
    positive Lab shift, a ratio above 1), -1 lower.  `words` are matched case-insensitively
    on word boundaries, a space also matching a hyphen ("harder edges", "harder-edged" are
    listed apart because their endings differ).
    """

    claim: str
    measure: str
    sign: int
    words: tuple[str, ...]


# The direction vocabulary.  The longest phrase wins where phrases overlap ("sharper
# edges" is an edge claim, "sharper" alone a sharpness claim).  Bare "softer"/"softened"
# are edge claims, as in the evidence describer's "softer at its edges"; "smoothed",
# "blurred" and lost detail are sharpness claims.  Bare "harder" is no claim ("harder to
# see"), nor are words with no direction ("changed in texture", "altered").
DIRECTIONS: tuple[Direction, ...] = (
    Direction("darker", "delta_l", -1, (
        "darker", "darkened", "darkening", "dimmer", "less bright", "more shadowed")),
    Direction("lighter", "delta_l", +1, (
        "lighter", "lightened", "brighter", "brightened", "brightening", "paler")),
    Direction("redder", "delta_a", +1, (
        "redder", "reddened", "reddish", "more red", "pinker", "pinkish", "more pink", "flushed")),
    Direction("greener", "delta_a", -1, ("greener", "greenish", "more green", "less red")),
    Direction("more yellow", "delta_b", +1, ("more yellow", "yellower", "yellowish", "more yellowish")),
    Direction("bluer", "delta_b", -1, ("bluer", "bluish", "more blue", "less yellow")),
    Direction("smoothed", "sharpness_ratio", -1, (
        "smoothed", "smoother", "smoothing", "blurred", "blurry", "blurrier", "blurring",
        "lost detail", "detail lost", "fine detail lost", "loss of detail", "loss of fine detail",
        "less detail", "less detailed", "less sharp", "loss of sharpness", "reduced sharpness")),
    Direction("sharpened", "sharpness_ratio", +1, (
        "sharpened", "over sharpened", "oversharpened", "sharper", "crisper", "more detail",
        "more detailed")),
    Direction("softer edges", "edge_ratio", -1, (
        "softer", "softened", "softer at its edges", "softer at the edges", "softer edges",
        "soft edges", "softened edges", "blurred edges", "blurry edges", "weaker edges",
        "feathered edges")),
    Direction("harder edges", "edge_ratio", +1, (
        "harder edged", "hard edged", "harder edges", "hard edges", "sharper edges",
        "crisper edges", "stronger edges", "harsher edges")),
)

# Per measure, (low, high): the measurement clearly went down at or below `low`, clearly
# up at or above `high`; the thresholds `evidence_phrases` names changes by.  A claim is
# contradicted only when the measurement clearly went the other way (lenient: a claim
# about a change too small to name is not held against the text).
CLEAR_CHANGE: dict[str, tuple[float, float]] = {
    "delta_l": (-TONE_DELTA, TONE_DELTA),
    "delta_a": (-TONE_DELTA, TONE_DELTA),
    "delta_b": (-TONE_DELTA, TONE_DELTA),
    "sharpness_ratio": (SHARPNESS_LOW, SHARPNESS_HIGH),
    "edge_ratio": (EDGE_LOW, EDGE_HIGH),
}

# A claim within three words after one of these (and no "but" between) is not a claim.
NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "neither", "hardly", "barely"})
_CLAUSE_BREAKS = frozenset({"but", "yet", "instead", "rather", "while", "whereas"})

_BY_WORDS = {" ".join(w.split()): d for d in DIRECTIONS for w in d.words}


def _direction_regex() -> re.Pattern:
    """All phrases, longest first, grouped by first letter (twice as fast as a flat
    alternation); run over lower-cased text (IGNORECASE is three times slower)."""
    by_letter: dict[str, list[str]] = {}
    for words in sorted(_BY_WORDS, key=len, reverse=True):
        tail = r"[\s\-]+".join(map(re.escape, words.split()))[1:]
        by_letter.setdefault(words[0], []).append(tail)
    groups = (re.escape(c) + "(?:" + "|".join(tails) + ")" for c, tails in by_letter.items())
    return re.compile(r"(?<!\w)(?:" + "|".join(groups) + r")(?!\w)")


_DIRECTION_WORDS = _direction_regex()
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[\w'’]+")


def contradicts(direction: Direction, evidence: ConceptEvidence) -> bool:
    """The measurement clearly went the other way from the claim."""
    low, high = CLEAR_CHANGE[direction.measure]
    value = getattr(evidence, direction.measure)
    return value <= low if direction.sign > 0 else value >= high


def direction_claims(sentence: str) -> list[Direction]:
    """The directions a sentence claims, in order, leaving out negated ones."""
    claims = []
    sentence = sentence.lower()
    for match in _DIRECTION_WORDS.finditer(sentence):
        before = _WORD.findall(sentence[:match.start()])[-3:]
        negated = False
        for word in reversed(before):
            if word in _CLAUSE_BREAKS:
                break
            if word in NEGATIONS or word.endswith(("n't", "n’t")):
                negated = True
                break
        if not negated:
            words = " ".join(re.split(r"[\s\-]+", match.group(0)))
            claims.append(_BY_WORDS[words])
    return claims


def score(fraction: float) -> int:
    """1 + 9·fraction, rounded half up."""
    return min(10, max(1, math.floor(1 + 9 * fraction + 0.5)))


class EvidenceRater(Rater):
    """Offline, deterministic: the texts against the measured evidence, no model.

    * label_accuracy: precision, the share of the concepts mentioned anywhere in the texts
      that the analysis flagged (1 when nothing is mentioned: such texts do not say where
      the fake was altered);
    * image_consistency: recall, the share of the grounded leaves (flagged concepts with
      no flagged child, the `max_grounded` largest) that the image text mentions (10 when
      nothing is flagged);
    * evidence_consistency: the share of direction claims (see DIRECTIONS) that the
      measured evidence does not clearly contradict (10 when there are no claims).  A claim
      is about every concept its sentence mentions; in a concept's own text, a sentence
      that mentions no concept is about that concept.  Concepts with no evidence (not
      flagged) cannot be checked and are left to label_accuracy.  Claims are counted once
      per (concept, direction) over all texts;
    * overall: the mean of the three, rounded half up.
    """

    name = "evidence"

    def __init__(self, tree: ConceptTree, max_grounded: int = 6):
        super().__init__(tree, max_grounded)
        self.matcher = matcher_for(tree)

    def rate(self, analysis: PairAnalysis, texts: dict[str, str], image_text: str, key: str,
             pair=None) -> Rating:
        by_id = {c.id: c for c in analysis.concepts}
        flagged = {c.id for c in analysis.concepts if c.artifact}

        # Claims first, sentence by sentence, collecting the mentions on the way.
        mentioned: dict[str, None] = {}
        claims: dict[tuple[str, str], bool] = {}  # (node id, claim) -> contradicted
        # Parent and image texts repeat their leaves' sentences: read each sentence once.
        read: dict[str, tuple[list[str], list[Direction]]] = {}
        for subject, text in [*texts.items(), (None, image_text)]:
            for sentence in _SENTENCE_END.split(text):
                if sentence not in read:
                    read[sentence] = self.matcher.mentioned(sentence), direction_claims(sentence)
                ids, directions = read[sentence]
                mentioned.update(dict.fromkeys(ids))
                about = ids or ([subject] if subject is not None else [])
                for direction in directions:
                    for node_id in about:
                        concept = by_id.get(node_id)
                        if concept is None or concept.evidence is None:
                            continue
                        claims[node_id, direction.claim] = contradicts(direction, concept.evidence)

        unflagged = [n for n in mentioned if n not in flagged]
        n_mentioned = len(mentioned)
        precision = (n_mentioned - len(unflagged)) / n_mentioned if n_mentioned else 0.0

        root = self.tree.root.id
        leaves = grounded_leaves(self.tree, analysis, root, self.max_grounded) if root in by_id else []
        in_image = set(self.matcher.mentioned(image_text))
        hits = sum(leaf in in_image for leaf in leaves)
        recall = hits / len(leaves) if leaves else 1.0

        contradicted = [claim for claim, bad in claims.items() if bad]
        consistency = 1 - len(contradicted) / len(claims) if claims else 1.0

        scores = [score(precision), score(recall), score(consistency)]
        reason = (f"{n_mentioned - len(unflagged)}/{n_mentioned} mentioned concepts flagged; "
                  f"{hits}/{len(leaves)} grounded leaves mentioned; "
                  f"{len(contradicted)} of {len(claims)} evidence claims contradicted")
        if unflagged:
            reason += "; unflagged: " + ", ".join(unflagged[:3]) + (" ..." if len(unflagged) > 3 else "")
        if contradicted:
            reason += "; contradicted: " + ", ".join(f"{n} {c}" for n, c in contradicted[:3])
            reason += " ..." if len(contradicted) > 3 else ""
        return Rating(label_accuracy=scores[0], image_consistency=scores[1],
                      evidence_consistency=scores[2],
                      overall=min(10, max(1, math.floor(sum(scores) / 3 + 0.5))), reason=reason + ".")

    def templates(self) -> list[TemplateRef]:
        """The rules' version: a hash of the vocabulary and the thresholds."""
        source = repr((DIRECTIONS, sorted(CLEAR_CHANGE.items()), sorted(NEGATIONS), sorted(_CLAUSE_BREAKS)))
        return [TemplateRef(id="evidence_rater@v1", version=hashlib.sha256(source.encode()).hexdigest()[:12])]


RATERS = {"evidence": EvidenceRater}


def make_rater(name: str, tree: ConceptTree, **options) -> Rater:
    return make_offline(RATERS, "rater", name, tree, **options)

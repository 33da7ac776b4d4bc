"""Rating texts on the papers' four criteria (1-10): the rater interface and the
`--min_rating` gate every pipeline applies.

A rater reads a unit's texts (FiFa: the per-concept and image explanations of a pair) and
returns a `schemas.llm.Rating`; the pipelines' offline raters and the LLM raters plug in
behind the same interface.  Units whose `overall` is below the bar are rejected
(`low_rating`) with their scores, and every rating is counted for the report's histograms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fict.tree import ConceptTree
from pipelines.common.beam_tags import event
from schemas.common import TemplateRef
from schemas.llm import Rating


class Rater(ABC):
    """Rates the texts of one analysed unit (FiFa: a pair)."""

    name: str
    model: str | None = None

    def __init__(self, tree: ConceptTree, max_grounded: int = 6):
        self.tree = tree
        self.max_grounded = max_grounded

    @abstractmethod
    def rate(self, analysis, texts: dict[str, str], image_text: str, key: str, pair=None) -> Rating:
        """`analysis`: what was measured (FiFa: `schemas.analysis.PairAnalysis`); `texts`:
        node id -> that concept's explanation; `image_text`: the image's one.
        `key` identifies the pair (for caching and reproducible sampling by model raters);
        `pair` is the analysed pair (`pipelines.fifa.samples.AnalyzedPair`, crops included) for
        raters that look at the images."""

    def templates(self) -> list[TemplateRef]:
        return []


def below_bar(rating: Rating, min_rating: float) -> str | None:
    """The detail of a `low_rating` reject when `overall` is below `min_rating`; None when it passes."""
    if rating.overall < min_rating:
        return f"overall {rating.overall} < --min_rating {min_rating:g}: {rating.reason}"
    return None


def rating_events(rating: Rating) -> list:
    """The report's counts of one rating: one event per criterion and score."""
    criteria = [name for name in type(rating).model_fields if name != "reason"]  # FiFa's or FaceInstruct's four
    return [event(("rating", criterion, str(getattr(rating, criterion)))) for criterion in criteria]

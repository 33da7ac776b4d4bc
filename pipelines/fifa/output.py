"""The output folder of a FiFa-Instruct run (`pipelines.common.run_output`): FiFa's
records, and its report sections (the concept tree's version, hallucination rates,
concept counts)."""

from __future__ import annotations

from typing import Any

from pipelines.common.run_output import RunOutput
from pipelines.common.run_report import build_report
from pipelines.fifa.stages import COVERAGE_BINS
from schemas.fifa import SPLITS, TASKS, FifaImage, RejectedRow

# Shard rows a written pair gives: its fake crop and its real crop (each with its
# samples).  Only sizes the shard buckets; the counts are measured.
ROWS_PER_PAIR = 2
# Rejected rows share a pair id when a manifest repeats one; these fields tell them apart.
REJECTED_ORDER = ("pair_id", "manifest", "row", "stage", "reason", "detail")


class FifaOutput(RunOutput):
    pipeline = "fifa_annotate"
    sample_type = FifaImage
    rejected_type = RejectedRow
    splits = SPLITS
    rejected_order = REJECTED_ORDER
    rows_per_input = ROWS_PER_PAIR
    sort_fields = ("image_id",)

    def build_report(self, events: dict[tuple, float], shards: dict, wall_s: float,
                     batch: dict | None) -> dict[str, Any]:
        return build_report(self.settings, events, shards, wall_s, batch, pipeline=self.pipeline,
                            tasks=TASKS, splits=SPLITS, head={"fict_version": _tree_version()},
                            sections={"hallucination": hallucination_report(events),
                                      "categories": categories_report(events),
                                      "concepts": concepts_report(events)})

    def summary_notes(self) -> list[str]:
        categories = (self.report or {}).get("categories") or {}
        unknown, none = categories.get("unknown") or {}, categories.get("no_category", 0)
        notes = []
        if unknown:
            seen = ", ".join(f"{value!r} {pairs}" for value, pairs in unknown.items())
            notes.append(f"{sum(unknown.values())} pairs have a category facext does not know ({seen}): no cls "
                         f"sample for them; the names it reads are in the README (categories)")
        if none:
            notes.append(f"{none} pairs name no category and no known method: no cls sample for them")
        synthesis = categories.get("entire_synthesis_rejected", 0)
        if synthesis:
            notes.append(f"{synthesis} entire-synthesis pairs rejected as global_change: a wholly generated image "
                         "has no local artifact for the difference method to find")
        return notes


def _tree_version() -> int:
    from fict.tree import load_tree

    return load_tree().version


def categories_report(events: dict[tuple, float]) -> dict[str, Any]:
    """Written pairs per FiFa category, the category values facext did not know (with
    their pairs: those got no `cls` sample), the pairs that named none, and the
    entire-synthesis pairs refused as global changes."""
    from schemas.fifa import CATEGORIES

    by = {c: int(events.get(("category", c), 0)) for c in CATEGORIES}
    unknown = {k[1]: int(v) for k, v in sorted(events.items()) if k[0] == "unknown_category"}
    return {"by_category": by, "unknown": unknown, "no_category": int(events.get(("no_category",), 0)),
            # refused as `global_change` (no local artifact), counted apart from the written pairs
            "entire_synthesis_rejected": int(events.get(("entire_synthesis_rejected",), 0))}


def concepts_report(events: dict[tuple, float]) -> dict[str, Any]:
    """Over the written pairs: pairs per flagged FICT node (every node, 0 when never
    flagged), and histograms in tenths of the coverage of flagged atomic concepts and of
    the changed fraction of the face."""
    from fict.tree import load_tree

    flagged = {node.id: 0 for node in load_tree().nodes}
    bins = {"coverage": {}, "changed_face": {}}
    for key, value in events.items():
        if key[0] == "flagged":
            flagged[key[1]] = flagged.get(key[1], 0) + int(value)
        elif key[0] in bins:
            bins[key[0]][key[1]] = int(value)
    edges = [f"{b / COVERAGE_BINS:.1f}-{(b + 1) / COVERAGE_BINS:.1f}" for b in range(COVERAGE_BINS)]
    return {
        "flagged_pairs": flagged,
        "coverage_histogram": {e: bins["coverage"].get(str(b), 0) for b, e in enumerate(edges)},
        "changed_face_histogram": {e: bins["changed_face"].get(str(b), 0) for b, e in enumerate(edges)},
    }


def hallucination_report(events: dict[tuple, float]) -> dict[str, Any]:
    """How often texts name concepts that have no artifact, and how many name none of
    the concepts they explain (over every checked text)."""
    counts = {k[1]: int(v) for k, v in events.items() if k[0] == "hallucination"}
    texts, mentions = counts.get("texts", 0), counts.get("mentions", 0)
    return {
        "texts": texts, "texts_hallucinating": counts.get("texts_hallucinating", 0),
        "rate": round(counts.get("texts_hallucinating", 0) / texts, 6) if texts else 0.0,
        "mentions": mentions, "hallucinated_mentions": counts.get("hallucinated_mentions", 0),
        "mention_rate": round(counts.get("hallucinated_mentions", 0) / mentions, 6) if mentions else 0.0,
        # Texts that name none of the concepts they explain (rejected as `ungrounded`).
        "texts_ungrounded": counts.get("texts_ungrounded", 0),
    }

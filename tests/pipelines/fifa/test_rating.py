"""The offline evidence rater: texts scored against the measured evidence."""

from __future__ import annotations

import pytest

from fict.mentions import matcher_for
from pipelines.fifa.describe import EvidenceDescriber, grounded_leaves, render
from pipelines.fifa.rating import (
    CLEAR_CHANGE,
    DIRECTIONS,
    EvidenceRater,
    contradicts,
    direction_claims,
    make_rater,
    score,
)
from schemas.analysis import ConceptCoverage, ConceptEvidence, PairAnalysis


@pytest.fixture(scope="module")
def described(sample_analyses, tree):
    """Real analysed sample pairs with the evidence describer's texts."""
    describer = EvidenceDescriber(tree)
    out = [(pair_id, analysis, describer.describe(analysis, key=pair_id)) for pair_id, analysis in sample_analyses]
    assert len(out) >= 6
    return out


@pytest.fixture(scope="module")
def rater(tree):
    return EvidenceRater(tree)


def _flagged(analysis: PairAnalysis) -> set[str]:
    return {c.id for c in analysis.concepts if c.artifact}


def _evidence(**changes) -> ConceptEvidence:
    base = {"area_px": 500, "area_fraction": 0.002, "bbox": (0, 0, 10, 10), "delta_l": 0.0, "delta_a": 0.0,
            "delta_b": 0.0, "mean_abs_rgb_diff": 9.0, "sharpness_ratio": 1.0, "edge_ratio": 1.0,
            "texture_change": 1.0}
    return ConceptEvidence(**{**base, **changes})


def _analysis(tree, leaves: dict[str, ConceptEvidence]) -> PairAnalysis:
    """A synthetic analysis: the given nodes and their ancestors flagged."""
    flagged: dict[str, ConceptEvidence] = {}
    for leaf, evidence in leaves.items():
        for node in tree.path(leaf):
            flagged.setdefault(node.id, _evidence())
        flagged[leaf] = evidence
    concepts = [ConceptCoverage(id=n.id, name=n.name, atomic=n.atomic, coverage=0.5 if n.id in flagged else 0.0,
                                share=0.1, artifact=n.id in flagged, region_px=1000,
                                artifact_px=500 if n.id in flagged else 0, evidence=flagged.get(n.id))
                for n in tree.nodes]
    return PairAnalysis(status="ok", concepts=concepts)


def test_describer_texts_name_no_unflagged_concept(described, tree):
    matcher = matcher_for(tree)
    for pair_id, analysis, description in described:
        flagged = _flagged(analysis)
        for text in [description.image, *description.concepts.values()]:
            for version in (text, render(text, tree, grounded=False), render(text, tree, grounded=True)):
                assert matcher.hallucinated(version, flagged) == [], (pair_id, version)
            # The describer names concepts only by reference, so grounding its rendered
            # prose gives back exactly its text.
            assert matcher.to_references(render(text, tree, grounded=False), flagged) == text


def test_describer_texts_get_top_marks(described, tree, rater):
    for pair_id, analysis, description in described:
        rating = rater.rate(analysis, description.concepts, description.image, key=pair_id)
        assert rating.label_accuracy == 10 and rating.evidence_consistency == 10, (pair_id, rating)
        assert rating.image_consistency == 10 and rating.overall >= 9, (pair_id, rating)
        assert " 0 of " in rating.reason and "contradicted" in rating.reason
        # Plain names rate like references.
        rendered = {k: render(v, tree, grounded=False) for k, v in description.concepts.items()}
        assert rater.rate(analysis, rendered, render(description.image, tree, grounded=False),
                          key=pair_id) == rating


def test_each_unflagged_concept_lowers_label_accuracy_as_expected(described, tree, rater):
    matcher = matcher_for(tree)
    pair_id, analysis, description = min(described, key=lambda d: len(d[2].concepts))
    flagged = _flagged(analysis)
    texts = [description.image, *description.concepts.values()]
    mentioned = {n for text in texts for n in matcher.mentioned(text)}
    unflagged = [n.name for n in tree.nodes if n.id not in flagged and n.atomic][:3]
    for k in (1, 2, 3):
        image = description.image + " " + " ".join(f"The {name} was edited." for name in unflagged[:k])
        rating = rater.rate(analysis, description.concepts, image, key=pair_id)
        expected = score(len(mentioned) / (len(mentioned) + k))
        assert rating.label_accuracy == expected < 10
        assert f"{len(mentioned)}/{len(mentioned) + k} mentioned concepts flagged" in rating.reason
        assert rating.evidence_consistency == 10 and rating.image_consistency == 10


def test_a_claim_against_the_evidence_lowers_evidence_consistency(tree, rater):
    analysis = _analysis(tree, {"left_eyebrow": _evidence(delta_l=15.0), "upper_lip": _evidence(delta_a=9.0)})
    texts = {"left_eyebrow": "The [[left_eyebrow]] is lighter than in the real image.",
             "upper_lip": "The [[upper_lip]] is redder."}
    image = "The [[left_eyebrow]] and the [[upper_lip]] were edited."
    assert rater.rate(analysis, texts, image, "k").evidence_consistency == 10
    darker = {**texts, "left_eyebrow": "The left eyebrow is darker than in the real image."}
    rating = rater.rate(analysis, darker, image, "k")
    assert rating.evidence_consistency == score(1 / 2) < 10  # 1 of 2 claims contradicted
    assert "1 of 2 evidence claims contradicted" in rating.reason and "left_eyebrow darker" in rating.reason
    assert rating.label_accuracy == rating.image_consistency == 10
    # Negated, it is no claim; in the concept's own text a sentence without a name is about it.
    negated = {**texts, "left_eyebrow": "The left eyebrow is not darker."}
    assert rater.rate(analysis, negated, image, "k").reason.endswith("0 of 1 evidence claims contradicted.")
    pronoun = {**texts, "left_eyebrow": "It is darker and blurred."}
    assert "1 of 3 evidence claims contradicted" in rater.rate(analysis, pronoun, image, "k").reason


def test_image_text_naming_no_flagged_leaf_gets_image_consistency_1(tree, rater):
    analysis = _analysis(tree, {"left_eyebrow": _evidence(delta_l=-9.0), "upper_lip": _evidence()})
    texts = {"left_eyebrow": "The [[left_eyebrow]] is darker.", "upper_lip": "The [[upper_lip]] changed."}
    assert grounded_leaves(tree, analysis, tree.root.id, 6) == ["left_eyebrow", "upper_lip"]
    for image in ("This image was manipulated.", "The face and the eyebrows were edited."):
        assert rater.rate(analysis, texts, image, "k").image_consistency == 1
    half = rater.rate(analysis, texts, "The left eyebrow was edited.", "k")
    assert half.image_consistency == score(1 / 2) and "1/2 grounded leaves mentioned" in half.reason


def test_overall_is_the_rounded_mean(tree, rater):
    analysis = _analysis(tree, {"left_eyebrow": _evidence(delta_l=9.0)})
    rating = rater.rate(analysis, {"left_eyebrow": "The left eyebrow is darker."}, "The hair changed.", "k")
    # precision 1/2 -> 6; recall 0 -> 1; 1 of 1 claim contradicted -> 1
    assert (rating.label_accuracy, rating.image_consistency, rating.evidence_consistency) == (6, 1, 1)
    assert rating.overall == 3  # (6 + 1 + 1) / 3 = 2.67
    assert rater.rate(analysis, {}, "", "k").label_accuracy == 1  # names nothing: says nowhere


@pytest.mark.parametrize("direction", DIRECTIONS, ids=lambda d: d.claim)
def test_direction_vocabulary_follows_the_thresholds(direction):
    for word in direction.words:
        assert direction_claims(f"The region looks {word.replace(' ', '-')} now.") == [direction], word
        assert direction_claims(f"The region looks {word.upper()}.") == [direction], word
        assert direction_claims(f"It is not {word}.") == []
    low, high = CLEAR_CHANGE[direction.measure]
    same, other = (high, low) if direction.sign > 0 else (low, high)
    assert not contradicts(direction, _evidence(**{direction.measure: same}))
    assert contradicts(direction, _evidence(**{direction.measure: other}))
    neutral = (low + high) / 2
    assert not contradicts(direction, _evidence(**{direction.measure: neutral}))  # lenient


def test_claim_parsing_prefers_longer_phrases():
    claims = [d.claim for d in direction_claims("Sharper edges, over-sharpened and softer at its edges, "
                                                "but not blurred, yet lighter.")]
    assert claims == ["harder edges", "sharpened", "softer edges", "lighter"]


def test_make_rater(tree):
    rater = make_rater("evidence", tree, max_grounded=3)
    assert isinstance(rater, EvidenceRater) and rater.max_grounded == 3 and rater.name == "evidence"
    assert rater.model is None and rater.templates()[0].id == "evidence_rater@v1"
    with pytest.raises(ValueError, match="unknown rater"):
        make_rater("nope", tree)

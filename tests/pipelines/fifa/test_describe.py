"""The offline evidence describer: grounded in what was measured, and nothing else."""

from __future__ import annotations

import re

import pytest

from pipelines.fifa.describe import (
    EvidenceDescriber,
    evidence_phrases,
    grounded_leaves,
    referenced,
    render,
)
from pipelines.fifa.rating import direction_claims
from schemas.analysis import ConceptEvidence


@pytest.fixture(scope="module")
def analyses(sample_analyses):
    return sample_analyses


def _name_pattern(tree) -> re.Pattern:
    words = {n.name for n in tree.nodes} | {a for n in tree.nodes for a in n.aliases}
    alternatives = sorted((re.escape(w) for w in words), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(alternatives) + r")\b", re.IGNORECASE)


def test_texts_refer_only_to_flagged_concepts_and_name_nothing_else(analyses, tree):
    names = _name_pattern(tree)
    describer = EvidenceDescriber(tree)
    for pair_id, analysis in analyses:
        flagged = {c.id for c in analysis.concepts if c.artifact}
        description = describer.describe(analysis, key=pair_id)
        assert set(description.concepts) == flagged  # every flagged node has a text
        for text in [description.image, *description.concepts.values()]:
            assert set(referenced(text)) <= flagged
            # Outside its references a text names no concept of the tree at all.
            bare = re.sub(r"\[\[[A-Za-z0-9_]+\]\]", "X", text)
            assert names.search(bare) is None, (pair_id, names.search(bare).group(0), text)
        assert referenced(description.image), pair_id  # the image text grounds something


def test_parent_texts_ground_their_own_descendants(analyses, tree):
    describer = EvidenceDescriber(tree, max_grounded=4)
    for pair_id, analysis in analyses:
        description = describer.describe(analysis, key=pair_id)
        for node_id, text in description.concepts.items():
            refs = referenced(text)
            assert refs == grounded_leaves(tree, analysis, node_id, 4) or tree[node_id].atomic
            for ref in refs:
                assert node_id in {n.id for n in tree.path(ref)}


def test_rendering_grounds_each_reference_once(tree):
    text = "The [[left_eyebrow]] is dark. The [[upper_lip]] and again the [[left_eyebrow]]."
    assert render(text, tree, grounded=False) == "The left eyebrow is dark. The upper lip and again the left eyebrow."
    grounded = render(text, tree, grounded=True)
    assert grounded.count("[SEG]") == 2 and grounded.startswith("The <p> left eyebrow </p> [SEG] is dark.")
    assert referenced(text) == ["left_eyebrow", "upper_lip"]


def _evidence(**changes) -> ConceptEvidence:
    base = dict(area_px=500, area_fraction=0.002, bbox=(0, 0, 10, 10), delta_l=0.0, delta_a=0.0,
                delta_b=0.0, mean_abs_rgb_diff=9.0, sharpness_ratio=1.0, edge_ratio=1.0,
                texture_change=1.0)
    return ConceptEvidence(**{**base, **changes})


@pytest.mark.parametrize("changes, claims", [
    ({"delta_l": -12.0}, {"darker"}),
    ({"delta_l": 9.0, "delta_a": 6.0}, {"lighter", "redder"}),
    ({"delta_b": -7.0}, {"bluer"}),
    ({"delta_b": 7.0, "sharpness_ratio": 0.3}, {"more yellow", "smoothed"}),
    ({"sharpness_ratio": 2.5}, {"sharpened"}),
    ({"edge_ratio": 0.5}, {"softer edges"}),
    ({"edge_ratio": 1.8}, {"harder edges"}),
    ({"texture_change": 9.0}, set()),
    ({}, set()),
])
def test_evidence_words_claim_what_was_measured_and_nothing_else(changes, claims):
    """Every phrasing of a measurement claims its direction (as the rater reads claims),
    and no other; none carries a number."""
    evidence = _evidence(**changes)
    for key in range(24):
        text = " ".join(evidence_phrases(evidence, f"pair-{key}", "nose"))
        assert {d.claim for d in direction_claims(text)} == claims, text
        assert not re.search(r"\d", text), text


def test_answers_describe_the_fake_alone(analyses, tree):
    """The model being trained sees only the fake: no answer compares with an image it
    cannot see or carries raw measurements, and every text still grounds its concept."""
    describer = EvidenceDescriber(tree)
    unseen = re.compile(r"\b(real|original|authentic|genuine|source)\b|Δ|grey levels|×|\d", re.IGNORECASE)
    openings = set()
    for pair_id, analysis in analyses:
        description = describer.describe(analysis, key=pair_id)
        for text in description.concepts.values():
            assert unseen.search(text) is None, text
            assert referenced(text), text
        assert unseen.search(description.image) is None, description.image
        openings.add(description.image.split(";")[0])
        leaf_texts = [t for n, t in description.concepts.items() if tree[n].atomic]
        for text in leaf_texts:  # a leaf's text is about that leaf
            assert len(referenced(text)) == 1
    assert len(openings) > 1


def test_descriptions_are_deterministic_and_vary_by_key(analyses, tree):
    describer = EvidenceDescriber(tree)
    pair_id, analysis = analyses[0]
    assert describer.describe(analysis, pair_id) == EvidenceDescriber(tree).describe(analysis, pair_id)
    texts = {describer.describe(analysis, f"key-{k}").image for k in range(12)}
    assert len(texts) > 1  # phrasing varies with the sample, the facts do not

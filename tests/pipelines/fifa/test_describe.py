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


@pytest.mark.parametrize("changes, words", [
    ({"delta_l": -12.0}, ["darker", "ΔL -12.0"]),
    ({"delta_l": 9.0, "delta_a": 6.0}, ["lighter and redder"]),
    ({"delta_b": -7.0}, ["bluer"]),
    ({"sharpness_ratio": 0.3}, ["smoothed", "×0.30"]),
    ({"sharpness_ratio": 2.5}, ["over-sharpened", "×2.50"]),
    ({"edge_ratio": 0.5}, ["softer at its edges"]),
    ({"texture_change": 9.0}, ["changed in texture"]),
    ({}, ["subtly altered", "9.0 grey levels"]),
])
def test_evidence_words_follow_the_numbers(changes, words):
    text = " ".join(evidence_phrases(_evidence(**changes)))
    for word in words:
        assert word in text
    for opposite in {"darker": "lighter", "lighter": "darker", "smoothed": "over-sharpened"}.items():
        if opposite[0] in words[0]:
            assert opposite[1] not in text


def test_descriptions_are_deterministic_and_vary_by_key(analyses, tree):
    describer = EvidenceDescriber(tree)
    pair_id, analysis = analyses[0]
    assert describer.describe(analysis, pair_id) == EvidenceDescriber(tree).describe(analysis, pair_id)
    texts = {describer.describe(analysis, f"key-{k}").image for k in range(12)}
    assert len(texts) > 1  # phrasing varies with the sample, the facts do not

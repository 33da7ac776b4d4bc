"""Concept mentions in free text: every name and alias, longest match, spelling variants,
references, hallucinations, and prose turned into references."""

from __future__ import annotations

import random

import pytest

from fict.mentions import ConceptMatcher, Mention, matcher_for
from fict.tree import ConceptNode, ConceptTree
from pipelines.fifa.describe import render


@pytest.fixture(scope="module")
def matcher(tree):
    return matcher_for(tree)


def _found(matcher, text):
    return [(m.node_id, m.surface) for m in matcher.find(text)]


def test_every_name_and_alias_is_a_mention_of_its_own_node(matcher, tree):
    checked = set()
    for node in tree.nodes:
        for phrase in (node.name, *node.aliases):
            for written in (phrase, phrase.upper(), phrase.capitalize(), phrase.replace(" ", "-"),
                            phrase.replace("'", "’"), phrase.replace(" ", "  ")):
                text = f"Against the real photo, {written} (here) was edited."
                start = text.index(written)
                assert matcher.find(text) == [Mention(node.id, start, start + len(written), written)], \
                    (node.id, written, matcher.find(text))
            # A possessive after the last word stays outside the mention.
            assert _found(matcher, f"the {phrase}'s pixels") == [(node.id, phrase)]
        checked.add(node.id)
    assert len(checked) == len(tree) == 184


@pytest.mark.parametrize("text, expected", [
    ("the left upper eyelid", [("left_upper_eyelid", "left upper eyelid")]),
    ("the upper eyelid", []),  # not a concept, and "eyelid" alone is none either
    ("the area between the left eyebrow and eyelid", [("left_supraorbital_area",
                                                       "area between the left eyebrow and eyelid")]),
    ("the left upper lip edge and the upper lip", [("left_upper_lip_edge", "left upper lip edge"),
                                                   ("upper_lip", "upper lip")]),
    ("lower face contour", [("lower_face_contour", "lower face contour")]),
    ("the lower face, its contour", [("lower_face", "lower face")]),
    ("skin around the left eye", [("left_periorbital_area", "skin around the left eye")]),
    ("the left eye and the eyes", [("left_eye", "left eye"), ("eye_region", "eyes")]),
    ("nasal alae, the left ala", [("nose_wings", "nasal alae"), ("left_nose_wing", "left ala")]),
])
def test_longest_match_wins_and_mentions_do_not_overlap(matcher, text, expected):
    assert _found(matcher, text) == expected


@pytest.mark.parametrize("text, node_id, surface", [
    ("the left crow's feet", "left_crows_feet_area", "left crow's feet"),
    ("the left crow’s feet", "left_crows_feet_area", "left crow’s feet"),
    ("the left crows feet", "left_crows_feet_area", "left crows feet"),
    ("the right crow’s feet area", "right_crows_feet_area", "right crow’s feet area"),
    ("the cupid’s bow", "cupids_bow", "cupid’s bow"),
    ("the lip is red", "lips", "lip"),  # singular of a plural name
    ("both eyebrows and one eyebrow", "eyebrows", "eyebrows"),
    ("the left eyelid", "left_eyelids", "left eyelid"),
    ("the left upper eyelids", "left_upper_eyelid", "left upper eyelids"),  # plural of a singular
    ("the left irises", "left_iris", "left irises"),
    ("the left under-eye area", "left_eye_bag", "left under-eye area"),
    ("the left under eye area", "left_eye_bag", "left under eye area"),
    ("the upper-lip", "upper_lip", "upper-lip"),
    ("the hair-line", "hairline", "hair-line"),
    ("the LEFT EYE", "left_eye", "LEFT EYE"),
    ("the left eye's lashes", "left_eye", "left eye"),  # the possessive stays outside
    ("the left eye’s corner", "left_eye_corners", "left eye’s corner"),
    ("the face's edge", "face_contour_edge", "face's edge"),  # a possessive inside a phrase
])
def test_plural_apostrophe_and_hyphen_variants(matcher, text, node_id, surface):
    assert _found(matcher, text)[0] == (node_id, surface)


def test_mentions_stand_on_word_boundaries(matcher):
    text = "surface eyesore lipstick earrings chinese hairy necklace noses"
    assert matcher.find(text) == [Mention("nose", text.index("noses"), len(text), "noses")]
    assert _found(matcher, "forehead-level") == [("forehead", "forehead")]  # a hyphen separates words


def test_references_are_mentions_of_their_ids(matcher):
    text = "The [[left_eye]] and [[not_a_node]]; [[left_eye]]s, the nose."
    assert _found(matcher, text) == [("left_eye", "[[left_eye]]"), ("not_a_node", "[[not_a_node]]"),
                                     ("left_eye", "[[left_eye]]"), ("nose", "nose")]
    assert matcher.mentioned(text) == ["left_eye", "not_a_node", "nose"]


def test_hallucinated_lists_unflagged_mentions_once_in_order(matcher, tree):
    text = "The hair and the [[lips]] changed; the nose, the hair again, and the lip."
    assert matcher.hallucinated(text, {"lips"}) == ["hair", "nose"]
    assert matcher.hallucinated(text, {"lips", "hair", "nose"}) == []
    assert matcher_for(tree) is matcher  # one matcher per tree, shared by every stage
    # Generic words are real concepts: "teeth" is the mouth opening, "face" the face.
    assert matcher.hallucinated("The teeth and the face look fine.", set()) == ["mouth_opening", "face"]


def test_to_references_round_trips_through_render(matcher, tree):
    rng = random.Random(3)
    nodes = [n for n in tree.nodes if n.id != "nose"]
    for _ in range(20):
        chosen = rng.sample(nodes, 8)
        flagged = {n.id for n in chosen[:4]}
        text = " ".join(f"The {n.name} is altered." for n in chosen) + " And [[nose]] stays."
        referenced = matcher.to_references(text, flagged)
        assert render(referenced, tree, grounded=False) == render(text, tree, grounded=False)
        for n in chosen:  # flagged names became references, the others stayed as written
            assert (f"[[{n.id}]]" in referenced) == (n.id in flagged)
        assert "[[nose]]" in referenced
    assert matcher.to_references("Both lips and the Left Eye.", {"lips"}) == "Both [[lips]] and the Left Eye."
    assert matcher.to_references("no concept here", {"lips"}) == "no concept here"


def test_spans_hold_for_text_whose_lower_case_is_longer(matcher):
    text = "İstanbul: the left eye and the LIPS."  # "İ".lower() is two characters
    assert [(m.node_id, text[m.start:m.end]) for m in matcher.find(text)] == [("left_eye", "left eye"),
                                                                            ("lips", "LIPS")]


def test_ambiguous_tree_is_refused():
    nodes = [ConceptNode("root", "root", None, 1, False, children=("a", "b")),
             ConceptNode("a", "lip", "root", 2, True), ConceptNode("b", "other", "root", 2, True, ("lips",))]
    with pytest.raises(ValueError, match="names both a and b"):
        ConceptMatcher(ConceptTree(nodes))

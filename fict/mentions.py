"""Where a free text names concepts of the tree: by `[[node_id]]` reference, by name, or by alias.

Used to check explanations against the analysis (a text that names a concept the
analysis did not flag is hallucinating) and to ground an LLM's prose afterwards
(`to_references` turns plain names of flagged concepts into references, which the
sample maker renders as names or as `<p> name </p> [SEG]`).

Matching rules, for every node's name and each of its aliases:

* case-insensitive, on word boundaries (`eye` is not found in `eyebrow` or `eyesore`);
* leftmost, then longest, and non-overlapping: "left upper eyelid" is one mention of
  `left_upper_eyelid`, not also of `eyelid` or `upper eyelid`;
* a word may carry a plural or singular `s`/`es` ("lip", "lips"; "iris", "irises";
  "eyebrow" finds `eyebrows`), except function words and side/position words ("of",
  "the", "left", "upper", ...);
* straight and curly apostrophes, or none ("crow's feet", "crow’s feet", "crows feet");
  a possessive `'s` after the last word is allowed but left outside the mention
  ("the lip's edge": the mention is "lip");
* words are separated by spaces or a hyphen ("under-eye", "under eye").

Decisions:

* Generic English aliases ("face", "mouth", "teeth", "eyes", "hair", "background",
  "crown", "collar", ...) are real concepts of the tree and are matched.  That is intended:
  a text that says the hair is altered when only the lips are is hallucinating.
* A hyphen joins words like a space, so a compound modifier counts too: "face-swapped"
  is a mention of `face` (fakes that swap the face are flagged there anyway).
* Text inside a reference `[[node_id]]` is a mention of that id as written, even an id the
  tree does not know (such an id is never flagged, so it counts as hallucinated).
* Spelling variants normalise to one phrase ("crow's" → "crow", "lips" → "lip"); two nodes
  whose phrases normalise alike would be ambiguous, so the matcher refuses such a tree.

Speed: the whole vocabulary (about 500 phrases) compiles into one regex shaped as a
character trie, so at a word start the engine follows one branch per letter instead of
trying every phrase; it runs over the lower-cased text without IGNORECASE.  Measured on
Python 3.11, one core of a shared machine (best of 7 runs): `find` takes ~30 µs for a
400-character evidence-describer text and ~55 µs for a 630-character prose text with
nine mentions (~18,000 texts/s); a flat longest-first alternation of the same phrases
takes ~550 µs for the prose text, IGNORECASE adds ~40%.  Building a matcher takes ~0.15 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property, lru_cache
from itertools import product
from typing import NamedTuple

from fict.tree import ConceptTree

REFERENCE = r"\[\[(?P<ref>[A-Za-z0-9_]+)\]\]"
# Between the words of a phrase: spaces, or a hyphen (any dash-like hyphen) with optional spaces.
_SEPARATOR = r"(?:\s+|\s*[-‐‑–]\s*)"
_SPLIT = re.compile(r"[\s\-‐‑–]+")
_POSSESSIVE = r"(?:['’]s)?"  # inside a phrase: "crow's feet", "crow’s feet"
_INFLECTION = r"(?:e?s)?"
# Words that take no plural `s`: function words and side/position modifiers.
UNINFLECTED = frozenset({
    "a", "above", "and", "around", "below", "between", "central", "entire", "front", "in",
    "inner", "left", "lower", "mid", "middle", "of", "outer", "right", "the", "under", "upper",
    "whole",
})
_CACHE_SIZE = 1 << 16  # distinct surfaces remembered (case and spelling variants of ~500 phrases)
# Trie units besides single characters.
_WORD_END, _INFLECTED_END, _NEXT_WORD = "\x00end", "\x00end_s", "\x00next"


class Mention(NamedTuple):
    node_id: str
    start: int
    end: int
    surface: str  # the text as written, text[start:end]


def _stem(word: str) -> str:
    """A word without apostrophes, lower case, singular where it is a plural in `s`."""
    word = word.lower().replace("'", "").replace("’", "")
    if word in UNINFLECTED or not word.endswith("s") or word.endswith(("ss", "is", "us")):
        return word
    return word[:-1]


def phrase_key(phrase: str) -> tuple[str, ...]:
    """The normalised words of a name or alias."""
    return tuple(_stem(w) for w in _SPLIT.split(phrase.strip()) if w)


def _units(key: tuple[str, ...]) -> list[str]:
    units: list[str] = []
    for i, word in enumerate(key):
        if i:
            units.append(_NEXT_WORD)
        units.extend(word)
        units.append(_WORD_END if word in UNINFLECTED else _INFLECTED_END)
    return units


_UNIT_REGEX = {
    _WORD_END: r"(?!\w)",
    _INFLECTED_END: _INFLECTION + r"(?!\w)",
    _NEXT_WORD: _POSSESSIVE + _SEPARATOR,
}


class _TrieNode:
    __slots__ = ("children", "terminal")

    def __init__(self):
        self.children: dict[str, _TrieNode] = {}
        self.terminal = False


def _trie_regex(node: _TrieNode) -> str:
    """Alternation over the node's children; after a complete phrase the continuation is
    optional and greedy, so a longer phrase wins and a shorter one is the fallback."""
    branches = []
    # Characters before word ends: "ala" + "e..." is tried before "ala" + end of word.
    for unit in sorted(node.children, key=lambda u: (u.startswith("\x00"), u)):
        child = node.children[unit]
        piece = _UNIT_REGEX.get(unit) or re.escape(unit)
        rest = _trie_regex(child) if child.children else ""
        if rest:
            piece += f"(?:{rest})?" if child.terminal else rest
        branches.append(piece)
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


class ConceptMatcher:
    """Finds concept mentions in free text with one precompiled regex per tree.

    The regex is written in lower case and runs case-sensitively over `text.lower()`; a
    text whose lower-case form has another length (a few non-ASCII letters such as "İ")
    runs through the same pattern compiled with IGNORECASE, so spans always index `text`.
    """

    def __init__(self, tree: ConceptTree):
        self.tree = tree
        self.phrases: dict[tuple[str, ...], str] = {}
        for node in tree.nodes:
            for phrase in (node.name, *node.aliases):
                key = phrase_key(phrase)
                other = self.phrases.setdefault(key, node.id)
                if other != node.id:
                    raise ValueError(f"{phrase!r} names both {other} and {node.id}")
        self._ids: dict[str, str] = {}  # surface -> node id, filled as texts come
        self._stems = {word for key in self.phrases for word in key}
        root = _TrieNode()
        for key in self.phrases:
            node = root
            for unit in _units(key):
                node = node.children.setdefault(unit, _TrieNode())
            node.terminal = True
        source = rf"{REFERENCE}|(?<!\w)(?:{_trie_regex(root)})"
        self.pattern = re.compile(source)

    @cached_property
    def _any_case(self) -> re.Pattern:
        return re.compile(self.pattern.pattern, re.IGNORECASE)

    def _stems_of(self, word: str) -> list[str]:
        """The stems a matched word can have been found by (inverts the `e?s` inflection
        and drops a possessive), most literal first."""
        word = word.lower()
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        word = word.replace("'", "").replace("’", "")
        return [w for w in (word, word[:-1], word[:-2]) if w in self._stems]

    def _node_id(self, surface: str) -> str:
        node_id = self._ids.get(surface)
        if node_id is None:
            options = [self._stems_of(w) for w in _SPLIT.split(surface)]
            node_id = next(self.phrases[key] for key in product(*options) if key in self.phrases)
            if len(self._ids) < _CACHE_SIZE:
                self._ids[surface] = node_id
        return node_id

    def _scan(self, text: str) -> Iterator[tuple[int, int, str, bool]]:
        """(start, end, node id, is a reference) of every mention, in order."""
        low = text.lower()
        if len(low) == len(text):
            matches = self.pattern.finditer(low)
        else:
            matches, low = self._any_case.finditer(text), text
        for m in matches:
            start, end = m.span()
            if low[start] == "[":  # a reference (no name starts with a bracket): the id as written
                yield start, end, text[start + 2:end - 2], True
            else:
                yield start, end, self._node_id(low[start:end]), False

    def find(self, text: str) -> list[Mention]:
        """Every mention, in order; references and plain names alike."""
        return [Mention(node_id, start, end, text[start:end]) for start, end, node_id, _ in self._scan(text)]

    def mentioned(self, text: str) -> list[str]:
        """Node ids mentioned, unique, in order of first mention."""
        return list(dict.fromkeys(node_id for _, _, node_id, _ in self._scan(text)))

    def hallucinated(self, text: str, flagged: set[str]) -> list[str]:
        """Node ids mentioned that are not flagged, unique, in order of first mention."""
        return [node_id for node_id in self.mentioned(text) if node_id not in flagged]

    def to_references(self, text: str, flagged: set[str]) -> str:
        """Plain mentions of flagged concepts as `[[node_id]]`; everything else as written.

        Rendering the result names each concept by its tree name, so an alias, a plural
        variant or a capital letter comes back as the canonical name."""
        parts, last = [], 0
        for start, end, node_id, reference in self._scan(text):
            if not reference and node_id in flagged:
                parts += (text[last:start], f"[[{node_id}]]")
                last = end
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)


@lru_cache(maxsize=4)
def matcher_for(tree: ConceptTree) -> ConceptMatcher:
    """One matcher per tree (building one takes ~0.15 s)."""
    return ConceptMatcher(tree)

"""The Facial Image Concept Tree (FICT): concepts, their regions on a face, coverage."""

from fict.tree import ConceptNode, ConceptTree, load_tree

__all__ = ["ConceptNode", "ConceptTree", "load_tree"]

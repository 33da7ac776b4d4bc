"""Stage 4: how much of each FICT concept the artifact mask covers.

Coverage `|A∩R| / |R|` and share `|A∩R| / |A|` for all 184 nodes come from one
`bincount` over the label map: atomic counts first, then every node's count as
`membership @ atomic_counts`, so a parent is exactly the union of its children.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fict.tree import ConceptTree


@dataclass(frozen=True)
class ConceptConfig:
    min_coverage: float = 0.10  # atomic: at least this fraction of the region changed...
    min_share: float = 0.25  # ...or at least this fraction of the whole artifact lies in it
    min_pixels: int = 40  # and never fewer changed pixels than this
    parent_min_coverage: float = 0.15  # a parent with no flagged child, by its own coverage


@dataclass
class Coverage:
    region_px: np.ndarray  # (n_nodes,) int64 |R|
    artifact_px: np.ndarray  # (n_nodes,) int64 |A∩R|
    coverage: np.ndarray  # (n_nodes,) float64
    share: np.ndarray  # (n_nodes,) float64
    artifact: np.ndarray  # (n_nodes,) bool, artifact-existing


def per_node(tree: ConceptTree, atomic_values: np.ndarray) -> np.ndarray:
    """Sum per-atomic values (n_atomic, ...) up to every node (n_nodes, ...)."""
    return tree.membership @ atomic_values


def atomic_counts(labels: np.ndarray, n_atomic: int, mask: np.ndarray | None = None) -> np.ndarray:
    values = labels[mask] if mask is not None else labels.ravel()
    return np.bincount(values, minlength=n_atomic)


def concept_coverage(tree: ConceptTree, labels: np.ndarray, artifact_mask: np.ndarray,
                     config: ConceptConfig | None = None) -> Coverage:
    config = config or ConceptConfig()
    n = len(tree.atomic)
    region = per_node(tree, atomic_counts(labels, n))
    changed = per_node(tree, atomic_counts(labels, n, artifact_mask))
    total = int(np.count_nonzero(artifact_mask))
    coverage = changed / np.maximum(region, 1)
    share = changed / max(total, 1)
    return Coverage(region, changed, coverage, share,
                    flag_concepts(tree, changed, coverage, share, config))


def flag_concepts(tree: ConceptTree, changed: np.ndarray, coverage: np.ndarray,
                  share: np.ndarray, config: ConceptConfig) -> np.ndarray:
    """Artifact-existing nodes.

    Atomic: enough changed pixels and either enough of the region changed or enough of
    the artifact lies in it.  Parent: any child is flagged, or its own coverage passes.
    """
    enough = changed >= config.min_pixels
    flags = np.zeros(len(tree), bool)
    for i in range(len(tree) - 1, -1, -1):  # depth-first order: children after parents
        node = tree.nodes[i]
        if node.atomic:
            flags[i] = enough[i] and (coverage[i] >= config.min_coverage or share[i] >= config.min_share)
        else:
            children = [tree.node_index[c] for c in node.children]
            flags[i] = bool(flags[children].any()) or bool(
                enough[i] and coverage[i] >= config.parent_min_coverage)
    return flags

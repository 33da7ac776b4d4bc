"""Loader for the concept tree data file (fict/data/fict.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources

import numpy as np
import yaml


@dataclass(frozen=True)
class ConceptNode:
    id: str
    name: str
    parent: str | None
    level: int  # the root is level 1
    atomic: bool
    aliases: tuple[str, ...] = ()
    children: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "parent": self.parent, "level": self.level,
            "atomic": self.atomic, "aliases": list(self.aliases),
        }


class ConceptTree:
    """The FICT nodes in depth-first order, with fast lookups.

    Atomic concepts are numbered 0..n_atomic-1 in that order; these numbers are the
    values of a label map.
    """

    def __init__(self, nodes: list[ConceptNode], version: int = 1):
        self.nodes = nodes
        self.version = version
        self.by_id = {n.id: n for n in nodes}
        if len(self.by_id) != len(nodes):
            raise ValueError("FICT ids are not unique")
        self.atomic = [n for n in nodes if n.atomic]
        self.atomic_index = {n.id: i for i, n in enumerate(self.atomic)}
        self.node_index = {n.id: i for i, n in enumerate(nodes)}

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, node_id: str) -> ConceptNode:
        return self.by_id[node_id]

    @property
    def root(self) -> ConceptNode:
        return self.nodes[0]

    @property
    def depth(self) -> int:
        return max(n.level for n in self.nodes)

    def path(self, node_id: str) -> list[ConceptNode]:
        """Root-to-node chain."""
        chain = []
        node: ConceptNode | None = self.by_id[node_id]
        while node is not None:
            chain.append(node)
            node = self.by_id[node.parent] if node.parent else None
        return chain[::-1]

    def atomic_descendants(self, node_id: str) -> list[str]:
        node = self.by_id[node_id]
        if node.atomic:
            return [node.id]
        return [a for child in node.children for a in self.atomic_descendants(child)]

    @cached_property
    def membership(self) -> np.ndarray:
        """(n_nodes, n_atomic) 0/1 matrix: node i contains atomic region j.

        `membership @ per_atomic_counts` gives every node's count in one product,
        which is how parents become the union of their children.
        """
        m = np.zeros((len(self.nodes), len(self.atomic)), np.int64)
        for i, node in enumerate(self.nodes):
            for a in self.atomic_descendants(node.id):
                m[i, self.atomic_index[a]] = 1
        return m

    def show(self) -> str:
        """The tree as indented text, atomic concepts marked with '·'."""
        lines = []
        for n in self.nodes:
            mark = "·" if n.atomic else "+"
            lines.append(f"{'  ' * (n.level - 1)}{mark} {n.name}  [{n.id}]")
        return "\n".join(lines)

    def to_json(self) -> list[dict]:
        return [n.to_dict() for n in self.nodes]


def _flatten(raw: dict, parent: str | None, level: int, out: list[ConceptNode]) -> None:
    children = raw.get("children") or []
    out.append(ConceptNode(
        id=raw["id"], name=raw["name"], parent=parent, level=level,
        atomic=not children, aliases=tuple(raw.get("aliases") or ()),
        children=tuple(c["id"] for c in children),
    ))
    for child in children:
        _flatten(child, raw["id"], level + 1, out)


@lru_cache(maxsize=1)
def load_tree() -> ConceptTree:
    text = resources.files("fict").joinpath("data/fict.yaml").read_text()
    raw = yaml.safe_load(text)
    nodes: list[ConceptNode] = []
    _flatten(raw["root"], None, 1, nodes)
    return ConceptTree(nodes, version=raw.get("version", 1))

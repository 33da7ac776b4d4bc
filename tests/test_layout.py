"""The house's floors (../shared/LAYOUT.md, README "Layout"), checked on the code's imports.

Each folder stands above what it imports and nothing imports upward:

    build_tools                      what a person runs
    pipelines | training             never import each other
    prompts
    fict | schemas                   import nothing of ours

Inside pipelines:

    fifa_annotate.py, faceinstruct_build.py   the thin drivers
    fifa | faceinstruct              one folder per dataset; never import each other
    common                           what both pipelines use
    llm | vision                     provider-neutral LLM client; pixels and faces
    retry | store                    the one retry policy; immutable entries by key (the caches)

Every import counts, also those inside functions (a lazy import is still a dependency),
and no module may take part in an import cycle.  The last tests plant a forbidden import
and a cycle in a copy of the tree and check that the contract reports them.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests import REPO

# (floor, parts) from the top down: a part may import its own modules and the parts of
# lower floors, never a part of its own floor or of a higher one.
TOP_FLOORS = (("build_tools",), ("pipelines", "training"), ("prompts",), ("fict", "schemas"))
PIPELINE_FLOORS = (("pipelines.fifa_annotate", "pipelines.faceinstruct_build"),
                   ("pipelines.fifa", "pipelines.faceinstruct"),
                   ("pipelines.common",),
                   ("pipelines.llm", "pipelines.vision"),
                   ("pipelines.retry", "pipelines.store"))
OURS = tuple(part for floor in TOP_FLOORS for part in floor)


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages under `root`."""
    out = {}
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ours that a file imports, anywhere in it (`from a import b` counts as
    `a.b` when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in OURS and target != name:
                found.add(target)
    return found


def part_of(module: str, floors) -> tuple[int, str] | None:
    """(floor index, part) of the longest part that holds `module`."""
    best = None
    for i, floor in enumerate(floors):
        for part in floor:
            if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best[1])):
                best = (i, part)
    return best


def violations(root: Path) -> list[str]:
    """Every import that runs sideways or upward, and every import cycle, as sentences."""
    known = modules(root)
    graph = {name: imports(path, name, set(known)) for name, path in known.items()}
    problems = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            for floors in (TOP_FLOORS, PIPELINE_FLOORS):
                here, there = part_of(source, floors), part_of(target, floors)
                if here is None or there is None or here[1] == there[1]:
                    continue
                if there[0] <= here[0]:
                    way = "sideways" if there[0] == here[0] else "upward"
                    problems.append(f"{source} imports {target}: {here[1]} may not import {there[1]} ({way})")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each strongly connected group of modules (Tarjan), as a path."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    out = []
    for group in groups:  # a path through the group back to its start
        members, path = set(group), [group[0]]
        while True:
            nxt = next(n for n in sorted(graph[path[-1]]) if n in members)
            if nxt in path:
                out.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
    return out


def test_the_contract_sees_the_whole_house():
    known = modules(REPO)
    assert {"pipelines.fifa_annotate", "pipelines.common.stages", "pipelines.fifa.stages", "pipelines.llm.client",
            "pipelines.vision.faces", "pipelines.retry", "build_tools.publish.export", "fict.mentions",
            "schemas.common"} <= set(known)
    unplaced = [m for m in known if m.startswith("pipelines.") and part_of(m, PIPELINE_FLOORS) is None]
    assert not unplaced, f"modules of pipelines/ on no floor: {unplaced}"
    graph = {name: imports(path, name, set(known)) for name, path in known.items()}
    assert sum(len(targets) for targets in graph.values()) > 200  # the imports were read


def test_no_import_runs_upward_or_sideways_and_there_is_no_cycle():
    problems = violations(REPO)
    assert not problems, "\n".join(problems)


@pytest.fixture()
def house(tmp_path) -> Path:
    for top in OURS:
        shutil.copytree(REPO / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return tmp_path


@pytest.mark.parametrize(("file", "line", "expected"), [
    ("schemas/common.py", "from fict.tree import load_tree", "schemas may not import fict (sideways)"),
    ("training/__init__.py", "from pipelines.common import shards", "training may not import pipelines"),
    ("prompts/instructions.py", "import build_tools.cli", "prompts may not import build_tools (upward)"),
    ("pipelines/fifa/stages.py", "    from pipelines.faceinstruct import x",
     "pipelines.fifa may not import pipelines.faceinstruct (sideways)"),
    ("pipelines/llm/client.py", "from pipelines.common.stages import StageFn",
     "pipelines.llm may not import pipelines.common (upward)"),
    ("pipelines/vision/faces.py", "from pipelines.fifa import analysis",
     "pipelines.vision may not import pipelines.fifa (upward)"),
    ("pipelines/retry.py", "import pipelines.llm.client", "pipelines.retry may not import pipelines.llm"),
])
def test_a_forbidden_import_fails_the_contract(house, file, line, expected):
    assert not violations(house)
    path = house / file
    text = path.read_text()
    if line.startswith("    "):  # an import inside a function counts too
        text += f"\n\ndef _planted():\n{line}\n"
    else:
        text += f"\n{line}\n"
    path.write_text(text)
    found = violations(house)
    assert any(expected in problem for problem in found), found


def test_a_cycle_fails_the_contract(house):
    path = house / "pipelines" / "fifa" / "samples.py"
    path.write_text(path.read_text() + "\n\ndef _planted():\n    from pipelines.fifa.stages import MakeSamples\n")
    found = violations(house)
    assert any(p.startswith("import cycle:") and "pipelines.fifa.samples" in p for p in found), found


def test_every_import_of_ours_names_something_that_exists():
    """Also the lazy imports inside functions, which a run reaches only on some paths: a
    module that moved must not leave an import of its old place behind."""
    import importlib

    known = modules(REPO)
    missing = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                wanted = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, attr in wanted:
                if module.split(".")[0] not in OURS:
                    continue
                if module not in known:
                    missing.append(f"{name}:{node.lineno}: no module {module}")
                elif attr is not None and f"{module}.{attr}" not in known \
                        and not hasattr(importlib.import_module(module), attr):
                    missing.append(f"{name}:{node.lineno}: {module} has no {attr}")
    assert not missing, "\n".join(missing)

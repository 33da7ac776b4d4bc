import json

import numpy as np

from build_tools.cli import main


def test_counts_levels_and_root(tree):
    atomic = [n for n in tree.nodes if n.atomic]
    assert len(tree) == 184
    assert len(atomic) == 112
    assert len(tree) - len(atomic) == 72
    assert {n.level for n in tree.nodes} == set(range(1, 9))
    roots = [n for n in tree.nodes if n.parent is None]
    assert roots == [tree.root] and tree.root.level == 1


def test_ids_and_names_unique_and_links_consistent(tree):
    assert len({n.id for n in tree.nodes}) == 184
    assert len({n.name for n in tree.nodes}) == 184
    for node in tree.nodes:
        if node.parent:
            parent = tree[node.parent]
            assert node.id in parent.children
            assert node.level == parent.level + 1
        assert node.atomic == (len(node.children) == 0)


def test_every_parent_is_the_union_of_its_children(tree):
    m = tree.membership
    assert m.max() == 1
    for i, node in enumerate(tree.nodes):
        if node.atomic:
            assert m[i].sum() == 1
            continue
        children = np.stack([m[tree.node_index[c]] for c in node.children])
        # Children are disjoint (no atomic region counted twice) and together make the parent.
        assert children.sum(0).max() == 1
        assert np.array_equal(children.sum(0), m[i])
    assert m[0].sum() == 112  # the root holds every atomic region


def test_left_right_names_come_in_mirror_pairs(tree):
    names = {n.name for n in tree.nodes}
    sided = [n for n in names if n.startswith("left ")]
    assert len(sided) > 40
    for name in sided:
        assert "right " + name[len("left "):] in names


def test_aliases_do_not_name_another_node(tree):
    names = {n.name.lower(): n.id for n in tree.nodes}
    for node in tree.nodes:
        for alias in node.aliases:
            owner = names.get(alias.lower())
            assert owner in (None, node.id), f"alias {alias!r} of {node.id} is the name of {owner}"


def test_cli_export_json(capsys):
    assert main(["fict", "export", "--format", "json"]) == 0
    nodes = json.loads(capsys.readouterr().out)
    assert len(nodes) == 184
    assert set(nodes[0]) == {"id", "name", "parent", "level", "atomic", "aliases"}
    assert nodes[0]["parent"] is None
    assert sum(n["atomic"] for n in nodes) == 112
    assert max(n["level"] for n in nodes) == 8
    ids = {n["id"] for n in nodes}
    assert all(n["parent"] in ids for n in nodes[1:])


def test_cli_show_indents_by_level(capsys):
    assert main(["fict", "show"]) == 0
    out = capsys.readouterr().out
    assert "184 nodes: 112 atomic, 72 parents, 8 levels" in out
    eyelid = next(line for line in out.splitlines() if "[left_upper_eyelid]" in line)
    assert eyelid.startswith(" " * 14 + "·")  # level 8: seven indents of two spaces

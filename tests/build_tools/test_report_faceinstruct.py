"""`facext report` on a FaceInstruct run: a card per selected sample with its crop and, for a
video, the strip of its sampled frames; the rejected table with every row; every picture
the page names exists; FiFa's concept filter is refused with a clear error."""

from __future__ import annotations

import re

import pytest

from build_tools.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    from pipelines.faceinstruct.pipeline import run
    from pipelines.faceinstruct.source_trees import build_tree

    root = tmp_path_factory.mktemp("report_sources")
    args = []
    for name in ("celeba", "ffpp"):
        build_tree(name, root / name, seed=0)
        args += ["--source", f"{name}={root / name}"]
    run([*args, "--output", str(root / "out")])
    return root / "out"


def test_the_page_shows_crops_strips_and_every_rejected_row(run_output, tmp_path, capsys):
    import datasets

    page = tmp_path / "page" / "report.html"
    assert main(["report", str(run_output), "-o", str(page), "--per-task", "2", "--rejected"]) == 0
    text = page.read_text()
    assert text.count('<div class="card">') == 4  # 2 attribute + 2 deepfake
    assert text.count('class="strip"') == 2  # the two deepfake videos
    for src in re.findall(r'src="([^"]+)"', text):
        assert (page.parent / src).is_file(), src
    rejected = datasets.load_from_disk(str(run_output / "rejected"))
    table = text[text.index("id='rejected'"):]
    assert table.count("<tr><td>") == rejected.num_rows > 0
    assert "samples, " in capsys.readouterr().out


def test_fifa_only_selections_are_refused(run_output, tmp_path, capsys):
    assert main(["report", str(run_output), "-o", str(tmp_path / "r.html"), "--concept", "nose"]) == 2
    assert "no concepts" in capsys.readouterr().err
    assert main(["report", str(run_output), "-o", str(tmp_path / "r.html"), "--task", "i_loc"]) == 2
    assert "FaceInstruct's are" in capsys.readouterr().err

"""`facext report`: the page a person reads, opened in headless Chromium.

Checks what a reader relies on: every picture loads, the page is not blank, the
selectors pick what they say, grounded phrases carry their mask's colour, and the
label maps drawn from re-analysing the inputs agree with the shards' masks.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from build_tools.report_html import (
    SEG_COLOURS,
    ReportError,
    Selection,
    concept_filter,
    grounded_html,
    write_report,
)
from tests.chromium import page_check, screenshot


@pytest.fixture(scope="module")
def page(small_run, tmp_path_factory):
    output, _ = small_run
    path = tmp_path_factory.mktemp("report") / "report.html"
    drawn = write_report(output, path, Selection(per_task=2, rejected=True), progress=False)
    return path, drawn


def test_every_image_loads_and_the_page_is_not_blank(page, small_run):
    path, drawn = page
    seen = page_check(path)
    assert seen["broken"] == []
    assert seen["images"] >= drawn["images"]  # pair pictures appear on each of the pair's cards
    assert seen["cards"] == drawn["samples"] > 0
    assert seen["text_chars"] > 2000
    shot = screenshot(path, path.parent / "shot.png")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 20  # pictures and text, not one colour
    assert (np.abs(pixels - np.median(pixels)) > 30).mean() > 0.1


def test_a_missing_picture_is_reported_broken(page, tmp_path):
    """The browser check can fail: remove one picture from a copy of the page."""
    path, _ = page
    copy = tmp_path / "copy"
    shutil.copytree(path.parent, copy)
    files = sorted((copy / f"{path.stem}_files").glob("*_seg_*.png"))
    files[0].unlink()
    seen = page_check(copy / path.name)
    assert len(seen["broken"]) == 1 and files[0].name in seen["broken"][0]


def test_cards_cover_every_task_and_the_rejected_table_every_reject(page, small_run):
    path, _ = page
    output, _ = small_run
    report = json.loads((output / "run_report.json").read_text())
    text = path.read_text()
    tasks = re.findall(r'<section class="card" id="s-[^"]+" data-task="([^"]+)"', text)
    present = {t for t, n in report["samples"]["by_task"].items() if n}
    assert set(tasks) == present
    assert all(tasks.count(t) == min(2, report["samples"]["by_task"][t]) for t in present)
    headings = re.findall(r"<h3 class='task' id='task-([a-z_]+)'>[^<]*\((\d+)\)</h3>", text)
    assert [(t, int(n)) for t, n in headings] == [(t, tasks.count(t)) for t in dict.fromkeys(tasks)]
    assert all(f'href="#task-{t}"' in text for t, _ in headings)
    table = text.split("Rejected inputs</h2>", 1)[1]
    assert table.count("<tr>") - 1 == report["pairs_rejected"]
    for reason, n in report["rejected"]["by_reason"].items():
        assert table.count(f"<b>{reason}</b>") == n


def test_only_cards_with_masks_say_they_show_masks(page):
    path, _ = page
    cards = re.findall(r'<section class="card" id="s-[^"]+" data-task="([^"]+)">(.*?)</section>',
                       path.read_text(), re.DOTALL)
    claims = {task: "[SEG] masks</figcaption>" in card for task, card in cards}
    assert claims["i_loc"] and claims["i_age"]  # an artifact mask, grounded phrases' masks
    assert not claims["det"] and not claims["cls"]  # no mask at all
    assert all("<figcaption>" in card for _, card in cards)


def test_rejected_inputs_are_found_from_the_manifest(page, small_run):
    """The rejected table names images as the manifest wrote them; the page finds them."""
    path, _ = page
    table = path.read_text().split("Rejected inputs</h2>", 1)[1]
    row = re.search(r"<tr><td>[^<]*no_face[^<]*</td>.*?</tr>", table, re.DOTALL).group(0)
    assert row.count('<img class="thumb"') == 2


def test_count_plots_have_whole_number_ticks(small_run, tree):
    """A small run's counts (a reject reason seen once) must not get 0.25 ticks."""
    from build_tools.report_html import _plots

    output, _ = small_run
    report = json.loads((output / "run_report.json").read_text())
    ticks: dict[str, list[float]] = {}

    class Figures:
        def figure(self, fig, name: str) -> str:
            fig.canvas.draw()
            for i, ax in enumerate(fig.axes):
                for axis in (ax.xaxis, ax.yaxis):
                    low, high = sorted(axis.get_view_interval())
                    ticks[f"{name}/{i}/{axis.axis_name}"] = [t for t in axis.get_majorticklocs()
                                                            if low <= t <= high]
            return name

    assert {name for name, _ in _plots(report, tree, Figures())} >= {"samples per task and split", "reject reasons"}
    fractional = {k: v for k, v in ticks.items() if any(t != round(t) for t in v)}
    assert fractional == {}


def test_reanalysis_reproduces_the_shards_artifact_masks(page):
    """The label map comes from analysing the inputs again; that analysis must give the
    very mask the shards hold, or the page would show another pair than the data."""
    _, drawn = page
    ious = [v for v in drawn["mask_iou"].values() if v is not None]
    assert drawn["reanalysed"] == drawn["pairs"] and ious
    assert min(ious) == 1.0


def test_selectors_pick_task_and_concept(small_run, tree, tmp_path):
    output, _ = small_run
    drawn = write_report(output, tmp_path / "r.html", Selection(per_task=3, tasks=("r_loc", "b_toe")),
                         progress=False)
    tasks = re.findall(r'data-task="([^"]+)"', (tmp_path / "r.html").read_text())
    assert set(tasks) <= {"r_loc", "b_toe"} and 0 < len(tasks) <= 6 == 2 * 3
    assert drawn["samples"] == len(tasks)

    import datasets

    rows = datasets.concatenate_datasets(list(datasets.load_from_disk(str(output)).values()))
    wanted = concept_filter(("eyebrows",), tree)
    expected = sum(1 for samples in rows["samples"] for s in samples if wanted.intersection(s["concepts"]))
    drawn = write_report(output, tmp_path / "c.html", Selection(per_task=10**6, concepts=("eyebrows",)),
                         progress=False)
    assert drawn["samples"] == expected > 0
    with pytest.raises(ReportError, match="no such FICT node"):
        write_report(output, tmp_path / "x.html", Selection(concepts=("elbow",)), progress=False)
    with pytest.raises(ReportError, match="the tasks are"):
        write_report(output, tmp_path / "x.html", Selection(tasks=("nope",)), progress=False)


def test_grounded_phrases_take_their_masks_colours():
    text = "The <p> left eyebrow </p> [SEG] is darker; the <p> nose </p> [SEG] is smoothed."
    out = grounded_html(text)
    spans = re.findall(r'class="phrase" style="background:rgba\((\d+),(\d+),(\d+)', out)
    assert [tuple(map(int, s)) for s in spans] == list(SEG_COLOURS[:2])
    assert out.count(">SEG 1<") == 1 and out.count(">SEG 2<") == 1
    assert "<p>" not in out and "left eyebrow" in out


def test_without_reachable_inputs_the_page_still_draws_the_shards(small_run, tmp_path):
    output, pairs = small_run
    moved = tmp_path / "moved_pairs"
    shutil.move(str(pairs), moved)
    try:
        path = tmp_path / "r.html"
        drawn = write_report(output, path, Selection(per_task=1), progress=False)
        assert drawn["reanalysed"] == 0 and drawn["samples"] > 0
        assert "no label map" in path.read_text()
        assert page_check(path)["broken"] == []
    finally:
        shutil.move(str(moved), pairs)


def test_an_unfinished_output_is_refused(tmp_path):
    with pytest.raises(ReportError, match="no run_report.json"):
        write_report(tmp_path, tmp_path / "r.html", progress=False)

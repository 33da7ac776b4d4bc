"""`facext report OUTPUT -o report.html`: one static page to judge a run by eye.

The page has the run's figures (counts, rejects, ratings, hallucination), plots of the
dataset's distributions, the concept tree with how often each node was flagged, and a
card per selected sample: real and fake crops, the difference heat map, the artifact
mask, the concept label map with the flagged concepts outlined, the sample's `[SEG]`
masks in the colours of the phrases they ground, its ratings and hallucinated concepts.
The pictures are PNG files in `report_files/` beside the page.

Crops, masks and texts come from the shards, as published.  The label map is not in the
shards: it comes from analysing the pair again from its inputs (the manifest rows named
by the samples' provenance) with the run's options; the pipeline is deterministic, so
the page also says whether that analysis gives the artifact mask the shards hold.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from build_tools.render import difference_heatmap, label_overlay, mask_overlay
from fict.tree import ConceptTree, load_tree
from pipelines.common.progress import Progress
from schemas.fifa import SPLITS, TASK_TITLES, TASKS, flat_samples

# One grounded phrase of an answer: `<p> phrase </p> [SEG]` (or a bare `[SEG]`).
GROUNDED = re.compile(r"<p>\s*(.*?)\s*</p>\s*\[SEG\]|\[SEG\]")
THUMB = 256  # side of the pictures on the page, in pixels
SEG_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40))


@dataclass(frozen=True)
class Selection:
    """Which samples get a card."""

    per_task: int = 2
    tasks: tuple[str, ...] = ()
    concepts: tuple[str, ...] = ()  # node ids or names; a parent matches its descendants
    rejected: bool = False  # add the rejected rows (all in a table, `max_rejected` with pictures)
    max_rejected: int = 40


@dataclass
class PairView:
    """What the page shows of one pair (crops from the shards, maps from re-analysis)."""

    pair_id: str
    real: np.ndarray | None = None
    fake: np.ndarray | None = None
    shard_mask: np.ndarray | None = None  # the i_loc answer's mask: the whole artifact mask
    labels: np.ndarray | None = None
    artifact_mask: np.ndarray | None = None
    flagged: list[dict] = field(default_factory=list)  # {id, name, atomic, coverage, share}
    note: str = ""
    mask_iou: float | None = None  # re-analysed artifact mask against the shard's


class ReportError(Exception):
    """The page cannot be drawn (not a finished output, an unknown task or concept)."""


def write_report(output: str | Path, path: str | Path, selection: Selection = Selection(),
                 progress: bool = True) -> dict[str, Any]:
    """Writes the page and its pictures; returns what it drew (counts, files)."""
    output, path = Path(output), Path(path)
    report = load_run_report(output)
    if report.get("pipeline") != "fifa_annotate":
        raise ReportError(f"{output} is a {report.get('pipeline')} run: its page is drawn by "
                          f"build_tools.report_faceinstruct (facext report picks it)")
    tree = load_tree()
    files = path.parent / f"{path.stem}_files"
    files.mkdir(parents=True, exist_ok=True)
    for old in files.glob("*.png"):  # an earlier page's pictures (the folder is the page's own)
        old.unlink()
    writer = Pictures(files, path.parent)

    samples = select_samples(output, selection, tree) if report.get("pairs_written") else []
    pairs = _pair_views(output, report, samples, tree, progress)
    cards: dict[str, list[str]] = {}  # task -> its cards, in task order
    pictures_of_pairs: dict[str, str] = {}
    with Progress(len(samples), "report", "sample", enabled=None if progress else False) as shown:
        for sample in samples:
            card = _sample_card(sample, pairs[sample["pair_id"]], writer, tree, pictures_of_pairs)
            cards.setdefault(sample["task"], []).append(card)
            shown.advance()
    rejected_html = _rejected_section(output, report, selection, writer, tree) if selection.rejected else ""
    page = _page(output, report, tree, selection, cards, rejected_html, _plots(report, tree, writer))
    path.write_text(page, encoding="utf-8")
    return {"samples": len(samples), "pairs": len(pairs), "images": writer.count,
            "reanalysed": sum(p.labels is not None for p in pairs.values()),
            "mask_iou": {p.pair_id: p.mask_iou for p in pairs.values()}, "page": str(path)}


def load_run_report(output: Path) -> dict[str, Any]:
    report_path = output / "run_report.json"
    if not report_path.exists():
        raise ReportError(f"{output} is not a pipeline's output: it has no run_report.json")
    report = json.loads(report_path.read_text())
    if report.get("status") == "awaiting_batch":
        raise ReportError(f"{output}: the run is waiting for batch answers (--llm_batch collect); "
                          f"it has no shards to show yet")
    return report


# --- choosing samples -----------------------------------------------------------------------


def concept_filter(names: tuple[str, ...], tree: ConceptTree) -> set[str] | None:
    """The atomic and parent ids a sample may ground to match any of `names` (a node
    matches itself and every node below it); None when no filter is asked."""
    if not names:
        return None
    by_name = {n.name.lower(): n.id for n in tree.nodes}
    wanted = set()
    for name in names:
        node_id = name if name in tree.by_id else by_name.get(name.lower().replace("_", " "))
        if node_id is None:
            raise ReportError(f"--concept {name!r}: no such FICT node (see `facext fict show`)")
        stack = [node_id]
        while stack:
            current = stack.pop()
            wanted.add(current)
            stack.extend(tree[current].children)
    return wanted


def select_samples(output: Path, selection: Selection, tree: ConceptTree) -> list[dict]:
    """Up to `per_task` samples of each wanted task, first in shard order (image rows by
    image id, samples in task order: the same draw every time), as flat samples."""
    import datasets

    unknown = [t for t in selection.tasks if t not in TASKS]
    if unknown:
        raise ReportError(f"--task {', '.join(unknown)}: the tasks are {', '.join(TASKS)}")
    tasks = selection.tasks or TASKS
    wanted_concepts = concept_filter(selection.concepts, tree)
    dataset = datasets.load_from_disk(str(output))
    taken: dict[str, int] = dict.fromkeys(tasks, 0)
    picked = []
    for split in SPLITS:
        if split not in dataset:
            continue
        # The samples' tasks and concepts, without the images; then the images of the rows picked.
        meta = dataset[split].select_columns(["samples"])
        wanted: dict[int, list[int]] = {}  # image row -> its picked samples
        offset = 0
        for batch in meta.iter(batch_size=1_000):
            for i, samples in enumerate(batch["samples"]):
                for j, sample in enumerate(samples):
                    task = sample["task"]
                    if task in taken and taken[task] < selection.per_task and (
                            wanted_concepts is None or wanted_concepts.intersection(sample["concepts"])):
                        taken[task] += 1
                        wanted.setdefault(offset + i, []).append(j)
            offset += len(batch["samples"])
            if all(n >= selection.per_task for n in taken.values()):
                break
        if wanted:
            rows = dataset[split].select(sorted(wanted)).cast_column("image", datasets.Image(decode=False))
            for index, row in zip(sorted(wanted), rows, strict=True):
                flat = flat_samples(row)
                picked.extend(flat[j] for j in wanted[index])
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(picked, key=lambda r: (order[r["task"]], r["pair_id"], r["sample_id"]))


def _pair_rows(output: Path, pair_ids: set[str]) -> dict[str, dict]:
    """Per pair: the real crop (det on the real image), a fake crop and the i_loc mask."""
    import datasets

    from schemas.masks import decode_mask

    dataset = datasets.load_from_disk(str(output))
    found: dict[str, dict] = {p: {} for p in pair_ids}
    for split in SPLITS:
        if split not in dataset:
            continue
        meta = dataset[split].select_columns(["pair_id"])
        wanted = [offset + i for offset in range(0, meta.num_rows, 10_000)
                  for i, pair in enumerate(meta[offset:offset + 10_000]["pair_id"]) if pair in found]
        if wanted:
            rows = dataset[split].select(wanted).cast_column("image", datasets.Image(decode=False))
            for row in rows:
                slots = found[row["pair_id"]]
                slots["fake" if row["is_fake"] else "real"] = _decode_png(row["image"]["bytes"])
                loc = [s for s in row["samples"] if s["task"] == "i_loc" and not s["negative"] and s["masks"]]
                if loc:
                    slots["mask"] = decode_mask(loc[0]["masks"][0])
    return found


# --- pairs: crops from the shards, maps from analysing the inputs again -----------------------


def _pair_views(output: Path, report: dict, samples: list[dict], tree: ConceptTree,
                progress: bool) -> dict[str, PairView]:
    pair_ids = {s["pair_id"] for s in samples}
    if not pair_ids:
        return {}
    from_shards = _pair_rows(output, pair_ids)
    views = {}
    for pair_id in sorted(pair_ids):
        rows = from_shards[pair_id]
        fake = rows.get("fake")
        views[pair_id] = PairView(pair_id, real=rows.get("real"), fake=fake, shard_mask=rows.get("mask"))
    inputs = _inputs_of(report, {s["pair_id"]: s["provenance"] for s in samples})
    analyzer = _analyzer(report)
    with analyzer, Progress(len(views), "re-analysing pairs", "pair",
                            enabled=None if progress else False) as shown:
        for pair_id, view in views.items():
            pair = inputs.get(pair_id)
            if pair is None:
                view.note = "the pair's manifest row is not reachable: no label map"
            else:
                _reanalyse(view, pair, analyzer, tree)
            shown.advance()
    return views


def _inputs_of(report: dict, provenance: dict[str, dict]) -> dict[str, Any]:
    """pair id -> PairInput, read again from the run's manifests (only the rows needed)."""
    from pipelines.common.manifest import manifest_name, raw_rows
    from pipelines.fifa.pairs import parse_row

    allow_absolute = bool(report.get("options", {}).get("allow_absolute_paths"))
    manifests = {manifest_name(m): m for m in report.get("manifests", [])}
    wanted: dict[str, dict[int, str]] = defaultdict(dict)
    for pair_id, prov in provenance.items():
        wanted[prov["manifest"]][prov["row"]] = pair_id
    found = {}
    for name, rows in wanted.items():
        path = manifests.get(name)
        if path is None:
            continue
        try:
            for index, row in enumerate(raw_rows(path)):
                if index in rows:
                    parsed = parse_row(path, index, row, allow_absolute)
                    if getattr(parsed, "real", None) and parsed.pair_id == rows[index]:
                        found[parsed.pair_id] = parsed
                if index >= max(rows):
                    break
        except OSError:
            continue
    return found


def _analyzer(report: dict):
    from pipelines.fifa.analysis import PairAnalyzer
    from pipelines.fifa.settings import FifaSettings

    options = report.get("options", {})
    names = ("crop_size", "mask_mode", "mask_threshold", "mask_percentile", "coverage_threshold")
    settings = FifaSettings(manifests=(), output="", **{k: options[k] for k in names if k in options})
    return PairAnalyzer(settings.analysis_config())


def _reanalyse(view: PairView, pair, analyzer, tree: ConceptTree) -> None:
    try:
        result = analyzer.analyze_files(pair.real, pair.fake)
    except Exception as exc:  # noqa: BLE001 - a report draws what it can; the reason goes on the card
        view.note = f"analysing the inputs again failed: {type(exc).__name__}: {exc}"
        return
    if not result.ok:
        view.note = f"analysing the inputs again rejected the pair: {result.analysis.reason.value}"
        return
    view.labels, view.artifact_mask = result.labels, result.artifact_mask
    view.flagged = [{"id": c.id, "name": c.name, "atomic": c.atomic, "coverage": c.coverage,
                     "share": c.share} for c in result.analysis.concepts if c.artifact]
    if view.real is None:
        view.real = result.real_crop
    if view.fake is None:
        view.fake = result.fake_crop
    if view.shard_mask is not None and view.shard_mask.shape == view.artifact_mask.shape:
        inter = np.logical_and(view.shard_mask, view.artifact_mask).sum()
        union = np.logical_or(view.shard_mask, view.artifact_mask).sum()
        view.mask_iou = float(inter / union) if union else 1.0


# --- pictures -----------------------------------------------------------------------------------


def _decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Pictures:
    """PNG files beside the page, named by content so a re-run rewrites the same names."""

    def __init__(self, folder: Path, page_dir: Path):
        self.folder, self.page_dir, self.count = folder, page_dir, 0

    def save(self, image: np.ndarray, name: str, side: int | None = THUMB) -> str:
        if side and max(image.shape[:2]) > side:
            scale = side / max(image.shape[:2])
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        target = self.folder / f"{_slug(name)}.png"
        cv2.imwrite(str(target), bgr)
        self.count += 1
        return target.relative_to(self.page_dir).as_posix()

    def figure(self, fig, name: str) -> str:
        import matplotlib.pyplot as plt

        target = self.folder / f"{_slug(name)}.png"
        fig.savefig(target, dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.count += 1
        return target.relative_to(self.page_dir).as_posix()


def _slug(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:60]
    return f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def outlined_labels(image: np.ndarray, labels: np.ndarray, flagged_atomic: list[int]) -> np.ndarray:
    """The label map over the face, flagged atomic regions outlined in white."""
    out = label_overlay(image, labels, alpha=0.4)
    mask = np.isin(labels, flagged_atomic).astype(np.uint8)
    for k in flagged_atomic:
        contours, _ = cv2.findContours((labels == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
    if not mask.any():
        cv2.putText(out, "no flagged concept", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return out


def seg_overlay(image: np.ndarray, masks: list[np.ndarray], regions: list[np.ndarray],
                bbox: list[int] | None) -> np.ndarray:
    """The sample's crop with its i-th `[SEG]` mask in colour i (filled) and the region
    it grounds outlined in the same colour; the box of a box task in yellow."""
    out = image.copy()
    for i, mask in enumerate(masks):
        colour = SEG_COLOURS[i % len(SEG_COLOURS)]
        out = mask_overlay(out, mask.astype(bool), colour=colour, alpha=0.5)
    for i, region in enumerate(regions):
        colour = SEG_COLOURS[i % len(SEG_COLOURS)]
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 2)
    if bbox:
        x0, y0, x1, y1 = bbox
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 225, 25), 3)
    return out


# --- the sample cards ---------------------------------------------------------------------------


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rgb(colour: tuple[int, int, int], alpha: float = 1.0) -> str:
    return f"rgba({colour[0]},{colour[1]},{colour[2]},{alpha})"


def grounded_html(text: str) -> str:
    """An answer with its i-th grounded phrase and `[SEG]` in the colour of mask i."""
    parts, last = [], 0
    for i, match in enumerate(GROUNDED.finditer(text)):
        colour = SEG_COLOURS[i % len(SEG_COLOURS)]
        parts.append(esc(text[last:match.start()]))
        if match.group(1) is not None:
            parts.append(f'<span class="phrase" style="background:{_rgb(colour, 0.25)};'
                         f'border-bottom:3px solid {_rgb(colour)}">{esc(match.group(1))}</span>')
        parts.append(f'<span class="seg" style="background:{_rgb(colour)}">SEG {i + 1}</span>')
        last = match.end()
    parts.append(esc(text[last:]))
    return "".join(parts).replace("\n", "<br>")


def figure_html(src: str, caption: str) -> str:
    return f'<figure><img src="{esc(src)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _pair_pictures(view: PairView, writer: Pictures, tree: ConceptTree, cache: dict) -> str:
    if view.pair_id in cache:
        return cache[view.pair_id]
    figures = []
    if view.real is not None:
        figures.append(figure_html(writer.save(view.real, f"{view.pair_id}_real"), "real crop"))
    if view.fake is not None:
        figures.append(figure_html(writer.save(view.fake, f"{view.pair_id}_fake"), "fake crop"))
    if view.real is not None and view.fake is not None and view.real.shape == view.fake.shape:
        difference = np.abs(view.fake.astype(np.int16) - view.real.astype(np.int16)).mean(axis=2)
        figures.append(figure_html(writer.save(difference_heatmap(difference), f"{view.pair_id}_diff"),
                               "|fake − real| heat map"))
    mask = view.artifact_mask if view.artifact_mask is not None else view.shard_mask
    if mask is not None and view.fake is not None:
        figures.append(figure_html(writer.save(mask_overlay(view.fake, mask), f"{view.pair_id}_mask"),
                               "artifact mask"))
    if view.labels is not None and view.real is not None:
        atomic = [tree.atomic_index[c["id"]] for c in view.flagged if c["atomic"]]
        figures.append(figure_html(writer.save(outlined_labels(view.real, view.labels, atomic),
                                           f"{view.pair_id}_labels"), "label map, flagged outlined"))
    flagged = sorted((c for c in view.flagged if c["atomic"]), key=lambda c: -c["share"])
    rows = "".join(f"<tr><td>{esc(c['name'])}</td><td>{c['coverage']:.2f}</td><td>{c['share']:.2f}</td></tr>"
                   for c in flagged[:12])
    more = f"<p class='muted'>and {len(flagged) - 12} more</p>" if len(flagged) > 12 else ""
    table = (f"<table class='small'><tr><th>flagged atomic concept</th><th>coverage</th><th>share</th></tr>"
             f"{rows}</table>{more}") if flagged else ""
    checks = []
    if view.mask_iou is not None:
        verdict = "matches" if view.mask_iou >= 0.999 else "differs from"
        checks.append(f"re-analysis {verdict} the shard's artifact mask (IoU {view.mask_iou:.3f})")
    if view.note:
        checks.append(view.note)
    notes = "".join(f"<p class='muted'>{esc(c)}</p>" for c in checks)
    cache[view.pair_id] = f"<div class='pics'>{''.join(figures)}</div>{table}{notes}"
    return cache[view.pair_id]


def _sample_card(sample: dict, view: PairView, writer: Pictures, tree: ConceptTree, cache: dict) -> str:
    """`cache` holds each pair's pictures, drawn once for all its samples."""
    from schemas.masks import decode_mask

    image = _decode_png(sample["image"]["bytes"])
    masks = [decode_mask(m) for m in sample["masks"]]
    regions = [decode_mask(m) for m in sample["region_masks"]]
    seg = writer.save(seg_overlay(image, masks, regions, sample["bbox"]), f"{sample['sample_id']}_seg")
    legend = "".join(
        f'<li><span class="swatch" style="background:{_rgb(SEG_COLOURS[i % len(SEG_COLOURS)])}"></span>'
        f'SEG {i + 1}: {esc(tree[c].name if c in tree.by_id else c)}</li>'
        for i, c in enumerate(sample["concepts"][:len(masks)]))
    turns = "".join(
        f"<div class='turn {'human' if t['from'] == 'human' else 'gpt'}'><b>{esc(t['from'])}</b> "
        f"{grounded_html(t['value']) if t['from'] != 'human' else esc(t['value']).replace(chr(10), '<br>')}</div>"
        for t in sample["conversations"])
    rating = sample.get("rating")
    rating_html = ""
    if rating:
        scores = " · ".join(f"{k.replace('_', ' ')} <b>{rating[k]}</b>" for k in
                            ("label_accuracy", "image_consistency", "evidence_consistency", "overall"))
        rating_html = f"<p class='rating'>rating: {scores}</p><p class='muted'>{esc(rating.get('reason', ''))}</p>"
    hallucinated = sample.get("hallucinated_concepts") or []
    hall_html = (f"<p class='bad'>hallucinated concepts: {esc(', '.join(hallucinated))}</p>"
                 if hallucinated else "<p class='good'>no hallucinated concept</p>")
    prov = sample["provenance"]
    tags = [sample["task"], sample["split"], "fake" if sample["is_fake"] else "real",
            "negative" if sample["negative"] else "", sample["category"], sample["method"]]
    describer = prov["describer"] + (f" ({prov['model']})" if prov.get("model") else "")
    return f"""
<section class="card" id="s-{esc(sample['sample_id'])}" data-task="{esc(sample['task'])}">
  <h3>{esc(sample['task'])} · pair {esc(sample['pair_id'])} <span class="muted">sample {esc(sample['sample_id'])}</span></h3>
  <p class="tags">{' '.join(f'<span class="tag">{esc(t)}</span>' for t in tags if t)}
     <span class="muted">describer {esc(describer)} · manifest {esc(prov['manifest'])} row {prov['row']}</span></p>
  {_pair_pictures(view, writer, tree, cache)}
  <div class="sample">
    {figure_html(seg, sample_caption(len(masks), len(regions), sample["bbox"] is not None))}
    <div class="conv">{turns}<ul class="legend">{legend}</ul>{rating_html}{hall_html}</div>
  </div>
</section>"""


def sample_caption(masks: int, regions: int, box: bool) -> str:
    """What the sample's picture (`seg_overlay`) shows: only a sample with masks claims them."""
    if masks:
        text = "this sample's [SEG] masks"
    elif regions:
        text = "the regions of this sample's concepts"
    else:
        text = "this sample's image"
    return text + (" and its box" if box else "")


# --- rejected rows ------------------------------------------------------------------------------


def _rejected_section(output: Path, report: dict, selection: Selection, writer: Pictures,
                      tree: ConceptTree) -> str:
    import datasets

    path = output / "rejected"
    if not path.exists():
        return "<p>no rejected table in this output</p>"
    table = datasets.load_from_disk(str(path))
    inputs = _InputPaths(report)
    rows = []
    for i, row in enumerate(table):
        if i >= 5000:
            rows.append(f"<tr><td colspan='6' class='muted'>{len(table) - i} more rows not shown</td></tr>")
            break
        pictures = ""
        if i < selection.max_rejected:
            pictures = "".join(_input_thumb(inputs.path(row, side), writer, f"rej_{row['pair_id']}_{side}_{i}")
                               for side in ("real", "fake"))
        rating = row.get("rating")
        extra = (f"<br>rating overall {rating['overall']}: {esc(rating.get('reason', ''))}" if rating else "")
        if row.get("hallucinated_concepts"):
            extra += f"<br><span class='bad'>hallucinated: {esc(', '.join(row['hallucinated_concepts']))}</span>"
        if row.get("texts"):
            extra += _judged_texts(row["texts"], row.get("hallucinated_concepts") or [], tree)
        rows.append(f"<tr><td>{esc(row['pair_id'])}</td><td>{esc(row['stage'])}</td><td><b>{esc(row['reason'])}</b></td>"
                    f"<td>{esc(row['detail'])}{extra}</td><td>{esc(row.get('manifest') or '')}:{row.get('row')}</td>"
                    f"<td class='thumbs'>{pictures}</td></tr>")
    return ("<table><tr><th>pair</th><th>stage</th><th>reason</th><th>detail</th><th>manifest:row</th>"
            f"<th>inputs</th></tr>{''.join(rows)}</table>")


def _judged_texts(texts: list[dict], hallucinated: list[str], tree: ConceptTree) -> str:
    """The texts a rate-stage reject was judged on, folded; the names of hallucinated
    concepts marked where the texts use them."""
    from fict.mentions import matcher_for

    matcher = matcher_for(tree)
    items = []
    for t in texts:
        text, marked, last = t["text"], [], 0
        for start, end, node_id in _spans(matcher, text, set(hallucinated)):
            marked += [esc(text[last:start]), f"<mark>{esc(text[start:end])}</mark>"]
            last = end
        marked.append(esc(text[last:]))
        about = tree[t["concept"]].name if t.get("concept") in tree.by_id else "the image"
        items.append(f"<li><b>{esc(about)}</b>: {''.join(marked)}</li>")
    return f"<details><summary>the {len(texts)} judged texts</summary><ul class='judged'>{''.join(items)}</ul></details>"


def _spans(matcher, text: str, wanted: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, node id) of the mentions of `wanted` concepts in `text`."""
    return [(m.start, m.end, m.node_id) for m in matcher.find(text) if m.node_id in wanted]


class _InputPaths:
    """Where a rejected row's input images lie: the table holds `real` and `fake` as the
    manifest wrote them, relative to the manifest's folder (under the run's path rule)."""

    def __init__(self, report: dict):
        from pipelines.common.manifest import manifest_name

        self.manifests = {manifest_name(m): m for m in report.get("manifests", [])}
        self.allow_absolute = bool(report.get("options", {}).get("allow_absolute_paths"))

    def path(self, row: dict, side: str) -> str | None:
        from pipelines.common.manifest import resolve

        ref, manifest = row.get(side), self.manifests.get(row.get("manifest") or "")
        if not ref or manifest is None:
            return None
        try:
            return resolve(manifest, ref, self.allow_absolute)
        except ValueError:  # a path the run refused to read (path_outside_manifest)
            return None


def _input_thumb(path: str | None, writer: Pictures, name: str) -> str:
    """A small picture of a rejected row's input image, when it can still be read."""
    if not path:
        return ""
    from pipelines.vision.images import read_image

    try:
        image = read_image(path)
    except Exception:  # noqa: BLE001 - unreadable inputs are often why the row was rejected
        return "<span class='muted'>(unreadable)</span>"
    return f'<img class="thumb" src="{esc(writer.save(image, name, side=128))}" alt="{esc(path)}">'


# --- the dataset: plots and the concept tree ----------------------------------------------------


def _plots(report: dict, tree: ConceptTree, writer: Pictures) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = []

    def counts_on(axis) -> None:  # counts are whole numbers: no 0.5 ticks on a small run
        axis.set_major_locator(MaxNLocator(integer=True))

    by_task = report["samples"]["by_task_and_split"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(TASKS))
    for j, split in enumerate(SPLITS):
        ax.bar(x + (j - 0.5) * 0.4, [by_task.get(t, {}).get(split, 0) for t in TASKS], 0.4, label=split)
    ax.set_xticks(x, TASKS)
    counts_on(ax.yaxis)
    ax.set_ylabel("samples")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("samples per task and split")
    plots.append(("samples per task and split", writer.figure(fig, "plot_tasks")))

    concepts = report.get("concepts")
    if concepts:
        flagged = sorted(((n, c) for c, n in concepts["flagged_pairs"].items() if n), reverse=True)[:30]
        if flagged:
            fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(flagged))))
            names = [tree[c].name if c in tree.by_id else c for _, c in flagged][::-1]
            colours = ["#3a7" if tree.by_id.get(c) and tree[c].atomic else "#37a" for _, c in flagged][::-1]
            ax.barh(names, [n for n, _ in flagged][::-1], color=colours)
            counts_on(ax.xaxis)
            ax.set_xlabel("pairs flagged (green: atomic, blue: parent)")
            ax.set_title(f"concept frequency (top {len(flagged)})")
            ax.tick_params(axis="y", labelsize=7)
            plots.append(("concept frequency", writer.figure(fig, "plot_concepts")))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3))
        for ax, key, title in ((axes[0], "coverage_histogram", "coverage of flagged atomic concepts"),
                               (axes[1], "changed_face_histogram", "changed fraction of the face")):
            hist = concepts[key]
            ax.bar(range(len(hist)), list(hist.values()), color="#a53")
            ax.set_xticks(range(len(hist)), [k.split("-")[0] for k in hist], fontsize=7)
            counts_on(ax.yaxis)
            ax.set_title(title, fontsize=10)
        axes[0].set_ylabel("count")
        plots.append(("coverage", writer.figure(fig, "plot_coverage")))

    plots += ratings_and_rejects_plots(report, writer)
    return plots


def ratings_and_rejects_plots(report: dict, writer: Pictures) -> list[tuple[str, str]]:
    """The rating histograms (the bar dashed) and the reject reasons of a run, as plots;
    any pipeline's report has both sections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = []
    ratings = report.get("ratings")
    if ratings and ratings.get("pairs_rated"):
        fig, axes = plt.subplots(1, len(ratings["histograms"]), figsize=(10, 2.6), sharey=True)
        for ax, (criterion, hist) in zip(np.atleast_1d(axes), ratings["histograms"].items(), strict=True):
            ax.bar([int(s) for s in hist], list(hist.values()), color="#57c")
            ax.axvline(ratings["min_rating"] - 0.5, color="#c33", lw=1, ls="--")
            ax.set_title(criterion.replace("_", " "), fontsize=9)
            ax.set_xticks(range(1, 11))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
        plots.append(("rating histograms (dashed: --min_rating)", writer.figure(fig, "plot_ratings")))

    reasons = report["rejected"]["by_stage_and_reason"]
    items = [(f"{stage}: {reason}", n) for stage, by in reasons.items() for reason, n in by.items() if n]
    if items:
        fig, ax = plt.subplots(figsize=(8, max(2, 0.3 * len(items))))
        ax.barh([k for k, _ in items][::-1], [n for _, n in items][::-1], color="#c55")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("inputs")
        ax.set_title("reject reasons")
        plots.append(("reject reasons", writer.figure(fig, "plot_rejects")))
    return plots


def tree_html(tree: ConceptTree, flagged: dict[str, int], pairs: int) -> str:
    """The FICT one node a line, indented by level, with the pairs it was flagged in.
    Below a node that was never flagged nothing was either, so its subtree is folded
    into a count."""
    lines = []

    def visit(node_id: str) -> None:
        node = tree[node_id]
        n = flagged.get(node_id, 0)
        below = len(tree.atomic_descendants(node_id)) if node.children else 0
        share = n / pairs if pairs else 0.0
        folded = f" <span class='muted'>(+{below} atomic, none flagged)</span>" if node.children and not n else ""
        lines.append(
            f'<div class="node {"hit" if n else "miss"}" style="padding-left:{12 * (node.level - 1)}px" '
            f'title="{esc(node.id)}"><span class="name">{esc(node.name)}{folded}</span>'
            f'<span class="bar"><span style="width:{100 * share:.0f}%"></span></span><span class="n">{n}</span></div>')
        if n:
            for child in node.children:
                visit(child)

    visit(tree.root.id)
    return f"<div class='tree'>{''.join(lines)}</div>"


# --- the page -----------------------------------------------------------------------------------

# The page's style (the FaceInstruct page shares it).
STYLE = """body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { margin: 0 0 4px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; background: #fff; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.small { font-size: 12px; margin: 6px 0; }
.muted { color: #777; font-size: 12px; } .bad { color: #b00; font-weight: 600; } .good { color: #070; }
.plots figure, .pics figure, .sample figure { display: inline-block; margin: 4px 8px 4px 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; text-align: center; }
.pics img, .sample img { width: @THUMB@px; height: @THUMB@px; object-fit: contain; background: #000; border-radius: 3px; }
.plots img { max-width: 820px; background: #fff; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; margin: 14px 0; }
.card h3 { margin: 0 0 4px; } .tag { background: #eef; border-radius: 3px; padding: 0 6px; margin-right: 4px; font-size: 12px; }
.sample { display: flex; gap: 12px; align-items: flex-start; } .conv { flex: 1; }
.turn { margin: 4px 0; padding: 6px 8px; border-radius: 4px; } .turn.human { background: #f1f1f1; } .turn.gpt { background: #f6fbff; }
.phrase { padding: 0 2px; } .seg { color: #fff; font-size: 10px; font-weight: 700; border-radius: 3px; padding: 0 4px; margin-left: 2px; }
.legend { list-style: none; padding: 0; font-size: 12px; } .swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }
.tree { column-count: 3; column-gap: 28px; background: #fff; border: 1px solid #ddd; padding: 8px; font-size: 12px; }
.node { display: flex; align-items: center; gap: 6px; break-inside: avoid; white-space: nowrap; }
.node .name { flex: 1; overflow: hidden; text-overflow: ellipsis; } .node .n { width: 40px; text-align: right; }
.hit { font-weight: 600; } .miss { color: #999; font-weight: 400; }
.bar { display: inline-block; width: 70px; height: 8px; background: #eee; flex: none; }
.bar span { display: block; height: 8px; background: #d55; }
td.thumbs { white-space: nowrap; } mark { background: #fbb; } ul.judged { margin: 4px 0; padding-left: 18px; font-size: 12px; } img.thumb { width: 64px; height: 64px; object-fit: cover; margin-right: 4px; }
nav { position: sticky; top: 0; background: #fafafa; padding: 6px 0; border-bottom: 1px solid #ddd; z-index: 1; }
h3.task { margin-top: 24px; }
pre { background: #fff; border: 1px solid #ddd; padding: 8px; font-size: 12px; overflow-x: auto; }
""".replace("@THUMB@", str(THUMB))


def _summary_table(report: dict) -> str:
    rows = [("inputs", report["inputs"]), ("pairs written", report["pairs_written"]),
            ("pairs rejected", report["pairs_rejected"]), ("adds up", report["adds_up"]),
            ("samples", report["samples"]["total"])]
    rows += [(f"samples ({split})", n) for split, n in report["samples"]["by_split"].items()]
    hall = report.get("hallucination")
    if hall:
        share = f"{hall['texts_hallucinating']} of {hall['texts']} ({100 * hall['rate']:.2f}%)"
        rows.append(("texts naming an unflagged concept", share))
        rows.append(("texts naming none of their concepts", hall.get("texts_ungrounded", 0)))
    llm = report.get("llm")
    if llm:
        rows.append(("describer / rater", f"{llm['describer']} / {llm['rater']}"))
        if llm.get("by_model"):
            rows.append(("LLM calls (cache hits)", f"{llm['calls']} ({llm['cache_hits']})"))
            rows.append(("LLM cost (USD)", llm["cost_usd"]))
    ratings = report.get("ratings")
    if ratings and ratings.get("pairs_rated"):
        means = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ratings["mean"].items())
        rows.append(("mean ratings", means))
    rows.append(("FICT version", report.get("fict_version", "?")))
    rows.append(("facext", f"{report['facext_version']} (options {report['options_hash']})"))
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _page(output: Path, report: dict, tree: ConceptTree, selection: Selection, cards: dict[str, list[str]],
          rejected_html: str, plots: list[tuple[str, str]]) -> str:
    concepts = report.get("concepts", {}).get("flagged_pairs", {})
    tree_part = (tree_html(tree, concepts, report["pairs_written"]) if concepts
                 else "<p class='muted'>this run's report has no concept counts (made before facext 0.1 "
                      "wrote them)</p>")
    what = [f"{selection.per_task} per task"]
    if selection.tasks:
        what.append("tasks " + ", ".join(selection.tasks))
    if selection.concepts:
        what.append("concepts " + ", ".join(selection.concepts))
    options = esc(json.dumps(report.get("options", {}), indent=1))
    plot_html = "".join(figure_html(src, title) for title, src in plots)
    rejected = f"<h2 id='rejected'>Rejected inputs</h2>{rejected_html}" if selection.rejected else ""
    shown = sum(len(c) for c in cards.values())
    groups = "".join(f"<h3 class='task' id='task-{task}'>{esc(TASK_TITLES[task])} ({len(group)})</h3>"
                     + "".join(group) for task, group in cards.items())
    links = [("#run", "run"), ("#dataset", "dataset"), ("#tree", "concept tree"), ("#samples", "samples"),
             *((f"#task-{task}", task) for task in cards)]
    if selection.rejected:
        links.append(("#rejected", f"rejected ({report['pairs_rejected']})"))
    nav = " · ".join(f'<a href="{href}">{esc(text)}</a>' for href, text in links)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>facext report: {esc(output.name)}</title>
<style>
{STYLE}</style></head>
<body>
<h1>FiFa-Instruct run: {esc(output.name)}</h1>
<p class="muted">{esc(report.get('input', ''))} → {esc(report.get('output', ''))} · status {esc(report.get('status', 'complete'))}</p>
<nav>{nav}</nav>
<h2 id="run">Run</h2>
{_summary_table(report)}
<details><summary>pipeline options</summary><pre>{options}</pre></details>
<h2 id="dataset">Dataset</h2>
<div class="plots">{plot_html}</div>
<h3 id="tree">Concept tree: pairs in which each node was flagged</h3>
{tree_part}
<h2 id="samples">Samples ({shown}: {esc('; '.join(what))})</h2>
{groups or '<p>no sample matches the selection</p>'}
{rejected}
</body></html>
"""

"""`facext bench fidelity`: how well the artifact mask finds what an edit changed, on
pairs whose truth is known, per edit family.

Two sets are measured the same way:

* `independent`: `build_tools.bench.fidelity_set`, written apart from the analysis and its
  own generator (other edit families, soft 1-3 px borders, JPEG 80-95 on both images,
  resampling, framing jitter, identical and globally changed pairs), with a `tune` and a
  `report` half: thresholds are chosen on `tune`, targets are read on `report`;
* `sample`: `facext sample-data` pairs (the generator the analysis grew up with).

A row's truth is the set of pixels the edit changed by more than 4 grey levels in some
channel before compression (`gt_mask`, original pixels), mapped into the crop.  For each
pair the bench runs `PairAnalyzer` and records its outcome as the pipeline would see it:
`ok`, a rejection reason, or `no_artifact` when no concept is flagged.  The targets:

* mean IoU of local edits >= 0.85, and no family below 0.70 (pairs whose truth has at
  least `MIN_SCORED_PX` pixels in the crop);
* no local pair with at least 200 changed pixels ends as `no_artifact`;
* identical and re-encoded pairs flag under 0.2 % of the crop;
* no globally changed pair comes back `ok`.

Each scored pair also gets a `ceiling`: the best IoU a thresholded difference reaches when
its parameters are chosen per pair by looking at that pair's truth (`ceiling_iou`).  No
method that sees only the two images can be expected above it, so it says how much of a
family's truth is there to find after compression, and how much of that the mask finds.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

MIN_SCORED_PX = 24  # a truth smaller than the mask's smallest kept component is not scored
NO_ARTIFACT_MIN_PX = 200  # a good pair with this many changed pixels must not be dropped
TARGETS = {"mean_iou": 0.85, "min_family_iou": 0.70, "empty_flagged_fraction": 0.002}
GLOBAL_REASONS = ("global_change", "not_localized")


def _rows(pairs_dir: Path) -> list[dict]:
    lines = (pairs_dir / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def expectation(row: dict) -> str | None:
    """`local`, `empty` or `global` for a row the bench can score, else None (the sample
    set's bad pairs, which other tests cover)."""
    if row.get("expect"):
        return row["expect"]
    if row.get("expected_reject") or not row.get("gt_mask"):
        return None
    return "local"


def measure_pair(analyzer, pairs_dir: Path, row: dict) -> dict:
    """One pair's outcome and, where the crop exists, IoU, precision and recall of its mask."""
    result = analyzer.analyze_files(pairs_dir / row["real"], pairs_dir / row["fake"])
    analysis = result.analysis
    outcome = analysis.status if result.ok else analysis.reason.value
    if analysis.flags_nothing:
        outcome = "no_artifact"  # as the pipeline refuses it
    out = {"pair_id": row["pair_id"], "family": row.get("family") or row.get("method"),
           "split": row.get("split", "report"), "expect": expectation(row), "outcome": outcome,
           "detail": analysis.detail}
    if result.geometry is None:
        return out
    truth_full = cv2.imread(str(pairs_dir / row["gt_mask"]), cv2.IMREAD_GRAYSCALE) if row.get("gt_mask") else None
    w, h = result.geometry.crop_size
    if truth_full is None:
        truth = np.zeros((h, w), bool)
    else:
        truth = result.geometry.warp((truth_full > 0).astype(np.uint8), cv2.INTER_NEAREST) > 0
    mask = result.artifact_mask if result.artifact_mask is not None else np.zeros((h, w), bool)
    inter, union = int(np.count_nonzero(mask & truth)), int(np.count_nonzero(mask | truth))
    flagged, true_px = int(np.count_nonzero(mask)), int(np.count_nonzero(truth))
    out.update(truth_px=true_px, flagged_px=flagged, flagged_fraction=round(flagged / (w * h), 6),
               iou=round(inter / union, 4) if union else None,
               precision=round(inter / flagged, 4) if flagged else None,
               recall=round(inter / true_px, 4) if true_px else None,
               changed_face_fraction=analysis.changed_face_fraction)
    if out["expect"] == "local" and true_px >= MIN_SCORED_PX and result.real_crop is not None:
        out["ceiling"] = ceiling_iou(result.real_crop, result.fake_crop, truth)
    return out


# The ceiling's search: Gaussian smoothing of the signed difference, a threshold on its
# largest channel, and hysteresis (components above `low` that reach `high`).
CEILING_SIGMAS = (0.0, 1.0, 1.5, 2.0, 3.0)
CEILING_THRESHOLDS = np.arange(1.0, 14.01, 0.5)
CEILING_HYSTERESIS = ((2, 3, 4, 5), (6, 8, 10, 14))


def ceiling_iou(real: np.ndarray, fake: np.ndarray, truth: np.ndarray) -> float:
    """The best IoU against `truth` over the search above, chosen with the truth itself."""
    diff = fake.astype(np.float32) - real.astype(np.float32)
    n_true, best = int(np.count_nonzero(truth)), 0.0
    for sigma in CEILING_SIGMAS:
        change = np.abs(cv2.GaussianBlur(diff, (0, 0), sigma) if sigma else diff).max(axis=2)
        # every threshold at once: flagged and true-and-flagged counts above each level
        above_true = (change[truth][:, None] > CEILING_THRESHOLDS).sum(axis=0)
        above = (change.ravel()[:, None] > CEILING_THRESHOLDS).sum(axis=0)
        best = max(best, float(np.max(above_true / np.maximum(above + n_true - above_true, 1))))
        for low in CEILING_HYSTERESIS[0]:
            count, labels = cv2.connectedComponents((change > low).astype(np.uint8), connectivity=8)
            peak = np.zeros(count, np.float32)
            np.maximum.at(peak, labels.ravel(), change.ravel())
            for high in CEILING_HYSTERESIS[1]:
                keep = peak > high
                keep[0] = False
                flagged = keep[labels]
                union = np.count_nonzero(flagged | truth)
                best = max(best, np.count_nonzero(flagged & truth) / union if union else 0.0)
    return round(best, 4)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def summarise(pairs: list[dict]) -> dict:
    """Per-family table and the targets over a list of measured pairs."""
    families: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        families[p["family"]].append(p)
    table = {}
    for family, rows in sorted(families.items()):
        scored = [r for r in rows if r["expect"] == "local" and r.get("truth_px", 0) >= MIN_SCORED_PX]
        outcomes: dict[str, int] = defaultdict(int)
        for r in rows:
            outcomes[r["outcome"]] += 1
        table[family] = {
            "expect": rows[0]["expect"], "pairs": len(rows), "scored": len(scored),
            # a local pair rejected at a gate (no crop, or a crop and no mask) scores 0
            "iou": _mean([r["iou"] or 0.0 for r in scored]),
            "ceiling": _mean([r["ceiling"] for r in scored if "ceiling" in r]),
            "precision": _mean([r["precision"] for r in scored if r.get("precision") is not None]),
            "recall": _mean([r["recall"] or 0.0 for r in scored]),
            "max_flagged_fraction": max((r.get("flagged_fraction", 0.0) for r in rows), default=0.0),
            "outcomes": dict(sorted(outcomes.items())),
        }
    local = [r for r in pairs if r["expect"] == "local" and r.get("truth_px", 0) >= MIN_SCORED_PX]
    family_ious = {f: t["iou"] for f, t in table.items() if t["expect"] == "local" and t["iou"] is not None}
    dropped = [r["pair_id"] for r in pairs if r["expect"] == "local" and r["outcome"] == "no_artifact"
               and r.get("truth_px", 0) >= NO_ARTIFACT_MIN_PX]
    empty = [r for r in pairs if r["expect"] == "empty"]
    empty_worst = max((r.get("flagged_fraction", 0.0) if r["outcome"] == "ok" else 0.0 for r in empty), default=0.0)
    global_ok = [r["pair_id"] for r in pairs if r["expect"] == "global" and r["outcome"] == "ok"]
    mean_iou = _mean([r["iou"] or 0.0 for r in local])
    min_family = min(family_ious.values(), default=None)
    checks = {
        "mean_iou": mean_iou is not None and mean_iou >= TARGETS["mean_iou"],
        "min_family_iou": min_family is not None and min_family >= TARGETS["min_family_iou"],
        "no_good_pair_dropped": not dropped,
        "empty_pairs_clean": empty_worst < TARGETS["empty_flagged_fraction"],
        "no_global_change_ok": not global_ok,
    }
    return {
        "pairs": len(pairs), "scored_local_pairs": len(local), "mean_iou": mean_iou,
        "mean_ceiling": _mean([r["ceiling"] for r in local if "ceiling" in r]),
        "mean_precision": _mean([r["precision"] for r in local if r.get("precision") is not None]),
        "mean_recall": _mean([r["recall"] or 0.0 for r in local]),
        "min_family_iou": min_family, "good_pairs_dropped_as_no_artifact": dropped,
        "empty_pairs": len(empty), "empty_max_flagged_fraction": empty_worst,
        "global_pairs": sum(r["expect"] == "global" for r in pairs), "global_pairs_ok": global_ok,
        "targets": TARGETS, "met": checks, "all_met": all(checks.values()), "families": table,
    }


def measure_set(pairs_dir: Path, analyzer=None, progress: bool = False) -> list[dict]:
    """Every scorable row of the folder's manifest, measured."""
    from pipelines.fifa.analysis import PairAnalyzer

    rows = [r for r in _rows(pairs_dir) if expectation(r) is not None]
    own = analyzer is None
    analyzer = analyzer or PairAnalyzer()
    try:
        out = []
        for i, row in enumerate(rows):
            out.append(measure_pair(analyzer, pairs_dir, row))
            if progress and (i + 1) % 20 == 0:
                print(f"  {i + 1}/{len(rows)} pairs", flush=True)
        return out
    finally:
        if own:
            analyzer.close()


def bench_fidelity(independent: Path, sample: Path, progress: bool = False) -> dict:
    """Both sets, the independent one by split (`tune`, `report`), the sample one whole."""
    from pipelines.fifa.analysis import PairAnalyzer

    with PairAnalyzer() as analyzer:
        ind = measure_set(independent, analyzer, progress)
        smp = measure_set(sample, analyzer, progress)
    return {
        "independent": {split: summarise([p for p in ind if p["split"] == split]) for split in ("tune", "report")},
        "sample": summarise(smp),
        "pairs": {"independent": ind, "sample": smp},
    }


def figure(pairs_dir: Path, path: str, count: int = 3) -> list[str]:
    """The hysteresis mask step by step (`build_tools.render.render_mask_steps`) on the
    first `count` local pairs of the folder's manifest; returns their pair ids."""
    from build_tools.render import render_mask_steps
    from pipelines.fifa.analysis import PairAnalyzer, read_pair

    rows = [r for r in _rows(pairs_dir) if expectation(r) == "local"][:count]
    panels = []
    with PairAnalyzer() as analyzer:
        for row in rows:
            located = analyzer.locate(*read_pair(pairs_dir / row["real"], pairs_dir / row["fake"]))
            truth = cv2.imread(str(pairs_dir / row["gt_mask"]), cv2.IMREAD_GRAYSCALE) > 0
            truth = located.geometry.warp(truth.astype(np.uint8), cv2.INTER_NEAREST) > 0
            title = row.get("family") or row.get("method")
            if "amplitude" in row:
                title += f" ({row['amplitude']} levels, {row.get('encoding', '')})"
            panels.append((title, located.real_crop, located.fake_crop, located.valid, truth))
    render_mask_steps(panels, path)
    return [r["pair_id"] for r in rows]


def table_text(summary: dict, title: str) -> str:
    """A per-family table as plain text, then the targets."""
    lines = [(f"{title}: mean IoU {summary['mean_iou']} over {summary['scored_local_pairs']} local pairs "
              f"(precision {summary['mean_precision']}, recall {summary['mean_recall']}; "
              f"ceiling {summary['mean_ceiling']})"),
             f"  {'family':<26}{'pairs':>6}{'IoU':>8}{'ceiling':>8}{'prec':>8}{'recall':>8}  outcomes"]
    for family, t in summary["families"].items():
        iou = "-" if t["iou"] is None else f"{t['iou']:.3f}"
        ceiling = "-" if t.get("ceiling") is None else f"{t['ceiling']:.3f}"
        prec = "-" if t["precision"] is None else f"{t['precision']:.3f}"
        rec = "-" if t["recall"] is None or t["expect"] != "local" else f"{t['recall']:.3f}"
        outcomes = ", ".join(f"{k} {v}" for k, v in t["outcomes"].items())
        lines.append(f"  {family:<26}{t['pairs']:>6}{iou:>8}{ceiling:>8}{prec:>8}{rec:>8}  {outcomes}")
    met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in summary["met"].items())
    lines.append(f"  targets met: {met}")
    if summary["good_pairs_dropped_as_no_artifact"]:
        lines.append(f"  good pairs dropped as no_artifact: {', '.join(summary['good_pairs_dropped_as_no_artifact'])}")
    if summary["global_pairs_ok"]:
        lines.append(f"  global changes passed as ok: {', '.join(summary['global_pairs_ok'])}")
    lines.append(f"  identical/re-encoded pairs: at most {100 * summary['empty_max_flagged_fraction']:.3f} % "
                 f"of the crop flagged")
    return "\n".join(lines)

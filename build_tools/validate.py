"""`facext validate OUTPUT`: check a pipeline's output folder and summarise it (FiFa-Instruct
here; FaceInstruct in `build_tools.validate_faceinstruct`).

Checks the schema against `schemas.FifaImage` (a row per distinct crop, each crop once,
with the samples about it), every sample's internal consistency
(one decodable mask per `[SEG]`, grounded phrases naming their concepts in order,
boxes inside the image, the question's placeholders), ratings (only on the answers that
were rated) and hallucinated concepts within the run's bars, that splits are disjoint by identity, shard sizes, the rejected table, and that the run report adds up and matches
the rows on disk.  Returns the problems found (empty when the output is valid).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.common import RejectReason, Stage
from schemas.fifa import SPLITS, TASKS, FifaImage, RejectedRow, flat_samples

GROUNDED = re.compile(r"<p>\s*(.*?)\s*</p>\s*\[SEG\]")
MAX_PROBLEMS_SHOWN = 20


@dataclass
class Validation:
    problems: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    rows: dict[str, int] = field(default_factory=dict)  # samples per split
    images: dict[str, int] = field(default_factory=dict)  # shard rows (distinct crops) per split
    rejected: Counter = field(default_factory=Counter)

    def fail(self, message: str) -> None:
        self.problems.append(message)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_sample(row: dict, split: str, tree, out: Validation, image_size) -> None:
    from schemas.masks import decode_mask

    sid = row["sample_id"]
    where = f"{split}/{sid} ({row['task']})"
    task = row["task"]
    if task not in TASKS:
        out.fail(f"{where}: unknown task")
        return
    if row["split"] != split:
        out.fail(f"{where}: split column says {row['split']!r}")
    conv = row["conversations"]
    if len(conv) < 2 or conv[0]["from"] != "human" or conv[1]["from"] != "gpt":
        out.fail(f"{where}: conversation is not human then gpt")
        return
    question, answer = conv[0]["value"], conv[1]["value"]
    if not row["is_fake"] and task != "det":
        out.fail(f"{where}: a real image in a {task} sample (only det asks about real images)")
    if row["negative"] and task[:2] not in ("r_", "b_"):
        out.fail(f"{where}: only region and box tasks have negatives")
    if not question.startswith("<image>"):
        out.fail(f"{where}: human turn does not start with <image>")
    if task.startswith("b_") != ("<bbox>" in question):
        out.fail(f"{where}: <bbox> in the question does not match the task")
    if task.startswith("b_") != (row["bbox"] is not None):
        out.fail(f"{where}: bbox column does not match the task")
    w, h = image_size
    if row["bbox"] is not None:
        x0, y0, x1, y1 = row["bbox"]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            out.fail(f"{where}: bbox {row['bbox']} outside the {w}x{h} image")
    if answer.count("[SEG]") != len(row["masks"]):
        out.fail(f"{where}: {answer.count('[SEG]')} [SEG] but {len(row['masks'])} masks")
    if len(row["region_masks"]) != len(row["concepts"]):
        out.fail(f"{where}: {len(row['concepts'])} concepts but {len(row['region_masks'])} region masks")
    if answer.count("<p>") != answer.count("</p>"):
        out.fail(f"{where}: unbalanced <p> </p>")
    for mask in row["masks"] + row["region_masks"]:
        try:
            decoded = decode_mask(mask)
        except ValueError as exc:
            out.fail(f"{where}: mask does not decode: {exc}")
            continue
        if decoded.shape != (h, w):
            out.fail(f"{where}: mask is {decoded.shape[1]}x{decoded.shape[0]}, image {w}x{h}")
    unknown = [c for c in row["concepts"] if c not in tree.by_id]
    if unknown:
        out.fail(f"{where}: unknown concepts {unknown}")
    elif task.endswith("_age"):
        named = GROUNDED.findall(answer)
        expected = [tree[c].name for c in row["concepts"]]
        if named and named != expected:
            out.fail(f"{where}: grounded phrases {named} are not the concepts {expected}")
    if len(row["crop_transform"]) != 2 or any(len(r) != 3 for r in row["crop_transform"]):
        out.fail(f"{where}: crop_transform is not 2x3")


def _check_one(row: dict, split: str, tree, out: Validation, image_size, seen_ids: set[str],
               min_rating, max_hallucinated, rated: bool) -> None:
    """One flat sample: its consistency, and its rating and named concepts against the run's bars."""
    from pipelines.fifa.samples import judged_answer

    if row["sample_id"] in seen_ids:
        out.fail(f"{split}/{row['sample_id']}: duplicate sample_id")
    seen_ids.add(row["sample_id"])
    _check_sample(row, split, tree, out, image_size)
    rating = row.get("rating")
    if min_rating is not None and rating and rating["overall"] < min_rating:
        out.fail(f"{split}/{row['sample_id']}: rated {rating['overall']}, below --min_rating {min_rating}")
    if rating and not judged_answer(row["task"], row["negative"]):
        out.fail(f"{split}/{row['sample_id']} ({row['task']}): carries the pair's rating, but its "
                 f"answer is not one of the rated texts")
    if rated and not rating and judged_answer(row["task"], row["negative"]):
        out.fail(f"{split}/{row['sample_id']} ({row['task']}): its answer was rated, the rating is missing")
    if max_hallucinated is not None and len(row.get("hallucinated_concepts") or []) > max_hallucinated:
        out.fail(f"{split}/{row['sample_id']}: names {row['hallucinated_concepts']} without artifacts "
                 f"(--max_hallucinated {max_hallucinated})")
    out.counts[(row["task"], split)] += 1


def validate(output: str | Path) -> Validation:
    """The checks of a FiFa-Instruct output (`facext validate` picks
    `build_tools.validate_faceinstruct` for a FaceInstruct one)."""
    import datasets
    import pyarrow as pa

    from fict.tree import load_tree
    from schemas.features import hf_features

    out = Validation()
    root = Path(output)
    tree = load_tree()
    try:
        dd = datasets.load_from_disk(str(root))
    except Exception as exc:  # noqa: BLE001 - report any load failure as a problem
        out.fail(f"datasets.load_from_disk({root}) failed: {exc}")
        return out
    expected = hf_features(FifaImage)
    options = (load_report(root) or {}).get("options", {})
    min_rating, max_hallucinated = options.get("min_rating"), options.get("max_hallucinated")
    rated = options.get("rater") not in (None, "none")  # then every judged answer has its rating
    identities: dict[str, set[str]] = {s: set() for s in SPLITS}
    pair_split: dict[str, str] = {}
    seen_ids: set[str] = set()
    seen_images: set[str] = set()
    for split in SPLITS:
        if split not in dd:
            out.fail(f"split {split!r} missing")
            continue
        ds = dd[split]
        if ds.features.to_dict() != expected.to_dict():
            out.fail(f"{split}: features differ from schemas.FifaImage")
            continue
        out.images[split], out.rows[split] = ds.num_rows, 0
        raw = ds.cast_column("image", datasets.Image(decode=False))
        for image_row in raw:
            image_id = image_row["image_id"]
            if image_id in seen_images:
                out.fail(f"{split}/{image_id}: duplicate image_id (a crop stored twice)")
            seen_images.add(image_id)
            image_size = _png_size(image_row["image"]["bytes"])
            if image_size is None:
                out.fail(f"{split}/{image_id}: image is not a PNG")
                continue
            if not image_row["samples"]:
                out.fail(f"{split}/{image_id}: an image with no sample")
            for row in flat_samples(image_row):
                out.rows[split] += 1
                _check_one(row, split, tree, out, image_size, seen_ids, min_rating, max_hallucinated, rated)
            identities[split].add(image_row["subject_id"] or image_row["pair_id"])
            if pair_split.setdefault(image_row["pair_id"], split) != split:
                out.fail(f"pair {image_row['pair_id']} has samples in both splits")
        check_shard_sizes(root / split, out)
    both = identities["train"] & identities["test"]
    if both:
        out.fail(f"{len(both)} identities in both train and test, e.g. {sorted(both)[:3]}")

    check_rejected_table(root, out, RejectedRow)
    _check_report(root, out, pair_split, pa)
    return out


def check_rejected_table(root: Path, out: Validation, row_type) -> None:
    """The rejected table: its columns are `row_type`'s, its stages and reasons are those
    `schemas.common` defines; counts them into `out.rejected`."""
    import datasets

    from schemas.features import hf_features

    try:
        rejected = datasets.load_from_disk(str(root / "rejected"))
        missing = [name for name in row_type.model_fields if name not in rejected.column_names]
        if missing:
            out.fail(f"rejected table lacks columns {missing}")
        if rejected.features.to_dict() != hf_features(row_type).to_dict():
            out.fail(f"rejected: features differ from schemas' {row_type.__name__}")
        out.rejected = Counter(zip(rejected["stage"], rejected["reason"], strict=True))
        stages, reasons = {s.value for s in Stage}, {r.value for r in RejectReason}
        unknown = sorted({f"{s}/{r}" for s, r in out.rejected if s not in stages or r not in reasons})
        if unknown:
            out.fail(f"rejected table holds stages or reasons schemas.common does not define: {unknown}")
    except Exception as exc:  # noqa: BLE001
        out.fail(f"rejected table does not load: {exc}")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if not data or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_shard_sizes(folder: Path, out: Validation) -> None:
    import pyarrow as pa

    report = load_report(folder.parent)
    limit = (report or {}).get("options", {}).get("max_rows_per_shard")
    for path in sorted(folder.glob("data-*.arrow")):
        with pa.memory_map(str(path)) as source:
            rows = pa.ipc.open_stream(source).read_all().num_rows
        if limit and rows > limit:
            out.fail(f"{path.name}: {rows} rows, more than --max_rows_per_shard {limit}")


def load_report(root: Path) -> dict | None:
    path = root / "run_report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _check_report(root: Path, out: Validation, pair_split: dict[str, str], pa) -> None:
    report = load_report(root)
    if report is None:
        out.fail("run_report.json missing")
        return
    if report.get("status") == "awaiting_batch":
        out.fail(f"the run awaits batch answers for {report.get('pairs_pending')} pairs: run again with "
                 f"--llm_batch collect")
    if report["inputs"] != report["pairs_written"] + report["pairs_rejected"]:
        out.fail(f"report: inputs {report['inputs']} != written {report['pairs_written']} + "
                 f"rejected {report['pairs_rejected']}")
    if report["pairs_written"] != len(pair_split):
        out.fail(f"report: {report['pairs_written']} pairs written, {len(pair_split)} pairs in the shards")
    if report["pairs_rejected"] != sum(out.rejected.values()):
        out.fail(f"report: {report['pairs_rejected']} rejected, {sum(out.rejected.values())} in the table")
    for split, n in out.rows.items():
        if report["samples"]["by_split"].get(split) != n:
            out.fail(f"report: {split} has {report['samples']['by_split'].get(split)} samples, disk {n}")
    for split, n in out.images.items():
        if (report.get("images") or {}).get("by_split", {}).get(split) != n:
            out.fail(f"report: {split} has {(report.get('images') or {}).get('by_split', {}).get(split)} images, "
                     f"disk {n}")
    for (task, split), n in out.counts.items():
        if report["samples"]["by_task_and_split"].get(task, {}).get(split) != n:
            out.fail(f"report: {task}/{split} count differs from disk ({n})")
    stage_total = sum(s["rejected"] for s in report["stages"])
    if stage_total != report["pairs_rejected"]:
        out.fail(f"report: stage rejections add to {stage_total}, not {report['pairs_rejected']}")


def summary(result: Validation, output: str | Path) -> str:
    lines = [f"{output}: {'valid' if result.ok else f'{len(result.problems)} problem(s)'}"]
    faceinstruct = (load_report(Path(output)) or {}).get("pipeline") == "faceinstruct_build"
    for split, n in result.rows.items():
        lines.append(f"  {split}: {n} samples" + ("" if faceinstruct else f" about {result.images.get(split, 0)} images"))
    tasks = Counter()
    for (task, _), n in result.counts.items():
        tasks[task] += n
    if faceinstruct:
        from schemas.faceinstruct import TASKS as FACE_TASKS

        names = FACE_TASKS
    else:
        names = TASKS
    lines.append("  tasks: " + ", ".join(f"{t} {tasks.get(t, 0)}" for t in names))
    reasons = Counter()
    for (_, reason), n in result.rejected.items():
        reasons[reason] += n
    lines.append("  rejected: " + (", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "none"))
    for problem in result.problems[:MAX_PROBLEMS_SHOWN]:
        lines.append(f"  ! {problem}")
    if len(result.problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(result.problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join(lines)

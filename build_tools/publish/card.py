"""The dataset card of a published run: the Hub's YAML metadata (configs, features,
splits, sizes, license, task categories, tags), written with `datasets`' own helpers,
and a page for people built from the run report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.common import RejectReason
from schemas.fifa import SPLITS, TASK_FAMILIES, FifaImage, TaskSample, family_of

REJECTED = "rejected"  # the rejected table's config, split and folder
DEFAULT_PRETTY_NAME = "FiFa-Instruct (facext)"
TASK_CATEGORIES = ["image-text-to-text", "visual-question-answering", "image-segmentation",
                   "image-classification"]
TAGS = ["deepfake-detection", "face-forgery", "explainable-ai", "face-manipulation", "instruction-tuning",
        "grounding", "segmentation-masks", "facext", "fifa-instruct"]


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if n < bound), "n>1B")


def card_data(configs: dict[str, dict[str, Any]], sample_features, rejected_features, *, license: str,
              pretty_name: str, task_categories: list[str] = TASK_CATEGORIES, tags: list[str] = TAGS):
    """The card's YAML metadata (`huggingface_hub.DatasetCardData`), filled with `datasets`'
    own writers so the Hub reads the configs and dataset_info as it reads push_to_hub's."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    samples = sum(v["samples"] for v in configs["default"]["splits"].values())
    data = DatasetCardData(
        language=["en"], license=license, pretty_name=pretty_name, size_categories=[size_category(samples)],
        task_categories=list(task_categories), tags=list(tags), annotations_creators=["machine-generated"],
    )
    infos, metadata = {}, {}
    for name, config in configs.items():
        splits = SplitDict()
        for split, numbers in config["splits"].items():
            splits.add(SplitInfo(name=split, num_bytes=numbers["num_bytes"], num_examples=numbers["rows"]))
        features = rejected_features if name == REJECTED else sample_features
        infos[name] = DatasetInfo(features=features, splits=splits, download_size=config["download_size"],
                                  dataset_size=config["dataset_size"], config_name=name)
        metadata[name] = {"data_files": config["data_files"], **({"default": True} if name == "default" else {})}
    MetadataConfigs(metadata).to_dataset_card_data(data)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def dataset_card(report: dict[str, Any], configs: dict[str, dict[str, Any]], sample_features,
                 rejected_features, *, license: str = "unknown", pretty_name: str = DEFAULT_PRETTY_NAME,
                 repo_id: str | None = None) -> str:
    """README.md of the exported dataset: metadata, then sections written from the run."""
    data = card_data(configs, sample_features, rejected_features, license=license, pretty_name=pretty_name)
    sections = [
        f"# {pretty_name}",
        _intro(report, configs),
        _configs_section(configs),
        _loading_section(configs, repo_id),
        _columns_section(sample_features),
        _built_section(report),
        _report_section(report),
        _limits_section(report),
        _citation_section(),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _fmt(value: Any) -> str:
    """A number as the report holds it (shortest exact form), a bool as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "n/a"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _describer(report: dict[str, Any], role: str) -> str:
    options = report["options"]
    name, model = options.get(role), options.get(f"{role}_model")
    if name == "evidence":
        return "`evidence` (offline, no language model)"
    return f"`{name}` with model `{model}`" if model else f"`{name}`"


def _intro(report: dict[str, Any], configs: dict[str, dict[str, Any]]) -> str:
    samples = report["samples"]
    crop = report["options"].get("crop_size")
    crop_text = f"{crop}×{crop} " if crop else ""
    return (
        f"FiFa-Instruct samples for fine-grained explainable deepfake analysis, made by facext's "
        f"`fifa_annotate` pipeline (an implementation of the data side of *Fake-in-Facext*, FiFa) from "
        f"{_fmt(report['inputs'])} real/fake face pairs: {_fmt(report['pairs_written'])} pairs gave "
        f"{_fmt(samples['total'])} samples over {len(samples['by_task'])} tasks, "
        f"{_fmt(report['pairs_rejected'])} pairs were rejected (table `rejected`, with stage and reason).\n\n"
        f"Each sample is one question–answer conversation about an aligned {crop_text}face crop (`image`). "
        f"Answers name the altered parts of the face with concepts of the Facial Image Concept Tree (FICT); "
        f"grounded answers mark each concept with `[SEG]`, and `masks` holds one artifact mask per `[SEG]` "
        f"(COCO RLE). The artifact masks come from the per-pixel difference between the fake and its real "
        f"source, and each concept's region from the face's landmarks.\n\n"
        f"Samples split into `train` ({_fmt(samples['by_split'].get('train', 0))}) and `test` "
        f"({_fmt(samples['by_split'].get('test', 0))}) by identity (subject, else pair), so no face is in both."
    )


def _configs_section(configs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, config in configs.items():
        tasks = ", ".join(f"`{t}`" for t in config["tasks"]) if name != REJECTED else "rejected pairs"
        counts = [(f"{_fmt(config['splits'][s]['samples'])} ({_fmt(config['splits'][s]['rows'])} images)"
                   if s != REJECTED else _fmt(config["splits"][s]["rows"])) if s in config["splits"] else "–"
                  for s in (*SPLITS, REJECTED)]
        files = sum(len(v["files"]) for v in config["splits"].values())
        rows.append([f"`{name}`", tasks, *counts, files, config["download_size"]])
    empty = [f"`{name}` {split}" for name, config in configs.items() for split in config["empty"]]
    missing = [f"`{name}`" for name in ("default", *TASK_FAMILIES, REJECTED) if name not in configs]
    notes = []
    if empty:
        notes.append(f"Splits without rows are left out of their config ({', '.join(empty)}): `datasets` "
                     f"cannot load an empty split.")
    if missing:
        notes.append(f"Configs without rows are left out: {', '.join(missing)}.")
    intro = ("A row is one aligned face crop (the real or the fake of a pair) with the list of samples "
             "asked about it, so each crop is stored once in a config. `default` holds every sample; each "
             "task family is a config of its own (its rows hold that family's samples only); `rejected` "
             "lists the pairs that gave no samples. Counts are samples, with their image rows.")
    return ("## Configurations\n\n" + " ".join([intro, *notes]) + "\n\n"
            + _table(["config", "tasks", *SPLITS, REJECTED, "files", "Parquet bytes"], rows))


def _loading_section(configs: dict[str, dict[str, Any]], repo_id: str | None) -> str:
    where = repo_id or "path/to/this/folder"
    families = [name for name in ("region", *TASK_FAMILIES) if name in configs]
    name = families[0]
    split = next(iter(configs[name]["splits"]))
    others = ", ".join(f'"{n}"' for n in ("default", *TASK_FAMILIES) if n in configs and n != name)
    return f"""## Loading

```python
from datasets import load_dataset

ds = load_dataset("{where}", "{name}", split="{split}")   # or {others}
row = ds[0]
row["image"]           # PIL image: the aligned face crop
sample = row["samples"][0]            # one of the questions about it
sample["task"], sample["conversations"]   # [{{"from": "human", "value": "<image>\\n..."}}, {{"from": "gpt", ...}}]
sample["concepts"]     # FICT concept ids, in [SEG] order

from schemas import decode_mask          # facext; or pycocotools.mask.decode
masks = [decode_mask(m) for m in sample["masks"]]   # one bool (height, width) array per [SEG]

from schemas.fifa import flat_dataset    # facext: one row per sample, each with its image
flat = flat_dataset(ds)
```

Masks (`masks`, `region_masks`) are COCO compressed RLE: `size` is `[height, width]` and `counts` the
column-major run lengths, zeros first, in the ASCII encoding `pycocotools.mask.encode` writes. Without
facext: `pycocotools.mask.decode({{"size": m["size"], "counts": m["counts"].encode()}})`.
`load_dataset("{where}", "rejected", split="rejected")` gives the rejected pairs."""




def _type_name(feature) -> str:
    from datasets import Image, List, Value

    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, List):
        return f"list of {_type_name(feature.feature)}"
    if isinstance(feature, dict):
        return "{" + ", ".join(feature) + "}"
    return type(feature).__name__


def _columns_section(features) -> str:
    rows = []
    for name, field in FifaImage.model_fields.items():
        key = field.alias or name
        note = field.description or ""
        rows.append([f"`{key}`", f"`{_type_name(features[key])}`", note.replace("|", "/")])
    sample = features["samples"].feature
    for name, field in TaskSample.model_fields.items():
        key = field.alias or name
        note = field.description or ""
        rows.append([f"`samples[].{key}`", f"`{_type_name(sample[key])}`", note.replace("|", "/")])
    return "## Columns\n\n" + _table(["column", "type", "what it holds"], rows)


def _built_section(report: dict[str, Any]) -> str:
    from fict.tree import load_tree

    tree = load_tree()
    if tree.version == report.get("fict_version"):
        fict = (f"FICT version {report['fict_version']}: {len(tree)} concepts, {len(tree.atomic)} atomic and "
                f"{len(tree) - len(tree.atomic)} parents, {tree.depth} levels")
    else:
        fict = f"FICT version {_fmt(report.get('fict_version'))}"
    options = report["options"]
    templates = report.get("prompt_templates", [])
    lines = [
        "## How it was built",
        "",
        f"* facext version: `{report.get('facext_version')}`, pipeline `{report['pipeline']}`",
        f"* options hash: `{report.get('options_hash')}` (a hash of the options below that shape the samples)",
        f"* concept tree: {fict}",
        f"* describer: {_describer(report, 'describer')}",
        (f"* rater: {_describer(report, 'rater')}; pairs rated below {_fmt(options.get('min_rating'))} overall "
         f"or naming more than {_fmt(options.get('max_hallucinated'))} concepts without an artifact are rejected"),
        f"* manifests: {', '.join(f'`{Path(m).name}`' for m in report.get('manifests', [])) or 'n/a'}",
        "",
        "### Options",
        "",
        _table(["option", "value"], [[f"`{k}`", f"`{_fmt(v)}`"] for k, v in options.items()]),
        "",
        "### Prompt templates",
        "",
        "Templates the written pairs used; the version is a hash of the template file's content.",
        "",
        _table(["template", "version", "pairs"], [[f"`{t['id']}`", f"`{t['version']}`", t["pairs"]]
                                                   for t in templates]) if templates else "No template recorded.",
    ]
    return "\n".join(lines)


def _report_section(report: dict[str, Any]) -> str:
    samples, rejected = report["samples"], report["rejected"]
    parts = [
        "## Run report",
        "From the run's `run_report.json`.",
        "### Inputs",
        _table(["quantity", "value"], [
            ["inputs", report["inputs"]], ["pairs written", report["pairs_written"]],
            ["pairs rejected", report["pairs_rejected"]], ["samples", samples["total"]],
            ["adds up", report["adds_up"]]]),
        "### Stages",
        _table(["stage", "in", "rejected", "out"],
               [[s["stage"], s["in"], s["rejected"], s["out"]] for s in report.get("stages", [])]),
        "### Rejects by stage and reason",
        _table(["stage", "reason", "pairs"],
               [[stage, reason, n] for stage, reasons in rejected["by_stage_and_reason"].items()
                for reason, n in reasons.items()]) if rejected["by_reason"] else "No pair was rejected.",
        "### Samples by task and split",
        _table(["task", "config", *SPLITS, "total"],
               [[f"`{task}`", f"`{family_of(task)}`", *(by.get(s, 0) for s in SPLITS), samples["by_task"].get(task, 0)]
                for task, by in samples["by_task_and_split"].items()]
               + [["total", "", *(samples["by_split"].get(s, 0) for s in SPLITS), samples["total"]]]),
        _concepts(report.get("concepts") or {}, report["pairs_written"]),
        _ratings(report.get("ratings") or {}),
        _hallucination(report.get("hallucination") or {}),
        _llm(report.get("llm") or {}),
    ]
    return "\n\n".join(p for p in parts if p)


def _concepts(concepts: dict[str, Any], pairs: int, top: int = 15) -> str:
    """The most flagged FICT concepts and the coverage histogram (runs before these counts
    were kept have none)."""
    from fict.tree import load_tree

    flagged = concepts.get("flagged_pairs") or {}
    if not flagged:
        return ""
    tree = load_tree()
    ranked = sorted(((n, c) for c, n in flagged.items() if n), key=lambda x: (-x[0], x[1]))
    atomic = sum(1 for _, c in ranked if c in tree.by_id and tree[c].atomic)
    rows = [[f"`{c}`", tree[c].name if c in tree.by_id else c, "atomic" if tree.by_id.get(c) and tree[c].atomic
             else "parent", n, f"{n / pairs:.0%}" if pairs else "n/a"] for n, c in ranked[:top]]
    hist = concepts.get("coverage_histogram") or {}
    return (f"### Concepts\n\n{len(ranked)} of {len(tree)} FICT concepts ({atomic} atomic) were flagged in at "
            f"least one written pair. The most flagged:\n\n"
            + _table(["concept", "name", "kind", "pairs", "share of pairs"], rows)
            + "\n\nCoverage `|A∩R| / |R|` of the flagged atomic concepts:\n\n"
            + _table(["coverage", *hist], [["concepts", *hist.values()]]))


def _ratings(ratings: dict[str, Any]) -> str:
    histograms = ratings.get("histograms") or {}
    scores = list(next(iter(histograms.values()), {}))
    head = (f"### Ratings\n\nRater `{ratings.get('rater')}`, {_fmt(ratings.get('pairs_rated'))} pairs rated "
            f"(kept or not), minimum overall rating kept {_fmt(ratings.get('min_rating'))}. Scores per criterion:")
    if not ratings.get("pairs_rated"):
        return head.rsplit(" Scores", 1)[0] + " No pair was rated."
    rows = [[f"`{c}`", ratings["mean"].get(c), *(h.get(s, 0) for s in scores)] for c, h in histograms.items()]
    return head + "\n\n" + _table(["criterion", "mean", *scores], rows)


def _hallucination(h: dict[str, Any]) -> str:
    return ("### Hallucination check\n\nTexts that name a FICT concept in which no artifact was measured:\n\n"
            + _table(["measure", "checked", "hallucinating", "rate"], [
                ["texts", h.get("texts", 0), h.get("texts_hallucinating", 0), h.get("rate", 0.0)],
                ["concept mentions", h.get("mentions", 0), h.get("hallucinated_mentions", 0),
                 h.get("mention_rate", 0.0)]])
            + f"\n\nTexts that name none of the concepts they explain (their pairs are rejected as "
              f"`ungrounded`): {h.get('texts_ungrounded', 0)}.")


_LLM_COLUMNS = ("calls", "cache_hits", "cache_misses", "retries", "failed", "invalid_answers", "input_tokens",
                "output_tokens", "cost_usd")
_LLM_HEADERS = ("calls", "cache hits", "cache misses", "retries", "failed", "invalid answers", "input tokens",
                "output tokens", "cost (USD)")


def _llm(llm: dict[str, Any]) -> str:
    by_model = llm.get("by_model") or {}
    if not by_model:
        return "### Language-model use\n\nNo language model was called: the describer and the rater ran offline."
    rows = [[f"`{name}`", *(entry.get(c) for c in _LLM_COLUMNS)] for name, entry in by_model.items()]
    rows.append(["total", *(llm.get(c) for c in _LLM_COLUMNS)])
    return (f"### Language-model use\n\nPrices as of {llm.get('prices_as_of')}; a cost of n/a means the model "
            f"has no price in facext's table (e.g. a self-hosted model).\n\n"
            + _table(["backend/model", *_LLM_HEADERS], rows))


def _limits_section(report: dict[str, Any]) -> str:
    options, reasons = report["options"], report["rejected"]["by_reason"]
    offline_describer = options.get("describer") == "evidence"
    offline_rater = options.get("rater") == "evidence"
    mask = (f"mode `{options.get('mask_mode')}`, threshold {_fmt(options.get('mask_threshold'))} grey levels"
            if options.get("mask_mode") == "absolute" else
            f"mode `{options.get('mask_mode')}`, percentile {_fmt(options.get('mask_percentile'))}")
    items = [
        (f"* **The artifact mask is an RGB difference** between the fake and its real source ({mask}). It "
         f"holds only where the fake is a localized manipulation of the real (attribute editing, local swaps). "
         f"For entire synthesis or global changes (colour, compression, re-rendering) the difference covers "
         f"the whole face or nothing; pairs where most of the face changed are rejected as `not_localized` "
         f"({_fmt(reasons.get(RejectReason.NOT_LOCALIZED.value, 0))} in this run), fakes shifted against their real as "
         f"`misaligned` ({_fmt(reasons.get(RejectReason.MISALIGNED.value, 0))}). The method needs the real source of every fake."),
        (f"* **Concept regions come from landmark geometry**: a face mesh maps each pixel to a region drawn on "
         f"a canonical face, so regions follow pose and shape but not individual anatomy; hair, ears, neck and "
         f"background come from a person segmentation and are coarse. An atomic concept counts as altered when "
         f"a fraction of at least {_fmt(options.get('coverage_threshold'))} of its region changed (or a large "
         f"share of the artifact lies in it)."),
    ]
    if offline_describer:
        items.append("* **Texts are templated**: the offline `evidence` describer writes deterministic sentences "
                     "from the measured evidence (which regions changed, how tone, edges and sharpness moved); "
                     "they are accurate about where, but repetitive and say nothing the measurements do not.")
    else:
        items.append(f"* **Texts are written by a language model** ({_describer(report, 'describer')}); they are "
                     f"checked for concepts without artifacts and rated, not verified by people.")
    if offline_rater:
        items.append("* **Ratings are not an independent judgement**: the offline `evidence` rater scores the "
                     "texts against the same measurements they were written from.")
    items.append("* Category and method labels are the manifest's; the pipeline does not check them.")
    return "## Known limits\n\n" + "\n".join(items)


CITATIONS = """\
@misc{fifa,
  title         = {Fake-in-Facext: Towards Fine-Grained Explainable DeepFake Analysis},
  eprint        = {2510.20531},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2510.20531},
}"""

RELATED = """\
@misc{facellava,
  title         = {Face-LLaVA: Facial Expression and Attribute Understanding through Instruction Tuning},
  author        = {Chaubey, Ashutosh and Guan, Xulang and Soleymani, Mohammad},
  year          = {2025},
  eprint        = {2504.07198},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2504.07198},
}"""


def _citation_section() -> str:
    return (f"## Citation\n\nThe method and the tasks are FiFa's:\n\n```bibtex\n{CITATIONS}\n```\n\n"
            f"Related work (face-specific instruction tuning):\n\n```bibtex\n{RELATED}\n```")

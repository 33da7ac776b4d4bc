"""`facext`: the command line of the tools (one script, subcommands)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_fict(args: argparse.Namespace) -> int:
    from fict import load_tree

    tree = load_tree()
    if args.fict_command == "show":
        print(tree.show())
        print(f"\n{len(tree)} nodes: {len(tree.atomic)} atomic, {len(tree) - len(tree.atomic)} parents, "
              f"{tree.depth} levels")
    elif args.fict_command == "export":
        if args.format == "json":
            text = json.dumps(tree.to_json(), indent=2, ensure_ascii=False)
        else:
            import yaml

            text = yaml.safe_dump(tree.to_json(), sort_keys=False, allow_unicode=True)
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
    elif args.fict_command == "render":
        from build_tools.render import render_label_map
        from pipelines.fifa.analysis import PairAnalyzer
        from pipelines.vision.images import ImageRejected, read_image

        try:
            image = read_image(args.image)
        except ImageRejected as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with PairAnalyzer() as analyzer:
            result = analyzer.analyze(image, image)
        if not result.ok:
            print(f"error: {result.analysis.reason.value}: {result.analysis.detail}", file=sys.stderr)
            return 2
        render_label_map(result.real_crop, result.labels, args.output, tree, title=Path(args.image).name)
        print(f"wrote {args.output}")
    return 0


ANALYZE_REJECTED = 3  # `facext analyze`: the pair was refused (exit 0: analysed; 2: a wrong command line)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from build_tools.analyze import analyze_to_dir

    analysis = analyze_to_dir(args.real, args.fake, args.out, mask_mode=args.mask_mode,
                              threshold=args.threshold, percentile=args.percentile,
                              crop_size=args.crop_size)
    if analysis.status == "ok":
        flagged = [c.name for c in analysis.concepts if c.artifact and c.atomic]
        print(f"ok: {len(flagged)} atomic concepts with artifacts: {', '.join(flagged) or 'none'}")
    else:
        print(f"rejected ({analysis.reason.value}): {analysis.detail}")
    print(f"wrote {Path(args.out) / 'analysis.json'}")
    return 0 if analysis.status == "ok" else ANALYZE_REJECTED


def _cmd_sample_data(args: argparse.Namespace) -> int:
    import time

    from pipelines.fifa.sample_data import make_sample_pairs

    start = time.perf_counter()
    manifest = make_sample_pairs(args.out, n=args.n, seed=args.seed, progress=True)
    rows = manifest.read_text().count("\n")
    print(f"wrote {rows} pairs ({args.n} good, {rows - args.n} bad) and {manifest} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from build_tools.validate import load_report, summary, validate

    if not Path(args.output).is_dir():  # nothing to summarise: say so alone
        print(f"error: {args.output}: no such folder (give the pipeline's --output folder)", file=sys.stderr)
        return 2
    if (load_report(Path(args.output)) or {}).get("pipeline") == "faceinstruct_build":
        from build_tools.validate_faceinstruct import validate_faceinstruct as validate
    result = validate(args.output)
    print(summary(result, args.output))
    return 0 if result.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from build_tools.export_llava import ExportError, export_llava

    try:
        counts = export_llava(args.output, args.out, args.split, args.overwrite)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, n in counts.items():
        print(f"{args.out}/{name}: {n} samples")
    train = [f"{args.out}/{n}" for n in counts if not n.endswith("_test.json")]
    if train:
        print(f"train with --data_path {' '.join(train)} --image_folder {args.out} --video_folder {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from build_tools.bench.command import run_from_args

    return run_from_args(args)


def _cmd_estimate(args: argparse.Namespace) -> int:
    """Prices a run: the pipeline's options, read and checked exactly as the pipeline reads
    them (`--config`, Beam's options, an unknown one exits 2), plus --sample/--batch/--json."""
    from pipelines.fifa.plan import estimate, estimate_text
    from pipelines.fifa.settings import FifaSettings
    from pipelines.fifa_annotate import FifaOptions

    options = FifaOptions.from_argv([*args.pipeline_options, "--dry_run=true"],
                                    also=ESTIMATE_FLAGS).view_as(FifaOptions)
    settings = FifaSettings.from_options(options)
    if (args.pairs is not None and args.pairs < 1) or args.workers < 1 or args.rpm <= 0:
        print("error: --pairs and --workers must be at least 1, --rpm above 0", file=sys.stderr)
        return 2
    result = estimate(settings, sample=args.sample, batch=args.batch, pairs=args.pairs, workers=args.workers,
                      rpm=args.rpm)
    print(json.dumps(result, indent=2) if args.json else estimate_text(result))
    return 0


# estimate's own flags; every other option is the pipeline's
ESTIMATE_FLAGS = ("--sample", "--batch", "--json", "--pairs", "--workers", "--rpm")


def _estimate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=int, default=5, help="pairs to analyse and render (default 5)")
    parser.add_argument("--batch", action="store_true", help="price at the batch APIs' half price")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--pairs", type=int, default=None,
                        help="price a run of this many pairs like the sampled ones (not the manifest's rows): "
                             "model calls at standard and batch prices, compute on Dataflow, dataset bytes")
    parser.add_argument("--workers", type=int, default=10, help="with --pairs: Dataflow workers (default 10)")
    parser.add_argument("--rpm", type=float, default=1000,
                        help="with --pairs: requests a minute your model accounts allow, all workers together "
                             "(default 1000)")


def _pipeline_options(argv: list[str]) -> list[str]:
    """What follows `estimate` on the command line, less estimate's own flags: the
    pipeline's options, in order, for the pipeline's parser."""
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _estimate_arguments(own)
    return own.parse_known_args(argv[argv.index("estimate") + 1:])[1]


def _cmd_publish(args: argparse.Namespace) -> int:
    import os

    from build_tools.publish.command import PublishError, publish
    from build_tools.publish.hub_upload import HubUploadError

    try:
        done = publish(args.output, repo_id=args.repo_id, local_dir=args.local_dir,
                       token=os.environ.get("HF_TOKEN") or None, private=args.private, revision=args.revision,
                       endpoint=args.endpoint, license=args.license)
    except (PublishError, HubUploadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    def rows(config: dict) -> str:
        return ", ".join(f"{split} {v['samples']}" + (f" in {v['rows']} images" if split != "rejected" else "")
                         for split, v in config["splits"].items())

    configs = ", ".join(f"{name} ({rows(c)})" for name, c in done["configs"].items())
    print(f"exported {done['rows']} samples and {done['rejected_rows']} rejected rows in {done['files']} Parquet "
          f"files ({done['bytes'] / 1e6:.1f} MB) to {done['dest']}\nconfigs: {configs}")
    if args.license == "unknown":
        print("note: the card's license is 'unknown': pass --license with the terms of your source data "
              "(e.g. --license cc-by-nc-4.0)", file=sys.stderr)
    if done["uploaded"]:
        up = done["upload"]
        what = "already held these files" if up.already_committed else "committed"
        print(f"{args.repo_id}: {what} {up.commit_oid} ({up.uploaded} files sent, {up.skipped} already there)"
              f"\n{up.commit_url}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from build_tools.report_html import ReportError, Selection, load_run_report, write_report

    selection = Selection(per_task=args.per_task, tasks=tuple(args.task or ()),
                          concepts=tuple(args.concept or ()), rejected=args.rejected,
                          max_rejected=args.max_rejected)
    try:
        report = load_run_report(Path(args.output))
        if report.get("pipeline") == "faceinstruct_build":
            from build_tools.report_faceinstruct import write_faceinstruct_report

            drawn = write_faceinstruct_report(Path(args.output), Path(args.out), report, selection)
        else:
            drawn = write_report(args.output, args.out, selection)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = f" of {drawn['pairs']} pairs" if drawn["pairs"] else ""
    print(f"wrote {drawn['page']}: {drawn['samples']} samples{pairs}, {drawn['images']} pictures")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations (as the pipeline: `--samp` is no `--sample`), whose
    errors name a mistyped option first: `facext analyze a b --otu d` says `--otu` is
    unknown (did you mean --out?), not that `--out` is missing.  Subcommands inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self._arg_strings = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        from pipelines.common.options import unknown_option

        flags = {flag for action in self._actions for flag in action.option_strings}
        if message.startswith("the following arguments are required"):
            for arg in getattr(self, "_arg_strings", []):
                if arg == "--":
                    break
                name = arg.partition("=")[0]
                if arg.startswith("--") and name not in flags:
                    message = unknown_option(name, flags)
                    break
        super().error(message)


def build_parser(pipeline_options: bool = False) -> argparse.ArgumentParser:
    """The parser of every command.  With `pipeline_options`, `estimate`'s also declares the
    pipeline's options, so its --help lists them (that imports the pipeline: only when
    the command line is estimate's)."""
    parser = _Parser(prog="facext", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party warnings and native log lines (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    fict = sub.add_parser("fict", help="the Facial Image Concept Tree")
    fsub = fict.add_subparsers(dest="fict_command", required=True)
    fsub.add_parser("show", help="print the tree as indented text")
    export = fsub.add_parser("export", help="write the nodes as JSON or YAML")
    export.add_argument("--format", choices=["json", "yaml"], default="json")
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    render = fsub.add_parser("render", help="draw the atomic label map over a face photo")
    render.add_argument("image")
    render.add_argument("-o", "--output", required=True, help="PNG to write")
    fict.set_defaults(func=_cmd_fict)

    analyze = sub.add_parser(
        "analyze", help="analyse one real/fake pair",
        description="Analyses one pair as the pipeline does (face, artifact mask, concepts, evidence) and "
                    "writes analysis.json and pictures. Exit status: 0 analysed, 3 the pair was rejected "
                    "(analysis.json says why), 2 a wrong command line.")
    analyze.add_argument("real", help="the real (source) image")
    analyze.add_argument("fake", help="the fake image made from it, same size and framing")
    analyze.add_argument("--out", required=True, help="folder for analysis.json and the PNGs")
    analyze.add_argument("--mask-mode", choices=["hysteresis", "absolute", "percentile"], default=None,
                         help="artifact mask (default hysteresis; docs/masks.md)")
    analyze.add_argument("--threshold", type=float, default=None,
                         help="grey levels; hysteresis: seed level of the largest channel change (default 6); "
                              "absolute: mean |fake-real| over RGB (default 12)")
    analyze.add_argument("--percentile", type=float, default=None,
                         help="percentile mode: keep differences above it (FiFa: 95)")
    analyze.add_argument("--crop-size", type=int, default=None, help="aligned crop side (default 512)")
    analyze.set_defaults(func=_cmd_analyze)

    sample = sub.add_parser("sample-data", help="make real/fake pairs with ground-truth masks")
    sample.add_argument("-o", "--out", required=True, help="folder for pairs/ and manifest.jsonl")
    sample.add_argument("--n", type=int, default=40, help="good pairs (default 40; 14 or more use every edit)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(func=_cmd_sample_data)

    check = sub.add_parser("validate", help="check a FiFa-Instruct output folder and summarise it")
    check.add_argument("output", help="the pipeline's --output folder")
    check.set_defaults(func=_cmd_validate)

    est = sub.add_parser(
        "estimate", help="expected LLM calls, tokens and cost of a fifa_annotate run, before running it",
        description="Analyses a few pairs of the manifest, renders the prompts a run would send and "
                    "prices them. Takes fifa_annotate's options (below, and --config, and Beam's own), "
                    "checked as the pipeline checks them, e.g. facext estimate --input "
                    "pairs.jsonl --describer gemini --llm_model gemini-2.5-flash --rater openai.")
    _estimate_arguments(est)
    if pipeline_options:
        from pipelines.fifa_annotate import FifaOptions

        FifaOptions._add_argparse_args(est)  # for --help; the pipeline's parser reads them (_pipeline_options)
    est.set_defaults(func=_cmd_estimate)

    pub = sub.add_parser(
        "publish", help="export a run as Hub Parquet with a dataset card, and upload it",
        description="Writes the samples as Parquet (one config per task family, plus default and "
                    "rejected) with a dataset card built from the run report, then uploads the folder "
                    "to a Hugging Face dataset repo as one commit; an interrupted upload resumes when "
                    "run again. The token comes from HF_TOKEN (or `hf auth login`). Examples: "
                    "facext publish out/fifa_instruct --local-dir hub_tree;  "
                    "HF_TOKEN=hf_... facext publish out/fifa_instruct --repo-id me/fifa-instruct --private")
    pub.add_argument("output", help="the pipeline's --output folder (a finished run)")
    pub.add_argument("--repo-id", help="the dataset repo, OWNER/NAME (created when missing)")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.add_argument("--revision", help="branch to commit to (created from main when missing; default main)")
    pub.add_argument("--local-dir", help="write the repo's files into this folder and upload nothing")
    pub.add_argument("--license", default="unknown",
                     help="the card's license field (default 'unknown': fill in the terms of your source data)")
    pub.add_argument("--endpoint", default=None,
                     help="Hub URL (default: HF_ENDPOINT, else https://huggingface.co)")
    pub.set_defaults(func=_cmd_publish)

    report = sub.add_parser(
        "report", help="draw a run as one HTML page: pictures, texts, ratings, distributions",
        description="Writes a static page (pictures in PAGE_files/ beside it): the run's figures, plots "
                    "of the distributions, the concept tree with flag counts, and a card per selected "
                    "sample. Example: facext report out/fifa_instruct -o report.html --task r_loc "
                    "--per-task 5")
    report.add_argument("output", help="the pipeline's --output folder")
    report.add_argument("-o", "--out", default="report.html", help="page to write (default report.html)")
    report.add_argument("--per-task", type=int, default=2, help="samples per task (default 2)")
    report.add_argument("--task", action="append", help="only this task (repeat for several)")
    report.add_argument("--concept", action="append",
                        help="only samples grounding this FICT node or one below it (id or name; repeatable)")
    report.add_argument("--rejected", action="store_true",
                        help="add the rejected inputs: stage, reason, detail and their images")
    report.add_argument("--max-rejected", type=int, default=40,
                        help="rejected rows drawn with their images (all are listed; default 40)")
    report.set_defaults(func=_cmd_report)

    exp = sub.add_parser(
        "export", help="export a FaceInstruct run for other trainers",
        description="facext export llava OUT --out DIR: the LLaVA / Video-LLaVA JSON files (one per source "
                    "dataset), the crops, the crop-track videos and the landmark .npy files, laid out as the "
                    "Face-LLaVA trainer reads them.")
    esub = exp.add_subparsers(dest="export_format", required=True)
    llava = esub.add_parser("llava", help="LLaVA / Video-LLaVA JSON, media and landmarks (Face-LLaVA)")
    llava.add_argument("output", help="the faceinstruct_build --output folder (a finished run)")
    llava.add_argument("--out", required=True, help="the export folder")
    llava.add_argument("--split", choices=["train", "test", "all"], default="train",
                       help="which split to export (default train; test goes to SOURCE_test.json)")
    llava.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    exp.set_defaults(func=_cmd_export)

    bench = sub.add_parser("bench", help="measure speed")
    from build_tools.bench.command import add_arguments as bench_arguments

    bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command the arguments chose (`facext bench pipeline`'s)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from pipelines.common.logs import setup_command

    argv = setup_command(argv)  # -v/--verbose, anywhere on the line, is read (and taken out) here
    parser = build_parser(pipeline_options="estimate" in argv[:1])
    args, unknown = parser.parse_known_args(argv)
    if args.command == "estimate":  # the pipeline's options pass through to its parser
        args.pipeline_options = _pipeline_options(argv)
    elif unknown:
        from pipelines.common.options import unknown_option

        chosen = _chosen(parser, args)
        options = [a for a in unknown if a.startswith("-") and a != "-"]
        if options:
            flags = [flag for action in chosen._actions for flag in action.option_strings]
            chosen.error(unknown_option(options[0].partition("=")[0], flags))
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

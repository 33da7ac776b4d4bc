"""`facext bench TARGET`: the command line over the benchmarks of `build_tools.bench`;
each writes its numbers as JSON and prints a summary."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from build_tools.bench.machine import machine, pin_to_one_core
from build_tools.bench.pipeline import FLOOR_STAGES, bench_analysis, bench_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["analysis", "pipeline", "llm", "publish", "memory", "fidelity",
                                           "faceinstruct", "train"],
                        help="what to measure (llm: client throughput against a local server; publish: "
                             "Parquet export and report page of a run; memory: peak RSS of whole runs of "
                             "--sizes pairs; fidelity: mask IoU per edit family on the independent evaluation "
                             "set and on sample-data pairs; faceinstruct: images/s and video-seconds/s of the FaceInstruct pipeline "
                             "against the face-model floor; train: samples/s and peak memory of training/train.py, "
                             "tiny on CPU and small on a GPU, per --model)")
    parser.add_argument("--n", type=int, default=20, help="generated pairs to time (default 20)")
    parser.add_argument("--workers", type=int, default=None,
                        help="pipeline: DirectRunner multi-process workers (default: in-process "
                             "FnApiRunner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", help="existing sample-data folder to use instead of generating")
    parser.add_argument("-o", "--output", default=None,
                        help="JSON file to write (default bench_TARGET.json)")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    parser.add_argument("--run", default=None,
                        help="publish: an existing pipeline output to measure (default: run --n generated pairs)")
    parser.add_argument("--per-task", type=int, default=2, help="publish: report samples per task (default 2)")
    parser.add_argument("--jpeg", type=int, default=None, metavar="SIZE",
                        help="analysis, pipeline: time JPEG pairs (quality 95) whose longer side is SIZE, e.g. "
                             "512, made from the generated ones (default: the generated PNG pairs)")
    parser.add_argument("--sizes", default="1000,5000",
                        help="memory: pairs in each run, comma-separated (default 1000,5000)")
    parser.add_argument("--quick", action="store_true",
                        help="pipeline: one core only, without the 1-and-2-worker runs and the LLM stage")
    parser.add_argument("--eval-set", default=None, metavar="DIR",
                        help="fidelity: an existing evaluation set (build_tools.bench.fidelity_set) instead of "
                             "generating --eval-pairs pairs")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="fidelity: also draw the mask step by step on the first three local pairs of the "
                             "evaluation set (the figure of docs/masks.md)")
    parser.add_argument("--eval-pairs", type=int, default=160,
                        help="fidelity: pairs of the independent evaluation set to generate (default 160)")
    parser.add_argument("--steps", type=int, default=30, help="train: optimizer steps per config (default 30)")
    parser.add_argument("--model", default="fifa_mllm",
                        help="train: fifa_mllm, face_llava, aap, corit (comma-separated) or all (default fifa_mllm)")
    parser.add_argument("--copies", type=int, default=4,
                        help="faceinstruct: copies of each fixture dataset tree to time (default 4)")
    parser.add_argument("--pipeline-pairs", type=int, default=48,
                        help="llm, pipeline: also describe and rate this many generated pairs through the "
                             "pipeline (0: not measured; default 48: fewer are mostly the start and the end "
                             "of a run, when not every slot has a call to make)")


def run_from_args(args: argparse.Namespace) -> int:
    if args.target == "publish":
        from build_tools.bench.publish import run_bench_publish

        return run_bench_publish(args.run, args.n, args.seed, args.per_task, args.output or "bench_publish.json")
    if args.target == "llm":
        from build_tools.bench.llm import bench_llm, summary

        report = {**bench_llm(pipeline_pairs=args.pipeline_pairs), "machine": machine()}
        Path(args.output or "bench_llm.json").write_text(json.dumps(report, indent=2) + "\n")
        print(summary(report))
        print(f"wrote {args.output or 'bench_llm.json'}")
        return 0
    if args.target == "memory":
        return _bench_memory(args)
    if args.target == "train":
        from build_tools.bench.train import MODELS, bench_train
        from build_tools.bench.train import summary as train_summary

        models = MODELS if args.model == "all" else tuple(args.model.split(","))
        report = {**bench_train(args.run, args.steps, models), "machine": machine()}
        Path(args.output or "bench_train.json").write_text(json.dumps(report, indent=2) + "\n")
        print(train_summary(report))
        print(f"wrote {args.output or 'bench_train.json'}")
        return 0
    if args.target == "faceinstruct":
        from build_tools.bench.faceinstruct import bench_faceinstruct, summary

        if not args.all_cores:
            pin_to_one_core()
        report = {**bench_faceinstruct(args.copies), "one_core": not args.all_cores, "machine": machine()}
        Path(args.output or "bench_faceinstruct.json").write_text(json.dumps(report, indent=2) + "\n")
        print(summary(report))
        print(f"wrote {args.output or 'bench_faceinstruct.json'}")
        return 0
    if args.target == "fidelity":
        return _bench_fidelity(args)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if not args.all_cores and not args.workers:
        pin_to_one_core()
    measure = bench_pipeline if args.target == "pipeline" else bench_analysis
    extra = {"workers": args.workers} if args.target == "pipeline" else {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = _pairs(args, Path(tmp), args.jpeg)
        report = measure(pairs, **extra)
        report["inputs"] = f"{args.jpeg} px JPEG pairs (quality 95)" if args.jpeg else "generated PNG pairs"
        if args.target == "pipeline" and not args.quick:
            from build_tools.bench.llm import run_pipeline_scenario
            from build_tools.bench.pipeline import bench_scale_out

            if cores is not None:
                os.sched_setaffinity(0, cores)  # the workers get every core
            report["scale_out"] = bench_scale_out(pairs)
            report["llm"] = run_pipeline_scenario(pairs=args.pipeline_pairs) if args.pipeline_pairs else None
    args.output = args.output or f"bench_{args.target}.json"
    report["one_core"] = not args.all_cores and not args.workers
    if args.target == "pipeline":
        report["machine"] = machine()
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"{report['pairs_in']} pairs in, {report['pairs_written']} written, {report['samples']} samples, "
              f"{report['runner']}: {report['wall_s']:.1f} s")
        basis = "at steady state" if report["steady_state"] else "over the whole run (too few pairs for a slope)"
        print(f"  {report['pairs_per_s_per_core']:.2f} pairs/s per core {basis} "
              f"({report['pipeline_ms_per_written_pair_core']:.0f} ms per pair and core; whole run "
              f"{report['pairs_per_s_whole_run']:.2f} pairs/s with {report['fixed_cost_s']:.1f} s to start)")
        print(f"  analysis alone {report['analysis_ms_per_pair']:.0f} ms per pair, "
              f"floor {report['floor_ms_per_pair']:.0f} ms")
        print(f"  pipeline / floor = {report['ratio_to_floor']:.2f}, pipeline / analysis = "
              f"{report['ratio_to_analysis']:.2f}; peak RSS {report['peak_rss_mb']:.0f} MB "
              f"({report['peak_rss_mb_quarter_run']:.0f} MB after the quarter run; "
              f"children {report['peak_rss_children_mb']:.0f} MB)")
        print(f"  floor with the PNG encoding of both crops {report['floor_with_encode_ms_per_pair']:.0f} ms: "
              f"pipeline / that = {report['ratio_to_floor_with_encode']:.2f}")
        b = report["bytes"]
        print(f"  {b['bytes_per_pair'] / 1e3:.0f} KB per pair, {b['bytes_per_sample'] / 1e3:.1f} KB per sample; "
              f"{b['bytes_over_distinct_crops']:.3f} x the PNG bytes of the distinct crops")
        if "scale_out" in report:
            runs = report["scale_out"]["runs"]
            print("  workers, steady state: " + ", ".join(f"{n}: {r['pairs_per_s']} pairs/s (efficiency "
                                                          f"{r['efficiency']})" for n, r in runs.items()))
        if report.get("llm"):
            llm = report["llm"]
            print(f"  LLM stage through the pipeline: {llm['achieved_calls_per_s']} calls/s of "
                  f"{llm['expected_calls_per_s']} = {llm['achieved_over_expected']} "
                  f"(latency {llm['latency_s']} s, concurrency {llm['concurrency']}, {llm['pairs']} pairs)")
        print(f"wrote {args.output}")
        return 0
    report["machine"] = machine()
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['pairs']} pairs, {report['pairs_per_s_per_core']:.2f} pairs/s "
          f"{'per core' if report['one_core'] else 'on all cores'}")
    width = max(len(s) for s in report["stage_ms"])
    for stage, ms in report["stage_ms"].items():
        mark = "  (floor)" if stage in FLOOR_STAGES else ""
        print(f"  {stage:<{width}}  {ms:8.2f} ms{mark}")
    print(f"  {'total':<{width}}  {report['total_ms_per_pair']:8.2f} ms per pair")
    print(f"floor (decode + 3 model inferences): {report['floor_ms_per_pair']:.2f} ms; "
          f"whole / floor = {report['ratio_to_floor']:.2f}")
    print(f"wrote {args.output}")
    return 0


def _bench_fidelity(args: argparse.Namespace) -> int:
    from build_tools.bench.fidelity import bench_fidelity, figure, table_text

    output = args.output or "bench_fidelity.json"
    with tempfile.TemporaryDirectory() as tmp:
        eval_set = Path(args.eval_set) if args.eval_set else Path(tmp) / "independent"
        if not args.eval_set:
            from build_tools.bench.fidelity_set import make_fidelity_set

            print(f"making the independent evaluation set ({args.eval_pairs} pairs)", flush=True)
            make_fidelity_set(eval_set, pairs=args.eval_pairs, seed=args.seed)
        if args.figure:
            drawn = figure(eval_set, args.figure)
            print(f"drew the mask steps of {', '.join(drawn)} in {args.figure}")
        sample = _pairs(args, Path(tmp), None)
        report = {**bench_fidelity(eval_set, sample, progress=True), "machine": machine(),
                  "independent_set": str(args.eval_set or f"generated, {args.eval_pairs} pairs, seed {args.seed}"),
                  "sample_set": str(args.pairs or f"facext sample-data, {args.n} pairs, seed {args.seed}")}
    Path(output).write_text(json.dumps(report, indent=2) + "\n")
    print(table_text(report["independent"]["tune"], "independent set, tune half"))
    print(table_text(report["independent"]["report"], "independent set, report half (not tuned on)"))
    print(table_text(report["sample"], "sample-data pairs"))
    verdict = {name: "no pairs" if not summary["pairs"] else "met" if summary["all_met"] else "NOT met"
               for name, summary in
               (("independent set, report half", report["independent"]["report"]), ("sample pairs", report["sample"]))}
    print("targets: " + "; ".join(f"{name} {v}" for name, v in verdict.items()) + f". Wrote {output}")
    return 0


def _pairs(args: argparse.Namespace, tmp: Path, jpeg: int | None) -> Path:
    """The sample-data folder to time: --pairs, or --n generated pairs; as JPEGs whose
    longer side is `jpeg` when given."""
    pairs = Path(args.pairs) if args.pairs else tmp / "generated"
    if not args.pairs:
        from pipelines.fifa.sample_data import make_sample_pairs

        make_sample_pairs(pairs, n=args.n, seed=args.seed)
    if jpeg:
        from build_tools.bench.pipeline import jpeg_pairs

        jpeg_pairs(pairs, tmp / "jpeg", size=jpeg)
        pairs = tmp / "jpeg"
    return pairs


def _bench_memory(args: argparse.Namespace) -> int:
    from build_tools.bench.pipeline import bench_memory

    sizes = tuple(int(n) for n in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        report = {**bench_memory(_pairs(args, Path(tmp), args.jpeg or 512), sizes), "machine": machine()}
    output = args.output or "bench_memory.json"
    Path(output).write_text(json.dumps(report, indent=2) + "\n")
    for size, run in report["runs"].items():
        print(f"{size} pairs: peak RSS {run['peak_rss_mb']:.0f} MB, {run['pairs_written']} written, "
              f"{run['wall_s']:.0f} s")
    print(f"largest / smallest = {report['largest_over_smallest']:.3f} ({'flat' if report['flat'] else 'grows'})")
    print(f"wrote {output}")
    return 0

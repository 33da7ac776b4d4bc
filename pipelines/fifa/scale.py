"""What a run of N pairs costs beside its model calls: CPU, Dataflow workers, hours,
dollars and bytes, from the per-pair costs `facext bench pipeline` measured
(`pipelines/fifa/data/scale.yaml`).  `facext estimate --pairs N` prints it beside the
model calls; docs/scale.md holds the same figures for 100 k pairs and 1 M samples."""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def load_scale() -> dict[str, Any]:
    return yaml.safe_load(resources.files("pipelines.fifa").joinpath("data/scale.yaml").read_text())


# Seconds a model call takes (for the calls a run must keep in flight to reach its rpm).
CALL_LATENCY_S = 3.0


def compute_figures(pairs: int, written_pairs: float, calls: int = 0, crop_size: int = 512, workers: int = 10,
                    rpm: float = 1000, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU hours, wall hours, worker hours and dollars on Dataflow for `pairs` input
    pairs of which `written_pairs` are written, with `workers` workers; bytes of the
    dataset.  A run that calls models synchronously lasts at least `calls / rpm` minutes
    (`rpm`: the account's request limit), and its workers are billed while they wait; with
    the batch APIs the workers only do the CPU work (the answers come back later)."""
    table = table or load_scale()
    measured, flow, storage = table["measured"], table["dataflow"], table["storage"]
    vcpu_hours = pairs * measured["cpu_ms_per_pair"] / 3.6e6 / flow["scaling_efficiency"]
    cpu_wall_hours = vcpu_hours / flow["vcpus"] / workers
    llm_hours = calls / rpm / 60 if calls else 0.0
    per_worker_hour = (flow["vcpus"] * flow["usd_per_vcpu_hour"]
                       + flow["memory_gb"] * flow["usd_per_gb_memory_hour"]
                       + flow["disk_gb"] * flow["usd_per_gb_disk_hour"])
    wall_hours = max(cpu_wall_hours, llm_hours)
    keeping_up = max(1, math.ceil(vcpu_hours / flow["vcpus"] / llm_hours)) if llm_hours else None
    dataset_bytes = written_pairs * measured["bytes_per_written_pair"] * (crop_size / measured["crop_size"]) ** 2
    return {
        "pairs": pairs, "written_pairs": round(written_pairs),
        "samples": round(written_pairs * measured["samples_per_written_pair"]),
        "cpu_ms_per_pair": measured["cpu_ms_per_pair"],
        "vcpu_hours": round(vcpu_hours, 2),
        "machine_type": flow["machine_type"], "workers": workers, "usd_per_worker_hour": round(per_worker_hour, 4),
        "calls": calls, "rpm": rpm, "llm_hours": round(llm_hours, 2),
        # Calls in the run: the slower of the CPU work and the calls sets the length.
        "wall_hours": round(wall_hours, 3),
        "compute_usd": round(wall_hours * workers * per_worker_hour, 2),
        # Workers that keep up with the calls (more only wait on the rate limit), and what
        # the run costs with them; the calls in flight that reach `rpm`.
        "workers_for_the_calls": keeping_up,
        "compute_usd_with_those": round(llm_hours * keeping_up * per_worker_hour, 2) if keeping_up else None,
        "calls_in_flight_for_rpm": math.ceil(rpm / 60 * CALL_LATENCY_S),
        # With the batch APIs: the CPU work only.
        "batch_wall_hours": round(cpu_wall_hours, 3),
        "batch_compute_usd": round(cpu_wall_hours * workers * per_worker_hour, 2),
        "dataset_gb": round(dataset_bytes / 1e9, 2),
        "storage_usd_per_month": round(dataset_bytes / 1e9 * storage["usd_per_gb_month"], 2),
        "prices_as_of": flow["prices_as_of"], "measured": f"{measured['command']} ({measured['date']})",
    }


def compute_text(figures: dict[str, Any]) -> str:
    lines = [(f"compute: {figures['pairs']:,} pairs x {figures['cpu_ms_per_pair']} ms = {figures['vcpu_hours']:,} "
             f"vCPU-hours on Dataflow {figures['machine_type']} workers (${figures['usd_per_worker_hour']} an hour "
             f"each, list prices as of {figures['prices_as_of']})")]
    if figures["calls"]:
        lines.append(f"  calling the models in the run: {figures['calls']:,} calls at {figures['rpm']:,.0f} requests "
                     f"a minute take {figures['llm_hours']:,.1f} h; {figures['workers']} workers: "
                     f"{figures['wall_hours']:,.1f} h, ${figures['compute_usd']:,.2f}; "
                     f"{_workers(figures['workers_for_the_calls'])} up with the calls: "
                     f"${figures['compute_usd_with_those']:,.2f} "
                     f"(reaching {figures['rpm']:,.0f} rpm at {CALL_LATENCY_S:g} s a call takes "
                     f"{figures['calls_in_flight_for_rpm']} calls in flight: workers x 4 processes x --llm_concurrency)")
        lines.append(f"  with the batch APIs: {figures['workers']} workers {figures['batch_wall_hours'] * 60:,.0f} min "
                     f"of CPU work, ${figures['batch_compute_usd']:,.2f} (the answers come back within 24 h)")
    else:
        lines.append(f"  {figures['workers']} workers: {figures['batch_wall_hours'] * 60:,.0f} min, "
                     f"${figures['batch_compute_usd']:,.2f}")
    lines.append(f"dataset: {figures['written_pairs']:,} pairs written, {figures['samples']:,} samples, "
                 f"{figures['dataset_gb']:,} GB (each crop once), ${figures['storage_usd_per_month']:,.2f} a month "
                 f"in Cloud Storage")
    lines.append(f"  per-pair costs from {figures['measured']}; edit pipelines/fifa/data/scale.yaml with yours")
    return "\n".join(lines)


def _workers(n: int) -> str:
    return "1 worker keeps" if n == 1 else f"{n} workers keep"

"""`facext bench llm`: throughput of the LLM client against a server of known latency.

The real client (`LlmClient` over the real openai SDK) talks to the local protocol server,
which answers every call after a fixed delay.  `concurrency` worker threads (as a describe
stage runs them) each send distinct requests (no cache), so the achieved rate should be
`min(rpm/60, concurrency/latency)`.  Rates come from the server's own record of when each
call arrived: the steady rate is (calls - 1) over the span of arrivals, and the largest
count of arrivals in any window of 60 s (and the shortest gap between arrivals, against the
limiter's 60/rpm spacing) shows whether --llm_rpm was ever exceeded.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# (latency s, concurrency, rpm or None, calls): a concurrency-bound case, rpm-bound cases,
# and one where both bounds are close.
SCENARIOS = (
    (0.2, 8, None, 120),
    (0.2, 8, 600, 60),
    (0.5, 4, 1200, 48),
    (0.1, 16, 3000, 150),
    (0.25, 4, 1000, 64),
)


@dataclass
class Scenario:
    latency_s: float
    concurrency: int
    rpm: float | None
    calls: int


def max_in_window(starts: list[float], window: float) -> int:
    """The most arrivals inside any half-open window of `window` seconds."""
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def arrival_rate(starts: list[float]) -> tuple[list[float], float | None]:
    """Arrival times in order, and the steady rate: (arrivals - 1) over their span."""
    starts = sorted(starts)
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    return starts, ((len(starts) - 1) / span if span > 0 else None)


def run_scenario(s: Scenario) -> dict:
    from build_tools.fakes.llm_server import LocalLlmServer
    from pipelines.llm.backends import BackendConfig, OpenAIBackend
    from pipelines.llm.client import LlmClient
    from pipelines.llm.limits import RateLimiter
    from pipelines.llm.request import LlmRequest
    from schemas.common import TemplateRef
    from schemas.llm import Explanation

    template = TemplateRef(id="bench@v1", version="0")
    with LocalLlmServer(latency_s=s.latency_s) as server:
        os.environ.setdefault("OPENAI_API_KEY", "bench-key")
        backend = OpenAIBackend(BackendConfig("openai-compatible", "bench-model", base_url=server.openai_base_url))
        client = LlmClient(backend, cache=None, limiter=RateLimiter(rpm=s.rpm), concurrency=s.concurrency)
        requests = [LlmRequest(template, "system", f"request {i}", Explanation) for i in range(s.calls)]
        client.ask(LlmRequest(template, "system", "warm-up", Explanation))  # connection set up
        server.reset()
        started = time.perf_counter()
        with ThreadPoolExecutor(s.concurrency) as pool:
            answers = list(pool.map(client.ask, requests))
        wall = time.perf_counter() - started
        calls = server.generation_calls()
        peak = server.max_in_flight
    starts, rate = arrival_rate([c.started for c in calls])
    expected = min(s.rpm / 60 if s.rpm else float("inf"), s.concurrency / s.latency_s)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    return {
        "latency_s": s.latency_s, "concurrency": s.concurrency, "rpm": s.rpm, "calls": len(calls),
        "answers": len(answers), "wall_s": round(wall, 3),
        "expected_calls_per_s": round(expected, 3),
        "achieved_calls_per_s": round(rate, 3) if rate else None,
        "achieved_over_expected": round(rate / expected, 3) if rate else None,
        "max_in_flight": peak,
        "max_calls_in_any_60s": max_in_window(starts, 60.0),
        "rpm_exceeded": bool(s.rpm and max_in_window(starts, 60.0) > s.rpm),
        "min_gap_s": round(min(gaps), 4) if gaps else None,
        "limiter_gap_s": round(60 / s.rpm, 4) if s.rpm else None,
    }


# The protocol server in a process of its own: parsing megabyte request bodies in the
# pipeline's process would take its GIL and a share of its cores that a remote service
# does not.  It prints its URL, serves until stdin closes, then prints what it saw.
_SERVER_PROCESS = """
import json, sys
from build_tools.fakes.fifa_model import fifa_responder
from build_tools.fakes.llm_server import LocalLlmServer
with LocalLlmServer(fifa_responder, latency_s=float(sys.argv[1])) as server:
    print(server.openai_base_url, flush=True)
    sys.stdin.read()
    calls = server.generation_calls()
    print(json.dumps({"starts": [c.started for c in calls], "max_in_flight": server.max_in_flight}), flush=True)
"""


class _ServerProcess:
    def __init__(self, latency_s: float):
        import subprocess
        import sys

        self.process = subprocess.Popen([sys.executable, "-c", _SERVER_PROCESS, str(latency_s)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.openai_base_url = self.process.stdout.readline().strip()

    def finish(self) -> dict:
        import json

        out, _ = self.process.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def run_pipeline_scenario(pairs: int = 8, latency_s: float = 0.2, concurrency: int = 8) -> dict:
    """The same measurement through the pipeline: `pairs` generated pairs described and
    rated by an openai-compatible backend, so the describe stage's thread pool is what
    keeps calls in flight.  A pair's calls come in dependent levels (leaves; parents and
    image; the rating), each level's at once, so the rate stays below `concurrency /
    latency` by what the levels and a batch's slowest pair cost.  The server runs in a
    process of its own (`_SERVER_PROCESS`)."""
    import tempfile
    from pathlib import Path

    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines.fifa.sample_data import make_sample_pairs
    from pipelines.fifa_annotate import run

    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_sample_pairs(Path(tmp) / "pairs", n=pairs, seed=0)
        server = _ServerProcess(latency_s)
        try:
            started = time.perf_counter()
            run(["--input", str(manifest), "--output", str(Path(tmp) / "out"), "--describer", "openai-compatible",
                 "--rater", "openai-compatible", "--llm_base_url", server.openai_base_url, "--llm_model", "bench",
                 "--llm_cache", str(Path(tmp) / "cache"), "--llm_concurrency", str(concurrency)],
                runner=FnApiRunner())
            wall = time.perf_counter() - started
        finally:
            seen = server.finish()
    starts, rate = arrival_rate(seen["starts"])
    return {"pairs": pairs, "latency_s": latency_s, "concurrency": concurrency, "calls": len(starts),
            "server": "own process",
            "calls_per_pair": round(len(starts) / pairs, 2), "wall_s": round(wall, 2),
            "expected_calls_per_s": round(concurrency / latency_s, 3),
            "achieved_calls_per_s": round(rate, 3) if rate else None,
            "achieved_over_expected": round(rate * latency_s / concurrency, 3) if rate else None,
            "max_in_flight": seen["max_in_flight"]}


def bench_llm(scenarios=None, pipeline_pairs: int = 0) -> dict:
    results = [run_scenario(Scenario(*row)) for row in (SCENARIOS if scenarios is None else scenarios)]
    report = {"target": "llm", "scenarios": results}
    if pipeline_pairs:
        report["pipeline"] = run_pipeline_scenario(pairs=pipeline_pairs)
    return report


def summary(report: dict) -> str:
    lines = ["client:", "latency  conc   rpm   expected/s  achieved/s  ratio  peak-in-flight  max/60s  rpm-exceeded"]
    for r in report["scenarios"]:
        lines.append(f"{r['latency_s']:>6.2f} {r['concurrency']:>5} {r['rpm'] or '-':>6} "
                     f"{r['expected_calls_per_s']:>10.2f} {r['achieved_calls_per_s'] or 0:>11.2f} "
                     f"{r['achieved_over_expected'] or 0:>6.2f} {r['max_in_flight']:>15} "
                     f"{r['max_calls_in_any_60s']:>8} {r['rpm_exceeded']!s:>13}")
    p = report.get("pipeline")
    if p:
        lines.append(f"pipeline: {p['pairs']} pairs, {p['calls']} calls ({p['calls_per_pair']} a pair), latency "
                     f"{p['latency_s']} s, concurrency {p['concurrency']}: {p['achieved_calls_per_s']} calls/s "
                     f"of {p['expected_calls_per_s']} ({p['achieved_over_expected']}), peak {p['max_in_flight']} "
                     f"in flight")
    return "\n".join(lines)

"""Client-side rate limits: the limiter's arithmetic on a fake clock, then the real thing
against the local server (measured arrival gaps and peak concurrency, no wall-clock limits)."""

from __future__ import annotations

import bisect
import itertools
import random
import threading

import pytest

from pipelines.llm.limits import InFlight, RateLimiter

EPS = 1e-6  # float slack on sums of intervals


class FakeClock:
    """A shared clock that never goes back.  `sleep` either advances it (one sequential
    caller) or only records the wait (many threads: each thread's start is its own reading
    plus its wait, and the clock moves on by a little random step at every reading)."""

    def __init__(self, advance_on_sleep: bool, step: float = 0.0, seed: int = 0):
        self.now = 1000.0
        self.advance_on_sleep = advance_on_sleep
        self.step = step
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()

    def clock(self) -> float:
        with self._lock:
            if self.step:
                self.now += self._rng.uniform(0, self.step)
            self._local.read = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        if self.advance_on_sleep:
            with self._lock:
                self.now += seconds

    def last_read(self) -> float:
        return self._local.read


def _max_in_window(starts: list[float], window: float = 60.0) -> int:
    """The most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    # A window holding the most starts can begin at a start.
    return max(bisect.bisect_left(starts, s + window - EPS) - i for i, s in enumerate(starts))


def _max_tokens_in_window(events: list[tuple[float, int]], window: float = 60.0) -> int:
    events = sorted(events)
    times = [t for t, _ in events]
    best = 0
    for i, (t, _) in enumerate(events):
        j = bisect.bisect_left(times, t + window - EPS)
        best = max(best, sum(n for _, n in events[i:j]))
    return best


def _threaded_starts(limiter: RateLimiter, clock: FakeClock, tokens: list[int], threads: int = 8):
    """Every call's start (clock reading + wait) and tokens, acquired from `threads` threads."""
    events: list[tuple[float, int]] = []
    lock = threading.Lock()
    todo = list(tokens)
    barrier = threading.Barrier(threads)

    def worker():
        barrier.wait()
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            waited = limiter.acquire(n)
            start = clock.last_read() + waited
            with lock:
                events.append((start, n))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert len(events) == len(tokens)
    return events


# --------------------------------------------------------------------------------------------
# Requests per minute


@pytest.mark.parametrize("rpm", [7, 120, 1000])
def test_rpm_threads_never_exceed_rpm_in_any_window(rpm):
    clock = FakeClock(advance_on_sleep=False, step=0.01, seed=rpm)
    limiter = RateLimiter(rpm=rpm, clock=clock.clock, sleep=clock.sleep)
    events = _threaded_starts(limiter, clock, [0] * (3 * rpm + 5))
    starts = sorted(t for t, _ in events)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 60 / rpm - EPS
    assert _max_in_window(starts) == rpm  # saturated: exactly rpm, never more
    # Everybody was waiting, so the achieved rate is the limit: the span is (n - 1) intervals.
    assert starts[-1] - starts[0] == pytest.approx((len(starts) - 1) * 60 / rpm)


def test_rpm_sequential_with_idle_gaps():
    rng = random.Random(3)
    clock = FakeClock(advance_on_sleep=True)
    rpm = 30
    limiter = RateLimiter(rpm=rpm, clock=clock.clock, sleep=clock.sleep)
    starts, waits = [], []
    for i in range(400):
        if i % 7 == 0:
            clock.now += rng.uniform(0, 10)  # the caller was busy elsewhere
        waits.append(limiter.acquire())
        starts.append(clock.clock())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 2.0 - EPS
    assert _max_in_window(starts) <= rpm
    assert waits[0] == 0.0 and all(w >= 0 for w in waits)
    # An idle caller is not made to wait for a slot it could already have had: no burst
    # credit builds up, but no needless wait either.
    idle = RateLimiter(rpm=rpm, clock=clock.clock, sleep=clock.sleep)
    idle.acquire()
    clock.now += 5.0
    assert idle.acquire() == 0.0


# --------------------------------------------------------------------------------------------
# Tokens per minute


@pytest.mark.parametrize("threads", [1, 8])
def test_tpm_tokens_in_any_window_at_most_tpm_plus_one_call(threads):
    rng = random.Random(threads)
    tokens = [rng.randint(1, 3000) for _ in range(300)]
    tpm = 20_000
    clock = FakeClock(advance_on_sleep=threads == 1, step=0.05, seed=threads)
    limiter = RateLimiter(tpm=tpm, clock=clock.clock, sleep=clock.sleep)
    if threads == 1:
        events = []
        for n in tokens:
            waited = limiter.acquire(n)
            events.append((clock.last_read() + waited, n))
    else:
        events = _threaded_starts(limiter, clock, tokens, threads)
    assert _max_tokens_in_window(events) <= tpm + max(tokens)
    # Each start waits until the previous call's tokens have drained at tpm/60 per second.
    ordered = sorted(events)
    for (t0, n0), (t1, _) in itertools.pairwise(ordered):
        assert t1 - t0 >= n0 * 60 / tpm - EPS
    # And the limit is reached, not just respected: the whole run drains at tpm.
    span = ordered[-1][0] - ordered[0][0]
    assert span == pytest.approx(sum(n for _, n in ordered[:-1]) * 60 / tpm, rel=1e-6, abs=1.0)


def test_rpm_and_tpm_together_the_stricter_wins():
    clock = FakeClock(advance_on_sleep=True)
    limiter = RateLimiter(rpm=60, tpm=600, clock=clock.clock, sleep=clock.sleep)  # 1 s/call, 0.1 s/token
    t0 = clock.clock()
    assert limiter.acquire(5) == 0.0  # drains in 0.5 s: the request interval (1 s) rules
    assert limiter.acquire(50) == pytest.approx(1.0)  # drains in 5 s
    assert limiter.acquire(1) == pytest.approx(5.0)
    assert clock.clock() - t0 == pytest.approx(6.0)


def test_settle_corrects_the_reservation():
    clock = FakeClock(advance_on_sleep=True)
    limiter = RateLimiter(tpm=600, clock=clock.clock, sleep=clock.sleep)  # 0.1 s per token
    assert limiter.acquire(100) == 0.0  # reserves 10 s
    limiter.settle(100, 300)  # it was 300 tokens: 30 s
    assert limiter.acquire(10) == pytest.approx(30.0)
    limiter.settle(10, 10)  # exact estimate: no change
    assert limiter.acquire(100) == pytest.approx(1.0)
    limiter.settle(100, 20)  # fewer than reserved: the next call may start sooner
    assert limiter.acquire(0) == pytest.approx(2.0)

    # Without a token limit settle has nothing to correct.
    plain = RateLimiter(rpm=60, clock=clock.clock, sleep=clock.sleep)
    plain.acquire(100)
    plain.settle(100, 10_000)
    assert plain.acquire(100) == pytest.approx(1.0)


def test_no_limits_never_wait():
    clock = FakeClock(advance_on_sleep=True)
    limiter = RateLimiter(clock=clock.clock, sleep=clock.sleep)
    assert [limiter.acquire(10_000) for _ in range(100)] == [0.0] * 100


@pytest.mark.parametrize("kwargs", [{"rpm": 0}, {"rpm": -1}, {"tpm": 0}, {"tpm": -5.0}, {"rpm": 10, "tpm": 0}])
def test_invalid_limits_raise(kwargs):
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(**kwargs)


@pytest.mark.parametrize("limit", [0, -1])
def test_invalid_concurrency_raises(limit):
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(limit)


# --------------------------------------------------------------------------------------------
# The real clock, through LlmClient, against the local server


@pytest.fixture
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-limits-test")


def _client(server, **kwargs):
    from pipelines.llm.backends import BackendConfig, OpenAIBackend
    from pipelines.llm.client import LlmClient
    from pipelines.retry import RetryPolicy

    backend = OpenAIBackend(BackendConfig("openai-compatible", "m", base_url=server.openai_base_url, timeout_s=20))
    return LlmClient(backend, retry=RetryPolicy(max_attempts=1), **kwargs)


def _request(i: int):
    from pipelines.llm.request import LlmRequest
    from schemas.common import TemplateRef
    from schemas.llm import Explanation

    return LlmRequest(template=TemplateRef(id="t", version="v1"), system="s", user=f"question {i}",
                      schema=Explanation)


def _ask_all(client, requests, threads: int) -> list:
    results, errors = [], []
    lock = threading.Lock()
    todo = list(requests)

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                request = todo.pop(0)
            try:
                answer = client.ask(request)
            except Exception as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(answer)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert errors == []
    return results


def test_rpm_spaces_server_arrivals(_keys):
    pytest.importorskip("openai")
    from build_tools.fakes.llm_server import LocalLlmServer

    rpm, n = 600, 20
    interval = 60 / rpm
    with LocalLlmServer() as server:
        client = _client(server, limiter=RateLimiter(rpm=rpm), concurrency=4)
        # Warm up first: the SDK's first call and each new pooled connection take longer to
        # arrive, which would shorten the next gap without any fault of the limiter.
        _ask_all(client, [_request(-i - 1) for i in range(4)], threads=4)
        server.reset()
        client.stats.drain()
        assert len(_ask_all(client, [_request(i) for i in range(n)], threads=4)) == n
        arrivals = sorted(c.started for c in server.generation_calls())
    assert len(arrivals) == n
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Starts are spaced by sleeping, so this is a lower bound; the tolerance covers the jitter
    # between a start in the client and its arrival at the server (up to ~40 ms seen on a
    # heavily loaded 2-core machine; unlimited, four threads would arrive ~1 ms apart).
    tolerance = 0.05
    assert min(gaps) >= interval - tolerance
    assert arrivals[-1] - arrivals[0] >= (n - 1) * interval - tolerance
    assert client.stats.calls == n and client.stats.wait_s > 0


def test_concurrency_bounds_calls_in_flight(_keys):
    pytest.importorskip("openai")
    from build_tools.fakes.llm_server import LocalLlmServer

    with LocalLlmServer(latency_s=0.15) as server:
        client = _client(server, concurrency=2)
        assert len(_ask_all(client, [_request(i) for i in range(12)], threads=6)) == 12
        assert len(server.generation_calls()) == 12
        assert server.max_in_flight <= 2
        assert server.max_in_flight == 2  # and the bound is used, not just respected


def test_calls_queued_behind_a_slow_one_still_start_spaced(_keys):
    """A call that waited for a free slot takes its rate slot only then: after one slow
    call the queued ones do not start back to back."""
    from build_tools.fakes.llm_server import Fault, LocalLlmServer

    rpm = 600
    with LocalLlmServer(faults=lambda call: Fault.delay(0.8) if call.index == 0 else None) as server:
        client = _client(server, limiter=RateLimiter(rpm=rpm), concurrency=1)
        assert len(_ask_all(client, [_request(i) for i in range(6)], threads=6)) == 6
        arrivals = sorted(c.started for c in server.generation_calls())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps[0] >= 0.8  # the slow call held the only slot
    assert min(gaps) >= 60 / rpm - 0.05

"""The one retry policy: Retry-After in both of its forms, the waits, and which statuses are
transient.  The callers' own tests (tests/pipelines/llm/test_client.py,
tests/build_tools/publish/test_hub_upload.py) show the LLM client and the Hub uploader honour an
HTTP-date Retry-After through it."""

from __future__ import annotations

import ast
import email.utils
import random
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from pipelines.retry import TRANSIENT_STATUS, RetryPolicy, is_transient_status, retry_after_seconds
from tests import REPO

NOW = datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC)  # a Tuesday


# --------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.parametrize("value, seconds", [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5),
                                            ("86400", 86_400.0)])
def test_delay_seconds(value, seconds):
    assert retry_after_seconds(value, now=NOW) == seconds


@pytest.mark.parametrize("value", [
    "Tue, 01 Jul 2025 12:02:00 GMT",  # IMF-fixdate, the form RFC 9110 has servers send
    "Tuesday, 01-Jul-25 12:02:00 GMT",  # obsolete RFC 850 form
    "Tue Jul  1 12:02:00 2025",  # obsolete asctime form (no zone: GMT)
    "Tue, 01 Jul 2025 14:02:00 +0200",  # a zone other than GMT, as email.utils reads it
    "Tue, 01 Jul 2025 12:02:00 -0000",  # "-0000": a date with no zone information
])
def test_http_date_in_the_future_is_the_seconds_until_it(value):
    assert retry_after_seconds(value, now=NOW) == 120.0


def test_http_date_is_counted_from_a_naive_now_as_utc():
    assert retry_after_seconds("Tue, 01 Jul 2025 12:00:30 GMT", now=NOW.replace(tzinfo=None)) == 30.0
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))  # the same instant, another zone
    assert retry_after_seconds("Tue, 01 Jul 2025 12:00:30 GMT", now=tokyo) == 30.0


def test_http_date_without_now_is_counted_from_the_clock():
    value = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28.0 <= retry_after_seconds(value) <= 30.0


@pytest.mark.parametrize("value", ["Tue, 01 Jul 2025 11:59:59 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
                                   "Tue, 01 Jul 2025 12:00:00 GMT"])
def test_http_date_in_the_past_is_zero(value):
    assert retry_after_seconds(value, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["", "   ", "soon", "-5", "+5", "1e3", "inf", "nan", "0x10", "120 seconds",
                                   "1.", "Tue, 01 Jul 2025", "Tue, 32 Jul 2025 12:00:00 GMT"])
def test_garbage_is_none(value):
    assert retry_after_seconds(value, now=NOW) is None


def test_headers_are_read_whatever_the_name_s_case():
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "4"}) == 4.0
    assert retry_after_seconds({"RETRY-AFTER": "Tue, 01 Jul 2025 12:00:05 GMT"}, now=NOW) == 5.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "6", "Content-Type": "application/json"})) == 6.0


@pytest.mark.parametrize("headers", [None, {}, {"Content-Type": "application/json"}, httpx.Headers()])
def test_no_header_is_none(headers):
    assert retry_after_seconds(headers) is None


# --------------------------------------------------------------------------------------------
# Waits


def test_backoff_grows_exponentially_with_jitter_and_stops_at_backoff_max():
    policy = RetryPolicy(max_attempts=10, backoff_base_s=0.5, backoff_max_s=6.0)
    ceilings = {1: 0.5, 2: 1.0, 3: 2.0, 4: 4.0, 5: 6.0, 6: 6.0, 9: 6.0}  # attempt (from 1) -> step
    rng = random.Random(1234)
    for attempt, ceiling in ceilings.items():
        delays = [policy.delay(attempt, None, rng) for _ in range(500)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        # Jittered over the whole half-step, not a fixed wait.
        assert min(delays) < 0.55 * ceiling and max(delays) > 0.95 * ceiling, attempt
    # Far past any realistic attempt count: still the cap, no overflow.
    assert 3.0 <= policy.delay(5000, None, rng) <= 6.0


def test_retry_after_is_honoured_with_up_to_ten_percent_more():
    policy = RetryPolicy(max_attempts=3, backoff_base_s=0.5, backoff_max_s=6.0, retry_after_max_s=300.0)
    rng = random.Random(99)
    for retry_after in (0.0, 0.25, 3.0, 120.0):
        delays = [policy.delay(2, retry_after, rng) for _ in range(300)]
        assert all(retry_after <= d <= 1.1 * retry_after for d in delays), retry_after
    delays = [policy.delay(1, 10.0, rng) for _ in range(300)]
    assert min(delays) < 10.05 and max(delays) > 10.95  # the jitter spreads over the whole 10 %


def test_retry_after_is_capped():
    policy = RetryPolicy(max_attempts=3, backoff_base_s=2.0, backoff_max_s=60.0, retry_after_max_s=120.0)
    rng = random.Random(5)
    for _ in range(100):
        assert 120.0 <= policy.delay(1, 86_400.0, rng) <= 132.0  # a day away: the cap, + jitter


def test_delays_are_reproducible_with_a_seeded_rng():
    policy = RetryPolicy()
    a, b = random.Random(7), random.Random(7)
    assert [policy.delay(1 + i % 5, None, a) for i in range(20)] == [policy.delay(1 + i % 5, None, b) for i in range(20)]


def test_attempts_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().delay(0, None)
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


# --------------------------------------------------------------------------------------------
# Transient statuses


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_transient_statuses(status):
    assert is_transient_status(status) and status in TRANSIENT_STATUS


@pytest.mark.parametrize("status", [None, 200, 304, 400, 401, 403, 404, 412, 413, 422, 600])
def test_other_statuses_are_not_transient(status):
    assert not is_transient_status(status) and status not in TRANSIENT_STATUS


# --------------------------------------------------------------------------------------------
# The floor


def test_the_module_imports_the_standard_library_only():
    tree = ast.parse((REPO / "pipelines" / "retry.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))

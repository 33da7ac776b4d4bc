"""The one retry policy: which HTTP answers are worth another try, how long a server asked us to
wait (``Retry-After``), and how long to wait before the next attempt.

The LLM client (``pipelines.llm``) and the Hub uploader (``build_tools.publish``) both use it,
each with its own numbers in a :class:`RetryPolicy`.  Standard library only: this is the lowest
floor of ``pipelines/``, below ``pipelines.llm`` and ``pipelines.vision``.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# 408 Request Timeout, 409 Conflict (a concurrent operation: the Hub answers it to a repo
# operation racing another, OpenAI to a conflicting request), 429 Too Many Requests, and every
# server error.  The 5xx range is in the set itself, so `status in TRANSIENT_STATUS` is the whole
# rule and cannot drift from `is_transient_status`.
TRANSIENT_STATUS = frozenset({408, 409, 429, *range(500, 600)})

# RFC 9110 delay-seconds is 1*DIGIT; a fraction is tolerated because some servers send one.
_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?")
# Jitter added on top of a server-asked wait: never shorter than asked, and workers that were
# all told the same Retry-After do not all come back in the same instant.
_RETRY_AFTER_JITTER = 0.1
# 2.0 ** 1024 overflows a float; far beyond any backoff_max_s anyway.
_MAX_EXPONENT = 1000


def is_transient_status(status: int | None) -> bool:
    """Whether an HTTP answer with ``status`` is worth another try (see ``TRANSIENT_STATUS``:
    408, 409, 429 and 5xx).  ``None`` (no HTTP answer at all) is not a status: False."""
    return status in TRANSIENT_STATUS


def retry_after_seconds(value_or_headers: str | Mapping[str, str] | None,
                        now: datetime | None = None) -> float | None:
    """Seconds the server asked to wait before the next request, from ``Retry-After``.

    ``value_or_headers`` is the header's value, or a headers mapping (``httpx.Headers``, a
    ``dict``; the header name is matched case-insensitively), or None.  The value is either
    delay-seconds (``"120"``; a fraction such as ``"1.5"`` is accepted) or an HTTP-date (RFC 9110
    section 10.2: the IMF-fixdate ``"Sun, 06 Nov 1994 08:49:37 GMT"`` and the obsolete RFC 850 and
    asctime forms, i.e. whatever ``email.utils.parsedate_to_datetime`` reads), counted from
    ``now`` (default: the current time).  A date without a zone, or a naive ``now``, is taken as
    UTC, as HTTP dates always are.

    Returns None when there is no such header or its value is neither form (negative numbers
    included); otherwise a finite number >= 0 -- a date already past is 0.0.  Not capped: that is
    ``RetryPolicy.delay``'s job, with the caller's cap.
    """
    value = _header_value(value_or_headers)
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (_utc(when) - _utc(now)).total_seconds())


def _header_value(value_or_headers: str | Mapping[str, str] | None) -> str | None:
    if value_or_headers is None or isinstance(value_or_headers, str):
        return value_or_headers
    value = value_or_headers.get("Retry-After")
    if value is None:  # a plain dict is case-sensitive; HTTP header names are not
        value = next((v for k, v in value_or_headers.items() if k.lower() == "retry-after"), None)
    return value if isinstance(value, str) else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try, and how long to wait between tries.

    max_attempts: tries in all, the first one included (1: never retry).
    backoff_base_s: the longest wait after the first failed attempt, when the server named none;
        it doubles with each further failure...
    backoff_max_s: ...up to this.
    retry_after_max_s: the longest server-asked wait honoured; a server asking for longer gets
        this much, and the attempt after it may fail again (costing an attempt) rather than a
        worker stalling for hours.
    """

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_base_s, self.backoff_max_s, self.retry_after_max_s) < 0:
            raise ValueError("waits cannot be negative")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``attempt`` failed, before the next one.

        ``attempt`` counts from 1: 1 is the first try, so ``delay(1, ...)`` is the wait before the
        first retry.  With ``retry_after`` (seconds the server asked for, e.g. from
        :func:`retry_after_seconds`) the wait is that, capped at ``retry_after_max_s``, plus up to
        10 % more (never less than asked).  Without it, exponential backoff with jitter: uniform
        in [step/2, step] where step = min(backoff_max_s, backoff_base_s * 2 ** (attempt - 1)) --
        the guaranteed half makes waits grow, the random half keeps parallel workers from
        retrying in step.  ``rng`` makes the draws reproducible; default: the ``random`` module.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        uniform = rng.uniform if rng is not None else random.uniform
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.retry_after_max_s)
            return wait + uniform(0.0, _RETRY_AFTER_JITTER * wait)
        step = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
        return uniform(0.5, 1.0) * step


__all__ = ["TRANSIENT_STATUS", "RetryPolicy", "is_transient_status", "retry_after_seconds"]

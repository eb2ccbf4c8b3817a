"""The retry decision, as a pure function of the attempt and what went wrong.

Retried: connection errors, truncated bodies, 5xx and 429 (honouring ``Retry-After``).
Never retried: 401/403/404 and other 4xx, which a retry cannot fix (and, for 401, could lock
the account).  A refused connection before the server has ever answered is not retried
either: that is a wrong address or a server that is down, said at once, with credentials
or without.  Sleeping is the caller's job (through an injected sleep), so tests need no
clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to ``base * 2**n`` seconds."""

    attempts: int = 10
    base: float = 0.5
    cap: float = 30.0

    def delay(
        self,
        attempt: int,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        ``attempt`` counts from 0 (the first try).  ``status`` is None for a transport
        error (connection refused or reset, timeout, truncated body).
        """
        if attempt + 1 >= self.attempts:
            return None
        if status is not None and status not in RETRYABLE_STATUS:
            return None
        hinted = parse_retry_after(retry_after) if retry_after else None
        if hinted is not None:
            return min(hinted, self.cap)
        ceiling = min(self.cap, self.base * (2**attempt))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Decision:
    """What to do after one try: ``retry`` after ``delay`` seconds, ``relogin`` (once, then
    try again), or ``stop`` (give the caller the answer or the error)."""

    action: str
    delay: float = 0.0


STOP = Decision("stop")


def classify(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None = None,
    retry_after: str | None = None,
    refused: bool = False,
    answered_before: bool = True,
    idempotent: bool = True,
    may_relogin: bool = False,
    rng: random.Random | None = None,
) -> Decision:
    """The one decision every request makes (login, listing, file, zip, upload).

    ``status`` is None for a transport error; ``refused``: the connection was never made
    (so the server cannot have acted); ``answered_before``: the server has answered this
    client at least once; ``may_relogin``: a 401 may be an expired session.
    """
    if status is None:
        if refused and not answered_before:
            return STOP
        if not idempotent and not refused:
            return STOP  # the request may have reached the server: not sent twice
        delay = policy.delay(attempt, rng=rng)
        return STOP if delay is None else Decision("retry", delay)
    if status == 401 and may_relogin:
        return Decision("relogin")
    if status in RETRYABLE_STATUS and (idempotent or retry_after is not None):
        delay = policy.delay(attempt, status=status, retry_after=retry_after, rng=rng)
        return STOP if delay is None else Decision("retry", delay)
    return STOP


def parse_retry_after(value: str) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

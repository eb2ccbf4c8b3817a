"""A ceiling on how many requests a second go to one server, all tasks together.

``-j`` bounds how many requests are open at once; a server's administrator may also want a
bound on how often they start (many small listings and files come back fast, and a busy
archive feels the rate more than the concurrency).  Requests are spaced at least
``1/rate`` seconds apart, in the order they ask, without bursts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from xnat_downloader.errors import UsageError


class RequestPacer:
    """Gives each request its start time: no earlier than ``1/rate`` seconds after the one
    before.  ``clock`` and ``sleep`` are seams for tests (a fake clock that ``sleep``
    advances)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise UsageError(f"the request rate limit must be a positive number, not {rate}")
        self.interval = 1.0 / rate
        self.clock = clock
        self.sleep = sleep
        self._next = float("-inf")

    async def wait(self) -> None:
        """Return when this request may start.  The slot is taken before waiting, so
        requests that ask together leave in the order they asked."""
        now = self.clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self.sleep(start - now)

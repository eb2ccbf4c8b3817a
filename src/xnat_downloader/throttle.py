"""A token bucket: the one way the client holds a rate, of bytes (``--max-rate``) or of
request starts (``--max-requests``).

Beside ``errors`` and ``aio`` at the top of the package, so that the HTTP layer (which
paces requests) and the transfer engine (which paces bytes) share it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from xnat_downloader.errors import UsageError


class Throttle:
    """At most ``rate`` units a second on average, shared by every task that takes from it,
    with at most ``burst`` units (default: one second's worth) passing at once.

    A taker that goes past what the bucket holds sleeps off the debt, holding the bucket
    meanwhile, so takers pass in the order they asked.  ``Throttle(rate, burst=1)`` taken
    one at a time spaces starts evenly, ``1/rate`` apart.  ``clock`` and ``sleep`` are
    seams, so the arithmetic is tested on a fake clock."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise UsageError(f"a rate limit must be a positive number, not {rate}")
        self.rate = rate
        self.burst = rate if burst is None else burst
        self._clock = clock
        self._sleep = sleep
        self._allowance = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def take(self, amount: float = 1) -> None:
        """Return once ``amount`` may pass."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A lock belongs to one event loop, and each API call runs its own: a throttle
            # kept by a Connection across calls takes a fresh lock in each (the rate state
            # carries over; the calls run one after another).
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            now = self._clock()
            earned = (now - self._stamp) * self.rate
            self._allowance = min(self.burst, self._allowance + earned)
            self._stamp = now
            self._allowance -= amount
            if self._allowance < 0:
                await self._sleep(-self._allowance / self.rate)

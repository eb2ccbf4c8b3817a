"""Time: the store's time stamps, in the forms XNAT writes them, and the server's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the server reads time; tests pass a clock they move by hand."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


def now_stamp() -> str:
    """XNAT's ``insert_date`` format: ``YYYY-MM-DD HH:MM:SS.mmm``."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def now_ms() -> int:
    return int(time.time() * 1000)


def prearchive_timestamp() -> str:
    """XNAT's prearchive timestamp, ``yyyyMMdd_HHmmssSSS``."""
    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S%f")[:-3]

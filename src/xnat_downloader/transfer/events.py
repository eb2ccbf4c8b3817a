"""Progress as a stream of typed events.  The engine emits them; it never draws anything.

``BytesMoved.delta`` is negative when a retry rewinds a file (the server ignored Range, or a
body failed verification), so a consumer's totals stay true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Planned:
    files: int
    bytes: int
    # Of those, verified by an earlier run and to be skipped (their FileSkipped events say
    # ``counted``): a resumed run can say at its start what is left.
    already_files: int = 0
    already_bytes: int = 0
    # Of ``files``, those the run accounts for outside the transfer (metadata documents,
    # selections that became no file): in the total, not among the files to fetch.
    other_files: int = 0


@dataclass(frozen=True)
class FileStarted:
    local: str
    size: int | None


@dataclass(frozen=True)
class BytesMoved:
    local: str
    delta: int


@dataclass(frozen=True)
class FileRetrying:
    local: str
    reason: str
    delay: float


@dataclass(frozen=True)
class FileVerified:
    local: str
    size: int
    md5: str
    server_digest: bool  # False: the server listed no digest, so only the size was checked


@dataclass(frozen=True)
class FileSkipped:
    local: str
    size: int
    reason: str
    counted: bool = False  # already in Planned.already_files/already_bytes


@dataclass(frozen=True)
class FileFailed:
    local: str
    error: str
    counted: bool = False  # already counted done (verified on sending, failed by a later check)


Event = Planned | FileStarted | BytesMoved | FileRetrying | FileVerified | FileSkipped | FileFailed
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A sink that drops every event."""

"""What the engine is given (a :class:`Job` per file) and what it gives back (an
:class:`Outcome` per file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """What the engine needs to know about one file."""

    uri: str
    local: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: str  # verified | skipped | failed
    size: int
    md5: str
    server_digest: bool
    error: str = ""

"""What the engine is given (a :class:`Job` per file), what it gives back (an
:class:`Outcome` per file), and the counts a report of outcomes derives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from xnat_downloader.plan.plan import PlanEntry


class Status(StrEnum):
    """What became of one file.  (A StrEnum: it compares equal to, and serialises as, its
    value, so reports and JSON keep the plain words.)"""

    VERIFIED = "verified"  # fetched or sent, and checked against the server's size and MD5
    SKIPPED = "skipped"  # verified by an earlier run, and still as it was
    SENT = "sent"  # uploaded into the prearchive: checked when it is archived
    FAILED = "failed"  # with the reason in ``error``


@dataclass(frozen=True)
class Job:
    """What the engine needs to know about one file."""

    uri: str
    local: str
    size: int | None
    md5: str | None

    @classmethod
    def of(cls, entry: PlanEntry, prefix: str = "") -> Job:
        """The job that fetches a plan entry's file to its local path (under ``prefix``),
        checked against the size and MD5 the server listed."""
        return cls(entry.file.uri, prefix + entry.local, entry.file.size, entry.file.md5)


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: Status
    size: int
    md5: str
    server_digest: bool
    error: str = ""


class OutcomeCounts:
    """Counts derived from ``outcomes``, shared by download and upload reports.

    ``verified`` includes files skipped as already verified; ``ok`` means none failed."""

    outcomes: list[Outcome]

    @property
    def files(self) -> int:
        return len(self.outcomes)

    @property
    def verified(self) -> int:
        return sum(1 for o in self.outcomes if o.status in ("verified", "skipped"))

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "failed")

    @property
    def skipped(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "skipped")

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.outcomes if o.status != "failed")

    @property
    def ok(self) -> bool:
        return self.failed == 0

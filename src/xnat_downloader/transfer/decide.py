"""What to do with one planned file, decided from plain facts (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from xnat_downloader.transfer.state import Record


class Action(StrEnum):
    SKIP = "skip"  # verified earlier, and still what the server lists
    DOWNLOAD = "download"  # fetch from the start (any partial file is discarded)
    RESUME = "resume"  # continue a partial file with Range
    CHECK_EXISTING = "check"  # a file is there that we did not verify: hash it first


@dataclass(frozen=True)
class Facts:
    expected_size: int | None
    expected_md5: str | None
    record: Record | None
    final_size: int | None  # None: no file at the final path
    partial_size: int | None  # None: no partial file
    overwrite: bool


def _same_remote(record: Record, size: int | None, md5: str | None) -> bool:
    if md5 and record.md5:
        return md5.lower() == record.md5.lower() and (size is None or record.size in (None, size))
    return size is not None and record.size == size


def decide(f: Facts) -> tuple[Action, int]:
    """The action, and the byte offset to resume from (0 unless RESUME)."""
    if f.overwrite:
        return Action.DOWNLOAD, 0
    record = f.record
    if f.final_size is not None:
        if (
            record is not None
            and record.status == "verified"
            and _same_remote(record, f.expected_size, f.expected_md5)
            and record.size == f.final_size
        ):
            return Action.SKIP, 0
        if record is not None and record.status == "verified":
            return Action.DOWNLOAD, 0  # our own earlier file, but the remote changed
        return Action.CHECK_EXISTING, 0
    if (
        f.partial_size
        and record is not None
        and record.status == "partial"
        and _same_remote(record, f.expected_size, f.expected_md5)
        and (f.expected_size is None or f.partial_size < f.expected_size)
    ):
        return Action.RESUME, f.partial_size
    return Action.DOWNLOAD, 0

"""What to do with one planned file, decided from plain facts (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from xnat_downloader.transfer.state import Record


class Action(StrEnum):
    SKIP = "skip"  # verified earlier, and still what the server lists
    DOWNLOAD = "download"  # fetch from the start (any partial file is discarded)
    RESUME = "resume"  # continue a partial file with Range
    CHECK_EXISTING = "check"  # a file is there that we cannot trust as it is: hash it first


@dataclass(frozen=True)
class Facts:
    expected_size: int | None
    expected_md5: str | None
    record: Record | None
    final_size: int | None  # None: no file at the final path
    partial_size: int | None  # None: no partial file
    overwrite: bool
    final_mtime_ns: int | None = None
    checksum: bool = False  # --checksum: hash even files that look untouched


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
        ours = record is not None and record.status == "verified"
        if ours and record is not None and _same_remote(record, f.expected_size, f.expected_md5):
            if record.size != f.final_size:
                return Action.DOWNLOAD, 0  # our file, cut or grown since: it cannot match
            if record.mtime_ns in (None, f.final_mtime_ns) and not f.checksum:
                return Action.SKIP, 0
            return Action.CHECK_EXISTING, 0  # written to since it was verified, or --checksum
        if ours:
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


# Room kept free beyond the bytes still to fetch: the state database, logs and reports.
SPACE_MARGIN = 64 * 1024 * 1024


def bytes_to_fetch(expected: list[int | None], on_disk: list[int | None]) -> int:
    """What a run still has to write: each file's expected size less what is there (a
    complete file or a partial one); unknown sizes count as nothing."""
    return sum(
        max(0, (size or 0) - (have or 0)) for size, have in zip(expected, on_disk, strict=True)
    )


def space_shortfall(needed: int, free: int) -> int:
    """How many bytes short the disk is (0: enough room, with :data:`SPACE_MARGIN`)."""
    return max(0, needed + SPACE_MARGIN - free)

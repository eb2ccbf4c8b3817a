"""Turning engine events into something a person can watch.

On a terminal: rich progress bars (overall bytes with rate and ETA, and files).  Otherwise:
a plain line every few seconds on stderr, with no cursor codes, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from xnat_downloader.transfer.events import (
    BytesMoved,
    Event,
    FileFailed,
    FileRetrying,
    FileSkipped,
    FileVerified,
    Planned,
)
from xnat_downloader.words import counted

if TYPE_CHECKING:  # rich is imported only to draw bars: a run off a terminal never loads it
    from rich.console import Console
    from rich.progress import TaskID


def human_bytes(n: float) -> str:
    """Decimal units (kB, MB, GB, TB), as the progress bars, ``--max-rate MB/S`` and the
    benchmarks use: one family everywhere."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def resuming_line(event: Planned) -> str | None:
    """What a resumed run says at its start, or None for a fresh one."""
    if not event.already_files:
        return None
    left_files = event.files - event.already_files - event.other_files
    left_bytes = max(event.bytes - event.already_bytes, 0)
    return (
        f"resuming: {counted(event.already_files, 'file')} ({human_bytes(event.already_bytes)}) "
        f"already verified; {counted(left_files, 'file')} ({human_bytes(left_bytes)}) to fetch"
    )


# A line each for the first failures; after that they are counted (a server that stops
# answering fails every file left, one cause), and the run's report lists every one.
FAILURE_LINES = 20


class FailureLines:
    """Which failures get a line of their own, and the line that counts the rest."""

    def __init__(self, limit: int = FAILURE_LINES) -> None:
        self.limit = limit
        self.shown = 0
        self.hidden = 0

    def admit(self) -> bool:
        if self.shown < self.limit:
            self.shown += 1
            return True
        self.hidden += 1
        return False

    def closing(self) -> str | None:
        if not self.hidden:
            return None
        return f"… and {self.hidden} more failed (each is in the run's report)"


class Tally:
    """Counts kept from events, shared by both displays."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes_total = 0
        self.bytes_done = 0  # fetched in this run or found verified
        self.bytes_moved = 0  # fetched in this run only: what a rate is made of
        self.done = 0
        self.failed = 0
        self.retries = 0

    def update(self, event: Event) -> None:
        if isinstance(event, Planned):
            self.files, self.bytes_total = event.files, event.bytes
        elif isinstance(event, BytesMoved):
            self.bytes_done += event.delta
            self.bytes_moved += event.delta
        elif isinstance(event, FileSkipped):
            self.bytes_done += event.size
            self.done += 1
        elif isinstance(event, FileVerified):
            self.done += 1
        elif isinstance(event, FileFailed):
            self.done += 0 if event.counted else 1
            self.failed += 1
        elif isinstance(event, FileRetrying):
            self.retries += 1


class PlainProgress:
    """Periodic plain lines (for logs and pipes)."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 5.0) -> None:
        self.stream = stream
        self.every = every
        self.tally = Tally()
        self.failures = FailureLines()
        self.started = time.monotonic()
        self.last = 0.0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if (line := self.failures.closing()) is not None:
            print(line, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        self.tally.update(event)
        if isinstance(event, FileFailed) and self.failures.admit():
            print(f"failed: {event.local}: {event.error}", file=self.stream, flush=True)
        if (
            isinstance(event, Planned)
            and (line := resuming_line(event))
            and self.every != float("inf")
        ):
            print(line, file=self.stream, flush=True)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            t = self.tally
            rate = t.bytes_moved / max(now - self.started, 1e-6)
            print(
                f"progress: {t.done}/{t.files} files, {human_bytes(t.bytes_done)} of "
                f"{human_bytes(t.bytes_total)}"
                + (f", {human_bytes(rate)}/s" if t.bytes_moved else ""),  # none before a byte
                file=self.stream,
                flush=True,
            )


class RichProgress:
    """Live bars on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console or Console(stderr=True)
        self.tally = Tally()
        self.failures = FailureLines()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),  # decimal units, as human_bytes
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.bytes_task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()
        if (line := self.failures.closing()) is not None:
            self.console.print(line, highlight=False)

    def __call__(self, event: Event) -> None:
        self.tally.update(event)
        if isinstance(event, Planned):
            # One bar for the whole run: a later plan (a resumed part) updates it.  What
            # was verified before starts the bar filled, outside the speed's samples.
            if (line := resuming_line(event)) is not None:
                self.console.print(line, highlight=False)
            if self.bytes_task is None:
                self.bytes_task = self.progress.add_task(
                    self._label(), total=event.bytes or None, completed=event.already_bytes
                )
            else:
                self.progress.update(
                    self.bytes_task, total=event.bytes or None, description=self._label()
                )
            return
        if self.bytes_task is None:
            return
        if isinstance(event, BytesMoved):
            self.progress.advance(self.bytes_task, event.delta)
        elif isinstance(event, FileSkipped) and not event.counted:
            self.progress.advance(self.bytes_task, event.size)
        if isinstance(event, FileFailed) and self.failures.admit():
            self.console.print(
                f"[red]failed[/red]: {event.local}: {event.error}", markup=True, highlight=False
            )
        if isinstance(event, FileSkipped | FileVerified | FileFailed):
            self.progress.update(self.bytes_task, description=self._label())

    def _label(self) -> str:
        return f"{self.tally.done}/{self.tally.files} files"

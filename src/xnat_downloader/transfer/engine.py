"""The engine: run many jobs through one session with bounded concurrency.

Every job ends as an :class:`Outcome` (verified, skipped or failed): one failed file never
stops the others, and the caller decides the exit status from the outcomes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from xnat_downloader.http.session import XnatSession
from xnat_downloader.transfer.download import Downloader, Job, Outcome, RateLimiter
from xnat_downloader.transfer.events import EventSink, Planned
from xnat_downloader.transfer.state import State

MAX_JOBS = 32  # a per-server ceiling: more connections only load the user's XNAT


@dataclass(frozen=True)
class EngineOptions:
    jobs: int = 8
    overwrite: bool = False
    max_rate: float | None = None  # bytes per second, all workers together


async def run_jobs(
    xs: XnatSession,
    jobs: list[Job],
    root: Path,
    state: State,
    sink: EventSink,
    options: EngineOptions,
) -> list[Outcome]:
    """Download ``jobs`` into ``root``; outcomes come back in the order of ``jobs``."""
    sink(Planned(len(jobs), sum(j.size or 0 for j in jobs)))
    limiter = RateLimiter(options.max_rate) if options.max_rate else None
    downloader = Downloader(xs, root, state, sink, overwrite=options.overwrite, limiter=limiter)
    gate = asyncio.Semaphore(max(1, min(options.jobs, MAX_JOBS)))

    async def one(job: Job) -> Outcome:
        async with gate:
            return await downloader.run(job)

    return list(await asyncio.gather(*(one(j) for j in jobs)))

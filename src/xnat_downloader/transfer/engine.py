"""The engine: run many jobs through one session with bounded concurrency.

Every job ends as an :class:`Outcome` (verified, skipped or failed): one failed file never
stops the others, and the caller decides the exit status from the outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from xnat_downloader.aio import together
from xnat_downloader.errors import LocalWriteError, UsageError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.throttle import Throttle
from xnat_downloader.transfer.decide import Action, decide
from xnat_downloader.transfer.download import Downloader
from xnat_downloader.transfer.events import EventSink, Planned
from xnat_downloader.transfer.jobs import Job, Outcome
from xnat_downloader.transfer.modes import Mode, ZipBatch, choose
from xnat_downloader.transfer.state import State
from xnat_downloader.transfer.zipfetch import fetch_zip, is_fresh

log = logging.getLogger("xnat_downloader.transfer")
MAX_JOBS = 32  # a per-server ceiling: more connections only load the user's XNAT


@dataclass(frozen=True)
class EngineOptions:
    jobs: int = 8
    overwrite: bool = False
    checksum: bool = False  # hash files that look untouched before trusting them
    space_check: bool = True  # refuse a run the output's file system cannot hold
    max_rate: float | None = None  # bytes per second, all workers together
    mode: Mode = Mode.AUTO  # per resource: a streamed zip or per-file GETs

    def __post_init__(self) -> None:
        check_jobs(self.jobs)
        if self.max_rate is not None and self.max_rate <= 0:
            raise UsageError(f"the rate limit must be a positive number, not {self.max_rate}")


def check_jobs(jobs: int) -> int:
    """``jobs`` when it is a sensible number of connections to one server; else UsageError."""
    if not 1 <= jobs <= MAX_JOBS:
        msg = (
            f"jobs (-j) must be between 1 and {MAX_JOBS}, not {jobs} (more connections only "
            "load the server)"
        )
        raise UsageError(msg)
    return jobs


async def run_jobs(
    xs: XnatClient,
    jobs: list[Job],
    root: Path,
    state: State,
    sink: EventSink,
    options: EngineOptions,
    also: int = 0,
) -> list[Outcome]:
    """Download ``jobs`` into ``root``; outcomes come back in the order of ``jobs``.
    ``also``: files the caller's run accounts for besides ``jobs`` (metadata documents,
    selections that became no file), counted in the total the display counts up to.

    Resources of many small files go as one streamed zip each (when ``options.mode``
    allows); whatever a zip does not deliver verified is fetched per file in the same run.
    A zip takes one worker slot, like a file."""
    limiter = Throttle(options.max_rate) if options.max_rate else None
    downloader = Downloader(
        xs, root, state, sink, overwrite=options.overwrite, checksum=options.checksum,
        limiter=limiter,
    )  # fmt: skip
    # What an earlier run verified (the same decision the downloader makes per file).
    already = [j for j in jobs if decide(downloader.facts(j))[0] == Action.SKIP]
    sink(Planned(len(jobs) + also, sum(j.size or 0 for j in jobs), len(already),
                 sum(j.size or 0 for j in already), also))  # fmt: skip
    gate = asyncio.Semaphore(max(1, min(options.jobs, MAX_JOBS)))
    batches, singles, reasons = choose(jobs, options.mode)
    for reason in reasons:
        log.info("%s", reason)

    async def one(job: Job) -> Outcome:
        async with gate:
            return await downloader.run(job)

    async def zipped(batch: ZipBatch) -> list[Outcome]:
        fresh = {p for p, j in batch.jobs.items() if is_fresh(downloader, j)}
        rest = [j for p, j in batch.jobs.items() if p not in fresh]
        outcomes: list[Outcome] = []
        # A zip carries the whole resource: worth it while most of it is still wanted.
        if len(fresh) >= max(2, len(batch.jobs) // 2):
            async with gate:
                outcomes, leftovers = await fetch_zip(downloader, batch, fresh)
            rest.extend(leftovers)
        else:
            rest.extend(batch.jobs[p] for p in fresh)
        return outcomes + list(await asyncio.gather(*(one(j) for j in rest)))

    parts = [asyncio.gather(*(one(j) for j in singles))]
    parts += [asyncio.ensure_future(zipped(b)) for b in batches]
    try:
        results = await together(*parts)
    except BaseException:
        # One part failed for the whole run (the state cannot be written) or the run was
        # cancelled: the others are stopped before anything else is written; keep what
        # verified.
        with contextlib.suppress(LocalWriteError):
            await downloader.drain()
        raise
    await downloader.drain()  # every group durable and recorded before the report
    by_local = {o.job.local: o for group in results for o in group}
    return [by_local[j.local] for j in jobs]

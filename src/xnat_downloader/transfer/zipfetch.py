"""Fetch one resource as a streamed zip, extracting members on the fly.

Each member the plan expects goes through the same path as a per-file download: a partial
file beside its planned final path (never a path taken from the zip: zip-slip cannot happen),
hashed while written, checked against the listing's size and MD5, fsynced, renamed, and
recorded as verified.  A member the plan does not expect is read past and never written.

The zip is only an accelerator.  Whatever it does not deliver verified (the connection
drops, the body is not a zip, a member is missing or fails its digest) is handed back to the
caller as leftovers, to be fetched per file in the same run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import aiohttp

from xnat_downloader import aio
from xnat_downloader.errors import LocalWriteError, XnatError
from xnat_downloader.transfer.decide import Action, decide
from xnat_downloader.transfer.download import Downloader, finish_file, write_chunk
from xnat_downloader.transfer.events import BytesMoved, FileFailed
from xnat_downloader.transfer.jobs import Job, Outcome
from xnat_downloader.transfer.localfs import is_disk_full, write_failure
from xnat_downloader.transfer.modes import ZipBatch, member_path
from xnat_downloader.transfer.unzip import (
    Header,
    Source,
    ZipStreamError,
    member_data,
    read_header,
    skip_member,
)
from xnat_downloader.xnat import paths

log = logging.getLogger("xnat_downloader.transfer")


def is_fresh(d: Downloader, job: Job) -> bool:
    """True when the job would be downloaded from byte 0 anyway (nothing to skip, check or
    resume), so a zip member can stand in for it."""
    facts = d.facts(job)
    return decide(facts) == (Action.DOWNLOAD, 0) and facts.final_size is None


async def fetch_zip(
    d: Downloader, batch: ZipBatch, wanted: set[str]
) -> tuple[list[Outcome], list[Job]]:
    """Outcomes of the ``wanted`` members (paths in ``batch.jobs``) verified from the zip,
    and the wanted jobs left to fetch per file.  Members of the batch that are not wanted
    (verified earlier) are read past quietly."""
    expected = dict(batch.jobs)
    by_basename: dict[str, list[str]] = {}
    for known in expected:
        by_basename.setdefault(known.rsplit("/", 1)[-1], []).append(known)
    done: dict[str, Outcome] = {}
    failed_here: set[str] = set()
    try:
        zip_path, zip_params = paths.resource_zip(batch.resource_uri)
        resp = await d.xs.open(
            "GET", zip_path, params=zip_params, what=f"the zip of {batch.resource_uri}"
        )
        try:
            src = Source(_budgeted(resp.content.read, zip_budget(batch), batch.resource_uri))
            while (header := await read_header(src)) is not None:
                path = member_path(header.name, expected, by_basename)
                if path is None or path not in wanted or path in done or path in failed_here:
                    if path is None:
                        log.warning(
                            "zip of %s: member %r is not in the listing; not written",
                            batch.resource_uri,
                            header.name,
                        )
                    await skip_member(src, header, expected[path].size if path else None)
                    continue
                outcome = await _member(d, expected[path], src, header)
                if outcome is None:
                    failed_here.add(path)
                else:
                    done[path] = outcome
        finally:
            resp.release()
    except LocalWriteError:
        raise  # the state cannot be written: the run ends, no per-file fallback
    except (ZipStreamError, XnatError, aiohttp.ClientError, TimeoutError) as exc:
        log.info(
            "zip of %s stopped (%s); fetching its other files one by one",
            batch.resource_uri,
            exc,
        )
    leftovers = [job for path, job in expected.items() if path in wanted and path not in done]
    if leftovers:
        log.info("zip of %s: %d files left for per-file GETs", batch.resource_uri, len(leftovers))
    return list(done.values()), leftovers


def zip_budget(batch: ZipBatch) -> int:
    """The most a resource's zip may run to: its files twice over (stored, as asked for,
    it is their sum and a header each), plus 64 KiB a file and 1 MiB.  A zip that runs
    past it (junk members without end, from a hostile or broken server) is stopped."""
    files = sum(job.size or 0 for job in batch.jobs.values())
    return 2 * files + 64 * 1024 * len(batch.jobs) + 1024 * 1024


def _budgeted(
    read_some: Callable[[int], Awaitable[bytes]], budget: int, uri: str
) -> Callable[[int], Awaitable[bytes]]:
    """``read_some`` that raises ZipStreamError once more than ``budget`` bytes came."""
    taken = 0

    async def read(n: int) -> bytes:
        nonlocal taken
        data = await read_some(n)
        taken += len(data)
        if taken > budget:
            raise ZipStreamError(f"the zip of {uri} runs past {budget} bytes; stopped")
        return data

    return read


# A member's bytes go to its file from a worker thread (the write and the MD5 are the costly
# part), gathered up to this many bytes per trip: a trip per chunk kept the event loop busy
# handing work over, and the event loop is what limits a fast download of small files.
TRIP_BYTES = 1024 * 1024
# Larger members record their expected digest before the first byte, so that a killed run
# resumes them; smaller ones are cheaper to fetch again than to record (a commit each).
RESUMABLE_FROM = 8 * 1024 * 1024


class _MemberFile:
    """A member's partial file, written and hashed in worker threads, one trip at a time."""

    def __init__(self, part: Path, make_folder: Callable[[], None]) -> None:
        self.part = part
        self.make_folder = make_folder
        self.handle: IO[bytes] | None = None
        self.md5 = hashlib.md5()
        self.size = 0

    def write(self, chunks: list[bytes]) -> None:
        if self.handle is None:
            self.make_folder()
            self.handle = open(self.part, "wb")  # noqa: SIM115 - closed by finish or close
        for chunk in chunks:
            write_chunk(self.handle, self.md5, chunk)
            self.size += len(chunk)

    def finish(self, chunks: list[bytes], job: Job, final: Path) -> int | None:
        """Write the last chunks and close the file; if its size and MD5 are the listing's,
        give it its final name and return its mtime (ns), else None (it stays partial)."""
        self.write(chunks)
        finish_file(self.handle)  # type: ignore[arg-type]  # opened by write
        if not Downloader.matches(job, self.size, self.md5.hexdigest()):
            return None
        os.replace(self.part, final)
        return os.stat(final).st_mtime_ns

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


async def _member(d: Downloader, job: Job, src: Source, header: Header) -> Outcome | None:
    """Write one member to its planned path; None if it does not verify (it is then
    fetched per file).  Transport errors propagate, leaving no partial file behind."""
    final, part = d.paths(job)
    d.begin(job, resumable=job.size is None or job.size >= RESUMABLE_FROM)
    member = _MemberFile(part, lambda: d.make_folder(job))
    gathered: list[bytes] = []
    pending = moved = 0
    try:
        # The MD5 checks each member against the listing; the zip's CRC adds nothing then.
        async for chunk in member_data(src, header, job.size, check_crc=not job.md5):
            if d.limiter is not None:
                await d.limiter.take(len(chunk))
            if job.size is not None and moved + len(chunk) > job.size:
                # Longer than listed (a zip bomb, or a hostile server): not written on.
                msg = f"zip member {header.name!r} is longer than the {job.size} bytes listed"
                raise ZipStreamError(msg)
            gathered.append(chunk)
            pending += len(chunk)
            moved += len(chunk)
            d.sink(BytesMoved(job.local, len(chunk)))
            if pending >= TRIP_BYTES:
                await aio.in_thread(member.write, gathered)
                gathered, pending = [], 0
        mtime = await aio.in_thread(member.finish, gathered, job, final)
    except BaseException as exc:
        member.close()
        d.discard(job)
        d.sink(BytesMoved(job.local, -moved))
        if isinstance(exc, OSError) and is_disk_full(exc):
            if d.disk_full is None:  # said once; no other file is started after this
                d.disk_full = write_failure(final, exc)
                d.sink(FileFailed(job.local, d.disk_full))
            raise ZipStreamError("disk full") from exc
        if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
            # A file that cannot be written here (permissions, a read-only folder): the zip
            # stops, and its files are fetched one by one, where each fails with the reason.
            raise ZipStreamError(write_failure(final, exc)) from exc
        raise
    if mtime is None:
        log.info("zip member for %s does not match the listing; refetching it", job.local)
        d.discard(job)
        d.sink(BytesMoved(job.local, -moved))
        return None
    return d.committed(job, member.size, member.md5.hexdigest(), mtime)

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

import asyncio
import hashlib
import logging

import aiohttp

from xnat_downloader.errors import LocalWriteError, XnatError
from xnat_downloader.transfer.decide import Action, decide
from xnat_downloader.transfer.download import (
    Downloader,
    finish_file,
    write_chunk,
)
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
            src = Source(resp.content.read)
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


async def _member(d: Downloader, job: Job, src: Source, header: Header) -> Outcome | None:
    """Write one member to its planned path; None if it does not verify (it is then
    fetched per file).  Transport errors propagate, leaving no partial file behind."""
    part = d.paths(job)[1]
    d.begin(job)
    md5 = hashlib.md5()
    size = 0
    handle = open(part, "wb")  # noqa: SIM115 - closed in finally
    try:
        async for chunk in member_data(src, header, job.size):
            if d.limiter is not None:
                await d.limiter.take(len(chunk))
            await asyncio.to_thread(write_chunk, handle, md5, chunk)
            size += len(chunk)
            d.sink(BytesMoved(job.local, len(chunk)))
        await asyncio.to_thread(finish_file, handle)
    except BaseException as exc:
        handle.close()
        d.discard(job)
        d.sink(BytesMoved(job.local, -size))
        if isinstance(exc, OSError) and is_disk_full(exc):
            if d.disk_full is None:  # said once; no other file is started after this
                d.disk_full = write_failure(d.paths(job)[0], exc)
                d.sink(FileFailed(job.local, d.disk_full))
            raise ZipStreamError("disk full") from exc
        raise
    digest = md5.hexdigest()
    if not d.matches(job, size, digest):
        log.info("zip member for %s does not match the listing; refetching it", job.local)
        d.discard(job)
        d.sink(BytesMoved(job.local, -size))
        return None
    return d.commit(job, size, digest)

"""Fetch the plan's metadata documents (``--metadata xml|json``): small bodies, each checked
to parse before it is written (aside, then renamed) and recorded as verified.

The server lists no size or digest for a document, so parsing is the check; the MD5 the
state records is of the bytes received, so that ``verify`` can find a document changed on
disk later.  Documents are quiet on the progress display (only failures are shown).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl

from xnat_downloader import aio
from xnat_downloader.errors import LocalWriteError, XnatError
from xnat_downloader.http.client import XnatClient, loads_json
from xnat_downloader.plan.plan import PlanEntry
from xnat_downloader.transfer.events import EventSink, FileFailed, FileSkipped, FileVerified
from xnat_downloader.transfer.jobs import Job, Outcome, Status
from xnat_downloader.transfer.localfs import write_failure
from xnat_downloader.transfer.state import State


def document_problem(body: bytes, fmt: str) -> str | None:
    """Why ``body`` is not a usable ``fmt`` (xml or json) document, or None (pure)."""
    if not body.strip():
        return "the server sent an empty document"
    try:
        if fmt == "json":
            loads_json(body)
        else:
            ET.fromstring(body)
    except (ValueError, ET.ParseError) as exc:
        return f"the server's {fmt} does not parse: {exc}"
    return None


def _write(final: Path, body: bytes) -> int:
    """Write ``body`` to ``final`` durably (aside, fsync, rename); its mtime_ns."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(final.name + ".xnatdl-part")
    try:
        with open(temp, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise LocalWriteError(write_failure(final, exc)) from exc
    return final.stat().st_mtime_ns


async def fetch_documents(
    xs: XnatClient,
    entries: list[PlanEntry],
    root: Path,
    state: State,
    sink: EventSink,
    jobs: int = 8,
    reusable: set[str] | None = None,
) -> list[Outcome]:
    """One outcome per document entry, in the order given.  A document whose local path is
    in ``reusable`` is not fetched again while the state records it verified and the file
    keeps the size and modification time it had then (skipped)."""
    gate = asyncio.Semaphore(max(1, jobs))

    def intact(entry: PlanEntry) -> Outcome | None:
        record = state.get(entry.local)
        if record is None or record.status != "verified" or entry.local not in (reusable or ()):
            return None
        try:
            st = (root / entry.local).stat()
        except OSError:
            return None
        if st.st_size != record.size or st.st_mtime_ns != record.mtime_ns:
            return None
        job = Job(entry.file.uri, entry.local, None, None)
        # No bytes for the display: documents are counted as files only (their sizes are
        # not known when the run is planned).
        sink(FileSkipped(entry.local, 0, "already verified"))
        return Outcome(job, Status.SKIPPED, st.st_size, record.md5 or "", False)

    async def one(entry: PlanEntry) -> Outcome:
        kept = intact(entry)
        if kept is not None:
            return kept
        uri = entry.file.uri
        job = Job(uri, entry.local, None, None)
        path, _, query = uri.partition("?")
        params = dict(parse_qsl(query))
        fmt = params.get("format", "xml")
        async with gate:
            try:
                body = await xs.get_bytes(path, params=params, what=f"{entry.local}")
            except LocalWriteError:
                raise
            except XnatError as exc:
                sink(FileFailed(entry.local, str(exc)))
                return Outcome(job, Status.FAILED, 0, "", False, str(exc))
        problem = document_problem(body, fmt)
        if problem is not None:
            sink(FileFailed(entry.local, problem))
            return Outcome(job, Status.FAILED, 0, "", False, problem)
        mtime = await aio.in_thread(_write, root / entry.local, body)
        md5 = hashlib.md5(body).hexdigest()
        state.put(entry.local, uri, len(body), md5, "verified", mtime)
        sink(FileVerified(entry.local, len(body), md5, False))
        return Outcome(job, Status.VERIFIED, len(body), md5, False)

    return list(await asyncio.gather(*(one(e) for e in entries)))

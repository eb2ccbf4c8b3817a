"""Uploads: bodies streamed from disk, imports, and resource files sent in parallel.

Bodies are generated afresh for every attempt, so a retried upload never sends half a
file.  A folder is zipped while it streams (stored, not deflated: DICOM barely compresses
and the server would pay to inflate it), so nothing the size of the upload is held in
memory or written to a temporary file.

Resource files are uploaded like downloads run: a bounded set of workers, every file
retried on its own, each ending as an :class:`Outcome`.  Before sending, the resource's
listing says which files are already there with the same MD5 (a re-run skips them); after
sending, a second listing must show every file with the MD5 computed locally.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from xnat_downloader import aio
from xnat_downloader.errors import LocalReadError, XnatError
from xnat_downloader.http.client import XnatClient, loads_json
from xnat_downloader.transfer.events import (
    BytesMoved,
    EventSink,
    FileFailed,
    FileSkipped,
    FileStarted,
    FileVerified,
    Planned,
)
from xnat_downloader.transfer.jobs import Job, Outcome, Status
from xnat_downloader.transfer.localfs import digest_file
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.services import remote_digests

CHUNK = 1024 * 1024


def md5_file(path: Path) -> str:
    return digest_file(path)[0]


def quote_path(relpath: str) -> str:
    return "/".join(quote(part, safe="") for part in relpath.split("/"))


async def file_body(
    path: Path, size: int, on_bytes: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """A file's ``size`` bytes in chunks, reported to ``on_bytes`` as they go.

    ``size`` is what the request's Content-Length promised: a file that has grown, shrunk
    or gone since it was planned raises :class:`LocalReadError` rather than sending other
    bytes than were announced (the request is then cut off, and the server keeps nothing).
    """
    try:
        with open(path, "rb") as f:
            left = size
            while left and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk
            grew = f.read(1)
    except OSError as exc:
        raise LocalReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if left or grew:
        msg = (
            f"{path} changed while it was being sent (it had {size} bytes when the upload "
            "was planned); nothing of it was kept: run the same command again"
        )
        raise LocalReadError(msg)


class _Drain:
    """A write-only, unseekable file that hands its bytes out as they are written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _zip_chunks(
    members: list[tuple[Path, str]], on_bytes: Callable[[int], None] | None
) -> Iterator[bytes]:
    drain = _Drain()
    with zipfile.ZipFile(drain, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for local, arcname in members:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with open(local, "rb") as src, zf.open(info, "w", force_zip64=True) as dest:
                while chunk := src.read(CHUNK):
                    dest.write(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                    yield drain.take()
            yield drain.take()
    yield drain.take()


async def zip_body(
    members: list[tuple[Path, str]], on_bytes: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """A stored zip of ``members`` ((local file, name in the zip)), made while it streams.
    A member that went away or cannot be read raises :class:`LocalReadError` (the request
    is then cut off, and the server keeps nothing of it)."""
    chunks = _zip_chunks(members, on_bytes)
    while True:
        try:
            chunk = next(chunks, None)
        except OSError as exc:
            where = exc.filename or "a file of this session"
            msg = f"cannot read {where} ({exc.strerror or exc}) while it was being sent"
            raise LocalReadError(msg) from exc
        if chunk is None:
            return
        if chunk:
            yield chunk
        await asyncio.sleep(0)


@dataclass(frozen=True)
class ResourceUpload:
    """Files for one resource: ``base`` is the owner's path (``/data/projects/P/…``)."""

    base: str
    label: str
    files: list[tuple[Path, str]]  # (local file, path inside the resource)

    @property
    def files_path(self) -> str:
        return paths.resource_files(self.base, self.label)

    def job(self, rel: str, size: int | None = None, md5: str | None = None) -> Job:
        """The record of file ``rel`` of this resource, as every outcome of it is named."""
        return Job(f"{self.files_path}/{quote_path(rel)}", f"{self.label}/{rel}", size, md5)


async def upload_resources(
    xs: XnatClient,
    uploads: list[ResourceUpload],
    sink: EventSink,
    *,
    jobs: int,
    overwrite: bool,
    announce: bool = True,
) -> list[Outcome]:
    """Send every file of ``uploads``, skipping ones already there; then verify them all.

    ``announce=False`` leaves the ``Planned`` event to a caller that counted these files in
    a larger total."""
    gate = asyncio.Semaphore(max(1, jobs))
    work: list[tuple[ResourceUpload, Path, str, int, str]] = []
    for upload in uploads:
        for local, rel in upload.files:
            size = local.stat().st_size
            work.append((upload, local, rel, size, await aio.in_thread(md5_file, local)))
    if announce:
        sink(Planned(len(work), sum(w[3] for w in work)))
    before = {u.files_path: await remote_digests(xs, u.files_path) for u in uploads}

    async def one(upload: ResourceUpload, local: Path, rel: str, size: int, md5: str) -> Outcome:
        job = upload.job(rel, size, md5)
        name = job.local
        there = before[upload.files_path].get(rel)
        if there is not None and there[1] == md5:
            sink(FileSkipped(name, size, "already on the server with the same MD5"))
            return Outcome(job, Status.SKIPPED, size, md5, True)
        if there is not None and not overwrite:
            error = "a different file with this name is already on the server; use --overwrite"
            sink(FileFailed(name, error))
            return Outcome(job, Status.FAILED, 0, md5, True, error)
        async with gate:
            sink(FileStarted(name, size))
            sent = [0]

            def moved(n: int) -> None:
                sent[0] += n
                sink(BytesMoved(name, n))

            def body() -> AsyncIterator[bytes]:
                if sent[0]:
                    sink(BytesMoved(name, -sent[0]))  # a retry starts the file again
                    sent[0] = 0
                return file_body(local, size, moved)

            params = {"inbody": "true", "overwrite": "true" if overwrite else "false"}
            try:
                _status, answer = await xs.send(
                    "PUT",
                    job.uri,
                    params=params,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    body=body,
                    what=name,
                )
            except XnatError as exc:
                sink(FileFailed(name, str(exc)))
                return Outcome(job, Status.FAILED, 0, md5, True, str(exc))
            if answer.lstrip().startswith(b'{"duplicates"'):
                try:
                    kept = loads_json(answer).get("duplicates", "")
                except (ValueError, AttributeError):
                    kept = answer[:200].decode("utf-8", "replace")
                error = f"the server kept its own copy: {kept}"
                sink(FileFailed(name, error))
                return Outcome(job, Status.FAILED, 0, md5, True, error)
            return Outcome(job, Status.SENT, size, md5, True)

    first = await asyncio.gather(*(one(*w) for w in work))
    return await verify_resources(xs, uploads, first, sink)


async def verify_resources(
    xs: XnatClient, uploads: list[ResourceUpload], outcomes: list[Outcome], sink: EventSink
) -> list[Outcome]:
    """Turn each ``sent`` outcome into verified or failed, by the server's listing."""
    after: dict[str, dict[str, tuple[int, str]]] = {}
    for upload in uploads:
        after[upload.files_path] = await remote_digests(xs, upload.files_path)
    final: list[Outcome] = []
    for outcome in outcomes:
        if outcome.status != "sent":
            final.append(outcome)
            continue
        files_path, quoted = paths.files_listing_of(outcome.job.uri) or ("", "")
        listing = after.get(files_path, {})
        rel = next((r for r in listing if quote_path(r) == quoted), None)
        size, digest = listing.get(rel, (-1, "")) if rel is not None else (-1, "")
        name = outcome.job.local
        if rel is None:
            error = "sent, but the server does not list it afterwards"
        elif digest and digest != outcome.md5:
            error = f"the server holds MD5 {digest}, not {outcome.md5} as sent"
        elif not digest and size != outcome.size:
            error = f"the server holds {size} bytes, not {outcome.size} as sent"
        else:
            sink(FileVerified(name, outcome.size, outcome.md5, bool(digest)))
            final.append(
                Outcome(outcome.job, Status.VERIFIED, outcome.size, outcome.md5, bool(digest))
            )
            continue
        sink(FileFailed(name, error))
        final.append(Outcome(outcome.job, Status.FAILED, 0, outcome.md5, True, error))
    return final

"""Fetch one file: decide, stream to a partial file while hashing, verify, rename, record.

The partial file is ``{name}.xnatdl-part`` beside the final path, so a partial file never
looks complete.  Its expected size and MD5 are recorded in the state database *before* the
first byte is written, so a run killed with ``kill -9`` can resume it; a resumed file is
re-hashed from disk and checked end to end like any other.  Verified files are recorded as
such in groups, each after one sync of the file system: a file is trusted by a later run
only once its bytes are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import IO

import aiohttp

from xnat_downloader import aio
from xnat_downloader.errors import (
    IntegrityError,
    LocalWriteError,
    LoginPageError,
    ServerError,
    TransferError,
    XnatError,
)
from xnat_downloader.http.client import XnatClient, looks_like_html
from xnat_downloader.http.retry import RETRYABLE_STATUS, classify
from xnat_downloader.throttle import Throttle
from xnat_downloader.transfer.decide import Action, Facts, decide
from xnat_downloader.transfer.events import (
    BytesMoved,
    EventSink,
    FileFailed,
    FileRetrying,
    FileSkipped,
    FileStarted,
    FileVerified,
)
from xnat_downloader.transfer.jobs import Job, Outcome, Status
from xnat_downloader.transfer.localfs import digest_file, is_disk_full, write_failure
from xnat_downloader.transfer.state import State

log = logging.getLogger("xnat_downloader.transfer")
CHUNK = 1024 * 1024
PART_SUFFIX = ".xnatdl-part"
# Verified files are made durable and recorded in groups: at most this many, or this old.
GROUP_FILES = 64
GROUP_SECONDS = 0.5


# What a look at a planned path raises when no file is there: nothing there, or a file
# where one of its folders should be (the write that follows says what is wrong).
NOT_THERE = (FileNotFoundError, NotADirectoryError)


def size_or_none(path: Path) -> int | None:
    """The size of the file at ``path``; None when there is none (:data:`NOT_THERE`)."""
    try:
        return path.stat().st_size
    except NOT_THERE:
        return None


def write_chunk(handle: IO[bytes], md5: hashlib._Hash, data: bytes) -> None:
    handle.write(data)
    md5.update(data)


def finish_file(handle: IO[bytes]) -> None:
    """Close a written file.  Not fsynced here: :meth:`Downloader.flush` makes a group of
    files durable with one file-system sync before any of them is recorded as verified."""
    handle.flush()
    handle.close()


def sync_filesystem(folder: Path) -> None:
    """Make everything written under ``folder``'s file system durable: ``syncfs`` where the
    C library has it (one call for a whole group of files), else ``sync``.  OSError when
    the file system says its writes failed (a network or cluster file system can say so
    only now): the files are then not durable, and must not be recorded as verified."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            code = ctypes.get_errno()
            if code != errno.ENOSYS:  # a kernel without syncfs: sync all instead
                raise OSError(code, os.strerror(code), str(folder))
            os.sync()
    finally:
        os.close(fd)


class DiskFullStop(TransferError):
    """A file not started because an earlier one found the disk full."""


class OverlongBody(IntegrityError):
    """A body went past the size the listing gives: it is not written on."""


class Downloader:
    """Downloads jobs into ``root`` through one session, recording state and emitting events."""

    def __init__(
        self,
        xs: XnatClient,
        root: Path,
        state: State,
        sink: EventSink,
        *,
        overwrite: bool = False,
        checksum: bool = False,
        limiter: Throttle | None = None,
    ) -> None:
        self.xs = xs
        self.root = root
        self.state = state
        self.sink = sink
        self.overwrite = overwrite
        self.checksum = checksum
        self.limiter = limiter
        # Verified files waiting for the group's sync: (local, uri, size, md5, mtime_ns).
        self._pending: list[tuple[str, str, int, str, int]] = []
        # Set by the first file that finds the disk full: no other file is started then.
        self.disk_full: str | None = None
        self._pending_since = 0.0
        # The last group being synced and recorded (each waits for the one before).
        self._syncing: asyncio.Future[None] | None = None
        # Set when a group could not be made durable or recorded: the run ends.
        self.broken: LocalWriteError | None = None
        # Folders made this run: a folder of many files is made once, not once per file.
        self._folders: set[Path] = set()

    async def run(self, job: Job) -> Outcome:
        self.check_recording()
        final, part = self.paths(job)
        try:
            return await self._run(job, final, part)
        except LocalWriteError:
            raise  # the run cannot record anything more: it ends, not just this file
        except DiskFullStop as exc:  # said once already, by the file that found it
            return Outcome(job, Status.FAILED, 0, "", False, str(exc))
        except XnatError as exc:
            self.sink(FileFailed(job.local, str(exc)))
            return Outcome(job, Status.FAILED, 0, "", False, str(exc))
        except OSError as exc:
            error = write_failure(final, exc)
            if is_disk_full(exc):
                part.unlink(missing_ok=True)  # free the space; nothing half-written remains
                if self.disk_full is not None:  # one line says it; the rest are counted
                    return Outcome(job, Status.FAILED, 0, "", False, error)
                self.disk_full = error
            self.sink(FileFailed(job.local, error))
            return Outcome(job, Status.FAILED, 0, "", False, error)

    def paths(self, job: Job) -> tuple[Path, Path]:
        """The job's final path and its partial file beside it."""
        final = self.root / job.local
        return final, final.with_name(final.name + PART_SUFFIX)

    def facts(self, job: Job) -> Facts:
        """What :func:`decide` needs to know about ``job``, read from state and disk."""
        final, part = self.paths(job)
        try:
            stat = final.stat()
        except NOT_THERE:
            stat = None
        return Facts(
            job.size,
            job.md5,
            self.state.get(job.local),
            stat.st_size if stat else None,
            size_or_none(part),
            self.overwrite,
            stat.st_mtime_ns if stat else None,
            self.checksum,
        )

    def record_verified(
        self, job: Job, final: Path, size: int, md5: str, mtime_ns: int | None = None
    ) -> None:
        """Record ``final`` as verified, with the size and mtime (``mtime_ns`` if the caller
        has it, else read now) that let a later run trust it without hashing it again: in
        a group, once the group's bytes are durable (see :meth:`_sync_group`)."""
        if not self._pending:
            self._pending_since = time.monotonic()
        mtime = mtime_ns if mtime_ns is not None else final.stat().st_mtime_ns
        self._pending.append((job.local, job.uri, size, md5, mtime))
        if (
            len(self._pending) >= GROUP_FILES
            or time.monotonic() - self._pending_since > GROUP_SECONDS
        ):
            self._start_group()

    def _start_group(self) -> None:
        """Make the pending group durable and record it, behind the groups before it, while
        the transfers go on: the sync waits on the disk (12 ms a group of 64 files of
        300 KiB here, 0.4 s a run of 2,000), and on the event loop it stopped every
        transfer for that long."""
        group, self._pending = self._pending, []
        self._syncing = asyncio.ensure_future(self._sync_group(group, self._syncing))

    async def _sync_group(
        self, group: list[tuple[str, str, int, str, int]], before: asyncio.Future[None] | None
    ) -> None:
        """Sync the output's file system once (in a worker thread), then record ``group`` as
        verified.  A file renamed into place but not yet recorded is hashed by the next run,
        never trusted.  A failure ends the run (:meth:`run` raises it for every file after)."""
        if before is not None:
            await before  # groups are recorded in order, one at a time
        try:
            await aio.in_thread(sync_filesystem, self.root)
        except OSError as exc:
            self.broken = LocalWriteError(write_failure(self.root, exc))
            raise self.broken from exc
        try:
            self.state.put_verified(group)
        except LocalWriteError as exc:
            self.broken = exc
            raise

    def check_recording(self) -> None:
        """LocalWriteError once a group could not be made durable or recorded: no file is
        started after that (nothing more could be recorded), and the run ends."""
        if self.broken is not None:
            raise self.broken

    async def drain(self) -> None:
        """Every file verified so far made durable and recorded: the groups under way, then
        the rest.  LocalWriteError if that failed."""
        if self._pending:
            self._start_group()
        if self._syncing is not None:
            await self._syncing

    def make_folder(self, job: Job) -> None:
        """Make the job's folder (once per folder and run: a folder holds many files).
        Safe from worker threads."""
        folder = self.paths(job)[0].parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)

    def begin(self, job: Job, *, resumable: bool = True) -> None:
        """Announce the job's start and, if ``resumable``, record the expected digest
        before the first byte (so that a kill -9 can resume).  A file that is not (a small
        zip member) costs no commit here: after a kill its partial file, with no record
        that vouches for it, is fetched again from the start.  The caller makes the
        folder (:meth:`make_folder`)."""
        self.check_recording()
        if resumable:
            self.state.put(job.local, job.uri, job.size, job.md5, "partial")
        self.sink(FileStarted(job.local, job.size))

    def discard(self, job: Job) -> None:
        """Drop a partial file that did not verify, and its state."""
        with contextlib.suppress(*NOT_THERE):
            self.paths(job)[1].unlink()
        self.state.forget(job.local)

    def commit(self, job: Job, size: int, md5: str) -> Outcome:
        """Give a verified partial file its final name and record it."""
        final, part = self.paths(job)
        os.replace(part, final)
        return self.committed(job, size, md5)

    def committed(self, job: Job, size: int, md5: str, mtime_ns: int | None = None) -> Outcome:
        """Record a verified file already under its final name (``mtime_ns``: its mtime
        then, if the caller has it)."""
        self.record_verified(job, self.paths(job)[0], size, md5, mtime_ns)
        self.sink(FileVerified(job.local, size, md5, bool(job.md5)))
        return Outcome(job, Status.VERIFIED, size, md5, bool(job.md5))

    async def _run(self, job: Job, final: Path, part: Path) -> Outcome:
        facts = self.facts(job)
        action, offset = decide(facts)
        if action == Action.SKIP:
            size = facts.final_size or 0
            self.sink(FileSkipped(job.local, size, "already verified", counted=True))
            return Outcome(job, Status.SKIPPED, size, job.md5 or "", bool(job.md5))
        if action == Action.CHECK_EXISTING:
            md5, size = await aio.in_thread(digest_file, final)
            if self.matches(job, size, md5):
                self.record_verified(job, final, size, md5)
                self.sink(FileSkipped(job.local, size, "already present and verified"))
                return Outcome(job, Status.SKIPPED, size, md5, bool(job.md5))
            record = facts.record
            if record is None:  # not a file of ours: never replaced without --overwrite
                msg = (
                    f"{final} already exists and differs from the server's file; "
                    "use --overwrite to replace it"
                )
                raise TransferError(msg)
            # Our own file, changed on disk since it was verified (or never made durable
            # before a crash): fetch it again.
            log.info("%s is not as it was verified; fetching it again", job.local)
            action = Action.DOWNLOAD
        if self.disk_full is not None:  # no file is started once the disk is full
            raise DiskFullStop(f"not fetched: {self.disk_full}")
        if action == Action.DOWNLOAD:
            part.unlink(missing_ok=True)
            offset = 0
        self.make_folder(job)
        self.begin(job)
        try:
            md5, size = await self._fetch(job, part, offset)
        except OverlongBody:
            self.discard(job)
            raise
        if not self.matches(job, size, md5):
            self.discard(job)
            expected = f"{job.size} bytes, MD5 {job.md5}" if job.md5 else f"{job.size} bytes"
            msg = (
                f"{job.local}: got {size} bytes with MD5 {md5}, but the server lists "
                f"{expected}; the partial file was deleted (the file may have changed on "
                "the server during the download, or the transfer was corrupted)"
            )
            raise IntegrityError(msg)
        return self.commit(job, size, md5)

    @staticmethod
    def matches(job: Job, size: int, md5: str) -> bool:
        """Size and MD5 agree with what the server lists (each only where it lists one)."""
        if job.size is not None and size != job.size:
            return False
        return not (job.md5 and md5.lower() != job.md5.lower())

    async def _fetch(self, job: Job, part: Path, offset: int) -> tuple[str, int]:
        """Bring ``part`` to the whole body; return its (md5, size).  Retries transport faults
        and resumes with Range where the server honours it."""
        attempt = 0
        best = offset
        restarted_for_integrity = False
        while True:
            md5 = hashlib.md5()
            if offset:
                md5, offset = await aio.in_thread(self._rehash_prefix, part, offset)
            try:
                md5, size = await self._stream(job, part, offset, md5)
            except (
                aiohttp.ClientPayloadError,
                aiohttp.ClientConnectionError,
                TimeoutError,
                ServerError,
            ) as exc:
                # Not ConnectionFailed: the request path has spent its own tries on it (a
                # second loop around that one made a dead server cost minutes per file).
                if isinstance(exc, LoginPageError):
                    raise
                status = exc.status if isinstance(exc, ServerError) else None
                if status is not None and status not in RETRYABLE_STATUS:
                    raise
                reached = size_or_none(part) or 0
                if reached > best:
                    # This attempt got further than any before: it does not use up the retry
                    # budget (a flaky link that keeps making progress should finish).
                    best = reached
                    attempt = 0
                # The same decision as every request (http/retry.classify): the server has
                # answered this run before, so a dropped body is worth another try.
                decision = classify(self.xs.retry, attempt, status=status)
                if decision.action != "retry":
                    msg = f"{job.local}: gave up after {attempt + 1} attempts: {exc}"
                    raise TransferError(msg) from exc
                attempt += 1
                offset = reached
                reason = str(exc) or type(exc).__name__
                self.sink(FileRetrying(job.local, reason, decision.delay))
                await self.xs.sleep(decision.delay)
                continue
            digest = md5.hexdigest()
            if (
                job.md5
                and digest.lower() != job.md5.lower()
                and offset
                and not restarted_for_integrity
            ):
                # A resumed body that does not verify: the partial prefix may be torn (a
                # kill -9 mid-write).  Start over once from byte 0 before giving up.
                restarted_for_integrity = True
                self.sink(BytesMoved(job.local, -size))
                part.unlink(missing_ok=True)
                offset = 0
                continue
            return digest, size

    @staticmethod
    def _rehash_prefix(part: Path, offset: int) -> tuple[hashlib._Hash, int]:
        md5 = hashlib.md5()
        done = 0
        with open(part, "rb") as handle:
            while done < offset and (data := handle.read(min(CHUNK, offset - done))):
                aio.check_abandoned()
                md5.update(data)
                done += len(data)
        return md5, done

    async def _stream(
        self, job: Job, part: Path, offset: int, md5: hashlib._Hash
    ) -> tuple[hashlib._Hash, int]:
        """One GET of the body from ``offset``; returns the hash and size of the whole file."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        resp = await self.xs.open(
            "GET", job.uri, headers=headers, what=job.local, ok_statuses=(416,)
        )
        try:
            if resp.status == 416:
                # Our partial file is as long as (or longer than) the remote one: start over.
                self.sink(BytesMoved(job.local, -offset))
                part.unlink(missing_ok=True)
                raise ServerError("range not satisfiable; restarting", status=503)
            if offset and (
                resp.status != 206
                or not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
            ):
                # The server ignored Range (XNAT's /data API does): rewind and take it all.
                self.sink(BytesMoved(job.local, -offset))
                offset = 0
                md5 = hashlib.md5()
            size = await self._write_body(job, resp, part, offset, md5)
            return md5, size
        finally:
            resp.release()

    async def _write_body(
        self, job: Job, resp: aiohttp.ClientResponse, part: Path, offset: int, md5: hashlib._Hash
    ) -> int:
        handle = open(part, "r+b" if offset else "wb")  # noqa: SIM115 - closed below
        try:
            if offset:
                handle.seek(offset)
                handle.truncate()
            size = offset
            first = True
            async for chunk in resp.content.iter_chunked(CHUNK):
                if first and offset == 0:
                    first = False
                    html_type = "html" in resp.headers.get("Content-Type", "").lower()
                    if (
                        looks_like_html(chunk)
                        and html_type
                        and not job.local.lower().endswith((".html", ".htm"))
                    ):
                        msg = (
                            f"the server sent an HTML page (a login or error page) instead "
                            f"of {job.local}; nothing was saved"
                        )
                        raise LoginPageError(msg, status=resp.status, url=job.uri)
                if self.limiter is not None:
                    await self.limiter.take(len(chunk))
                if job.size is not None and size + len(chunk) > job.size:
                    # A body longer than the listing says (a hostile or broken server) is
                    # not written on: it could fill the disk.  The caller drops the part.
                    msg = (
                        f"{job.local}: the server sent more than the {job.size} bytes it "
                        "lists; the partial file was deleted"
                    )
                    raise OverlongBody(msg)
                await aio.in_thread(write_chunk, handle, md5, chunk)
                size += len(chunk)
                self.sink(BytesMoved(job.local, len(chunk)))
            expected = resp.content_length
            if expected is not None and size - offset != expected:
                raise aiohttp.ClientPayloadError(
                    f"body ended after {size - offset} of {expected} bytes"
                )
            await aio.in_thread(finish_file, handle)
            return size
        finally:
            if not handle.closed:
                handle.close()

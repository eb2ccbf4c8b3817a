"""The Python API for uploads: :func:`upload` (subjects from a spreadsheet: api/subjects.py).

Example::

    from xnat_downloader.api.connection import Connection
    from xnat_downloader.http.credentials import Credentials
    from xnat_downloader.api.upload import upload
    conn = Connection("https://xnat.example.org", Credentials("me", "secret", "api"))
    report = upload(conn, ["session1.zip"], "P1")          # into the archive
    report = upload(conn, ["results/"], "P1", resource="STATS", session="MR1")
    assert report.ok

Imports go through XNAT's import service; ``resource=`` puts files into a resource instead.
Every file is verified against the server's listing afterwards (by MD5 where the server
lists one); a session sent to the prearchive is verified when it is archived, not here.
What the paths hold is found by api/import_plan.py, and each session is one unit of work
in api/session_import.py; this module runs them, several at once, and the resource uploads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path, PurePosixPath
from typing import Any

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.import_plan import Import, LocalPlan, plan_imports
from xnat_downloader.api.session_import import (
    ImportOptions,
    UploadReport,
    fail_session,
    one_session,
    unfinished,
)
from xnat_downloader.errors import (
    AccessDenied,
    ConnectionFailed,
    NotFound,
    ServerError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.upload import (
    OwnResourceFile,
    duplicate_labels,
    own_resource_groups,
    resource_files,
)
from xnat_downloader.transfer.archives import archive_members
from xnat_downloader.transfer.engine import check_jobs
from xnat_downloader.transfer.events import EventSink, FileFailed, Planned, ignore
from xnat_downloader.transfer.jobs import Outcome, Status
from xnat_downloader.transfer.localfs import files_under
from xnat_downloader.transfer.upload import ResourceUpload, upload_resources
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.services import ensure_subject, sessions_by_study

log = logging.getLogger("xnat_downloader")
IMPORTERS = ("DICOM-zip", "SI")
DESTINATIONS = ("archive", "prearchive")


async def _upload(
    conn: Connection | XnatClient,
    paths: list[Path],
    project: str,
    *,
    subject: str,
    session: str,
    scan: str,
    dest: str,
    importer: str,
    ignore_unparsable: bool,
    overwrite: bool,
    resource: str | None,
    jobs: int,
    sink: EventSink,
) -> UploadReport:
    report = UploadReport()
    started = time.monotonic()
    if resource is not None:
        async with _session_of(conn) as xs:
            await require_project(xs, project)
            base = _owner_base(project, subject, session, scan)
            await _check_owner(xs, base)
            files = await aio.in_thread(_resource_plan, paths)
            upload = ResourceUpload(base, resource, files)
            report.outcomes = await upload_resources(
                xs, [upload], sink, jobs=jobs, overwrite=overwrite
            )
            report.seconds = time.monotonic() - started
            return report
    # The local work (opening every archive, hashing the first ones to go) is done while
    # the client logs in and asks after the project: on a remote server those answers are
    # round trips that would otherwise come first.
    ahead: list[asyncio.Future[Any]] = []  # work started early, settled however it ends
    local = asyncio.ensure_future(_prepare(paths, subject, session, ignore_unparsable, jobs, ahead))
    ahead.append(local)
    try:
        async with _session_of(conn) as xs:
            checked = asyncio.ensure_future(require_project(xs, project))
            ahead.append(checked)
            try:
                plan = await local
            except UsageError:
                await checked  # a missing project is said before a bad archive
                raise
            on_server = None
            unlabelled = any(i.archive is not None and not i.label for i in plan.imports)
            if dest == "archive" and unlabelled and not overwrite:  # else: all are sent
                on_server = asyncio.ensure_future(_sessions_on_server(xs, project))
                ahead.append(on_server)
            await checked
            report.notes += plan.notes
            options = ImportOptions(
                project, dest, importer, ignore_unparsable, overwrite, jobs, on_server
            )
            await _send_imports(xs, plan, options, report, sink)
    finally:
        await aio.settle(*ahead)
    report.seconds = time.monotonic() - started
    return report


def _session_of(conn: Connection | XnatClient) -> AbstractAsyncContextManager[XnatClient]:
    """A client logged in for this upload, or an open one, kept open (its caller's)."""
    return nullcontext(conn) if isinstance(conn, XnatClient) else conn.client()


async def _prepare(
    paths: list[Path],
    subject: str,
    session: str,
    ignore_unparsable: bool,
    jobs: int,
    ahead: list[asyncio.Future[Any]],
) -> LocalPlan:
    """:func:`plan_imports` in a thread; then the first ``jobs`` archives, the first to be
    sent, start being hashed (:attr:`Import.hashing`, also put in ``ahead``), one after
    another: side by side they would all be ready last, and the first could go while the
    others are hashed."""
    plan = await aio.in_thread(plan_imports, paths, subject, session, ignore_unparsable)
    before: asyncio.Future[list[tuple[str, int, str]]] | None = None
    for item in [i for i in plan.imports if i.archive is not None and not i.expected][:jobs]:
        assert item.archive is not None
        before = item.hashing = asyncio.ensure_future(_members_after(before, item.archive))
        ahead.append(before)
    return plan


async def _members_after(
    before: asyncio.Future[list[tuple[str, int, str]]] | None, archive: Path
) -> list[tuple[str, int, str]]:
    """:func:`archive_members` of ``archive`` once ``before`` has ended, however it ended
    (its outcome is for its own archive)."""
    if before is not None:
        await asyncio.wait([before])
    return await aio.in_thread(archive_members, archive)


async def _send_imports(
    xs: XnatClient,
    plan: LocalPlan,
    options: ImportOptions,
    report: UploadReport,
    sink: EventSink,
) -> None:
    """Every import of the plan, ``options.jobs`` in flight at once, each verified as it
    finishes, then the projects' and subjects' own resource files.  Two imports that would
    make one session are refused before anything is sent."""
    imports = plan.imports
    extras = [
        (i.root / e.local).stat().st_size
        for i in imports
        if i.folder is not None and i.root is not None and options.dest == "archive"
        for e in i.folder.sent_after_import()
    ]
    extras += [Path(base / f.local).stat().st_size for base, f in plan.own]
    sink(
        Planned(
            sum(len(i.expected) or i.files for i in imports) + len(extras),
            sum(i.size for i in imports) + sum(extras),
        )
    )
    taken = duplicate_labels([i.label for i in imports])
    if taken:
        msg = (
            f"two parts of this upload would both become session {', '.join(taken)} in "
            f"{options.project}: upload them one at a time or give each its own --session; "
            "nothing was sent"
        )
        raise UsageError(msg)
    gate = asyncio.Semaphore(max(1, options.jobs))

    async def one(item: Import) -> None:
        async with gate:
            if item.archive is not None and not item.expected:
                try:
                    item.expected = await (
                        item.hashing or aio.in_thread(archive_members, item.archive)
                    )
                except UsageError as exc:  # its listing was whole, some member is not
                    fail_session(item, report, sink, str(exc))
                    return
            mine = UploadReport()  # this session's part, so a failure part-way is its own
            try:
                await one_session(xs, item, options, mine, sink)
            except (ConnectionFailed, ServerError) as exc:
                unfinished(item, mine, sink, str(exc))
            report.outcomes += mine.outcomes
            report.sessions += mine.sessions
            report.notes += mine.notes

    try:
        async with asyncio.TaskGroup() as group:
            for item in imports:
                group.create_task(one(item))
    except* XnatError as errors:
        raise errors.exceptions[0] from None
    if plan.own:
        await _own_resources(xs, plan.own, options, report, sink)


async def _own_resources(
    xs: XnatClient,
    own: list[tuple[PurePosixPath, OwnResourceFile]],
    options: ImportOptions,
    report: UploadReport,
    sink: EventSink,
) -> None:
    """The projects' and subjects' own resource files of the trees uploaded, into the
    project and its subjects of those labels; after the sessions, whose imports make most
    of the subjects (one that is not there yet is made first).  Sent, skipped when there
    with the same MD5, and verified like any resource upload; a server that stops
    answering fails them all, with the advice to run the same command again."""
    groups = own_resource_groups(own)
    uploads = [
        ResourceUpload(
            paths.owner(options.project, subject or ""),
            label,
            [(Path(local), rel) for local, rel in files],
        )
        for (subject, label), files in sorted(
            groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
        )
    ]
    try:
        for subject in sorted({s for s, _ in groups if s is not None}):
            await ensure_subject(xs, options.project, subject)
        report.outcomes += await upload_resources(
            xs, uploads, sink, jobs=options.jobs, overwrite=options.overwrite, announce=False
        )
    except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
        # The sessions stand, verified: these files fail, named, and the report is kept.
        error = f"{exc}; run the same command again to finish the upload"
        for upload in uploads:
            for local, rel in upload.files:
                size = local.stat().st_size if local.exists() else 0
                job = upload.job(rel, size, "")
                report.outcomes.append(Outcome(job, Status.FAILED, 0, "", True, error))
        sink(FileFailed("the project's and subjects' own resources", error))


async def _sessions_on_server(xs: XnatClient, project: str) -> dict[str, list[tuple[str, str]]]:
    """The project's sessions by study UID, or none when they cannot be listed: every
    archive is then sent (a server that does not answer fails each import on its own)."""
    try:
        return await sessions_by_study(xs, project)
    except (ConnectionFailed, ServerError, NotFound):
        return {}


def _resource_plan(paths: list[Path]) -> list[tuple[Path, str]]:
    roots: list[tuple[PurePosixPath, list[PurePosixPath]]] = []
    for path in paths:
        if path.is_dir():
            roots.append((PurePosixPath(path.as_posix()), files_under(path)))
        elif path.is_file():
            roots.append((PurePosixPath(path.as_posix()), []))
        else:
            raise UsageError(f"{path} does not exist; nothing was sent")
    pairs = resource_files(roots)
    if not pairs:
        raise UsageError("no files to upload: the folders given are empty")
    return [(Path(local), remote) for local, remote in pairs]


def _owner_base(project: str, subject: str, session: str, scan: str) -> str:
    if scan and not session:
        raise UsageError("--scan needs --session: name the session the scan belongs to")
    return paths.owner(project, subject, session, scan)


async def require_project(xs: XnatClient, project: str) -> None:
    """NotFound, naming the command that creates it, unless ``project`` is there to see."""
    try:
        await xs.get_json(paths.project(project), what=f"project {project}")
    except NotFound:
        msg = (
            f"project {project} does not exist on {xs.base_url}, or you cannot see it; "
            f"create it with: xnat-downloader project create -w {xs.base_url} {project}"
        )
        raise NotFound(msg) from None


async def _check_owner(xs: XnatClient, base: str) -> None:
    try:
        await xs.get_json(base, what=base)
    except NotFound:
        msg = f"{base} does not exist: create the subject, session or scan first"
        raise NotFound(msg) from None


def upload(
    conn: Connection,
    paths: list[str | Path],
    project: str,
    *,
    subject: str = "",
    session: str = "",
    scan: str = "",
    dest: str = "archive",
    importer: str = "DICOM-zip",
    ignore_unparsable: bool = False,
    overwrite: bool = False,
    resource: str | None = None,
    jobs: int = 4,
    sink: EventSink = ignore,
) -> UploadReport:
    """Import archives and folders into ``project``, or put files into ``resource``."""
    check_jobs(jobs)
    if dest not in DESTINATIONS:
        raise UsageError(f"dest must be archive or prearchive, not {dest!r}")
    if importer not in IMPORTERS:
        raise UsageError(f"importer must be DICOM-zip or SI, not {importer!r}")
    if not paths:
        raise UsageError("name at least one file or folder to upload")
    if scan and resource is None:
        raise UsageError("scan= names the scan whose resource= to fill: give resource= too")
    return aio.run(
        _upload(
            conn,
            [Path(p) for p in paths],
            project,
            subject=subject,
            session=session,
            scan=scan,
            dest=dest,
            importer=importer,
            ignore_unparsable=ignore_unparsable,
            overwrite=overwrite,
            resource=resource,
            jobs=jobs,
            sink=sink,
        )
    )


async def upload_async(
    conn: Connection | XnatClient,
    paths: list[Path],
    project: str,
    *,
    jobs: int = 4,
    sink: EventSink = ignore,
) -> UploadReport:
    """:func:`upload` of download-layout folders into the archive, inside a running event
    loop (server-to-server copies).  ``conn`` is a :class:`Connection` (logged in for this
    call) or an open client, whose session is used and left open: a copy keeps one per
    server for its whole run, so a server that answered once is retried when it stops."""
    return await _upload(
        conn,
        paths,
        project,
        subject="",
        session="",
        scan="",
        dest="archive",
        importer="DICOM-zip",
        ignore_unparsable=False,
        overwrite=False,
        resource=None,
        jobs=jobs,
        sink=sink,
    )


__all__ = [
    "UploadReport",
    "XnatError",
    "require_project",
    "upload",
    "upload_async",
]

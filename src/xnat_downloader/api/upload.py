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
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.manage import record_prearchived
from xnat_downloader.errors import (
    AccessDenied,
    ConnectionFailed,
    LocalReadError,
    LocalWriteError,
    NotFound,
    ServerError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.upload import (
    DerivedFolder,
    OwnResourceFile,
    ResourceFile,
    SessionFolder,
    archive_type,
    compare_contents,
    duplicate_labels,
    find_own_resources,
    find_sessions,
    is_metadata,
    own_resource_groups,
    resource_files,
    resource_folders_only,
    staging_label,
)
from xnat_downloader.transfer.archives import (
    archive_members,
    study_uids,
    zip_file_count,
    zip_identity,
)
from xnat_downloader.transfer.engine import check_jobs
from xnat_downloader.transfer.events import (
    BytesMoved,
    EventSink,
    FileFailed,
    FileSkipped,
    FileStarted,
    FileVerified,
    Planned,
    ignore,
)
from xnat_downloader.transfer.jobs import Job, Outcome, OutcomeCounts, Status
from xnat_downloader.transfer.localfs import files_under
from xnat_downloader.transfer.upload import (
    ResourceUpload,
    file_body,
    md5_file,
    upload_resources,
    zip_body,
)
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.derived import put_assessor, put_recon, recon_fields
from xnat_downloader.xnat.services import (
    ensure_subject,
    find_session,
    import_archive,
    remote_digest_list,
    sessions_by_study,
    set_scan_types,
)

log = logging.getLogger("xnat_downloader")
IMPORTERS = ("DICOM-zip", "SI")
DESTINATIONS = ("archive", "prearchive")


@dataclass
class UploadReport(OutcomeCounts):
    """What an upload did.  ``ok``: nothing failed (prearchived files count as sent)."""

    outcomes: list[Outcome] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)  # URIs the import service answered
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        """Files sent to the prearchive: not verified yet, not failed."""
        return sum(1 for o in self.outcomes if o.status == "sent")


@dataclass
class _Import:
    """One request to the import service and what it should leave on the server."""

    name: str
    content_type: str
    body: Callable[[Callable[[int], None]], AsyncIterator[bytes]]
    size: int
    expected: list[tuple[str, int, str]]  # (name, size, md5) of each file that must arrive
    subject: str = ""
    label: str = ""
    may_drop: bool = False  # the server may leave files out (archives, --ignore-unparsable)
    folder: SessionFolder | None = None
    root: Path | None = None
    archive: Path | None = None  # an archive sent as it is
    files: int = 0  # for an archive not read yet: how many files its listing names
    # Its members being hashed (:func:`archive_members`) ahead of its turn: set for the
    # first archives to go, so that their hashing overlaps the login's round trips.
    hashing: asyncio.Future[list[tuple[str, int, str]]] | None = None
    # Its assessors and reconstructions (keys of ``folder.derived``) whose files all have
    # outcomes, as they are done: what a session stopped part-way has yet to count.
    derived_done: set[tuple[str, str]] = field(default_factory=set)

    def job(self, name: str, size: int, md5: str) -> Job:
        """The record of one file of this import, as its outcome names it."""
        return Job(self.name, f"{self.name}:{name}", size, md5)


@dataclass
class _LocalPlan:
    """What the paths given hold: the imports, the projects' and subjects' own resource
    files of download-layout trees (each with the folder its path is relative to, and the
    subject label it goes to), and notes about what is not sent."""

    imports: list[_Import]
    own: list[tuple[PurePosixPath, OwnResourceFile]]
    notes: list[str]


def _plan_imports(
    paths: list[Path], subject: str, session: str, ignore_unparsable: bool
) -> _LocalPlan:
    imports: list[_Import] = []
    own: list[tuple[PurePosixPath, OwnResourceFile]] = []
    notes: list[str] = []
    for path in paths:
        if path.is_dir():
            rels = files_under(path)
            if not rels:
                raise UsageError(f"{path} holds no files; nothing was sent")
            # Relative to the parent, so the folder itself may be a session.
            sessions, loose = find_sessions([PurePosixPath(path.name) / r for r in rels])
            if sessions:
                if session and len(sessions) > 1:
                    msg = (
                        f"--session names one session, but {path} holds {len(sessions)}; "
                        "leave it out (each folder's name is used) or upload one at a time"
                    )
                    raise UsageError(msg)
                theirs, loose = find_own_resources(sessions, loose)
                base = PurePosixPath(path.parent.as_posix())
                own += [(base, replace(f, subject=subject or f.subject) if f.subject else f)
                        for f in theirs]  # fmt: skip
                documents = [r for r in loose if is_metadata(r)]
                if documents:
                    n = len(documents)
                    notes.append(
                        f"not sent, as the server writes its own: {n} metadata "
                        f"document{'s' if n != 1 else ''} in {path} (project.xml, session.xml, …)"
                    )
                loose = [r for r in loose if not is_metadata(r)]
                if loose:
                    notes.append(f"{len(loose)} files in {path} are outside any session: not sent")
                for found in sessions:
                    imports.append(_session_import(path.parent, found, subject, session))
                continue
            folders = resource_folders_only(rels)
            if folders:  # not for the importer, and whose they are cannot be told
                shown = ", ".join(str(path / f) for f in folders[:3])
                msg = (
                    f"{path} holds only resource folders ({shown}"
                    f"{', …' if len(folders) > 3 else ''}) and no session to import; upload "
                    "each with --resource LABEL (and --subject S for a subject's), e.g. "
                    f"--resource {folders[0].parent.name} {path / folders[0]}"
                )
                raise UsageError(msg)
            members = [(path / r, r.as_posix()) for r in rels]
            imports.append(
                _Import(
                    name=f"{path.name}/ (zipped while sent)",
                    content_type="application/zip",
                    body=lambda moved, m=members: zip_body(m, moved),  # type: ignore[misc]
                    size=sum(p.stat().st_size for p, _ in members),
                    expected=[(n, p.stat().st_size, md5_file(p)) for p, n in members],
                    subject=subject,
                    label=session,
                    may_drop=ignore_unparsable,
                )
            )
            continue
        content_type = archive_type(path.name)
        if not path.is_file():
            raise UsageError(f"{path} does not exist; nothing was sent")
        if content_type is None:
            msg = (
                f"{path} is not an archive (.zip, .tar.gz, .tgz, .tar), a folder, or a subjects "
                ".csv; to put single files into a resource, add --resource LABEL"
            )
            raise UsageError(msg)
        size = path.stat().st_size
        imports.append(
            _Import(
                name=path.name,
                content_type=content_type,
                body=lambda moved, p=path, n=size: file_body(p, n, moved),  # type: ignore[misc]
                size=size,
                expected=[],  # read below, all archives at once
                subject=subject,
                label=session,
                may_drop=True,
                archive=path,
            )
        )
    # Every archive is checked before anything is sent.  A plain zip's listing (its central
    # directory) is enough for that, and its files are hashed just before it is sent, while
    # other sessions are on their way; the others (tar files, whose listing is their whole
    # content, and zips of archives) are read whole now, several at once, since hashing
    # releases the interpreter lock.
    read_now: list[_Import] = []
    for item in imports:
        if item.archive is not None:
            item.files = zip_file_count(item.archive) or 0
            if not item.files:
                read_now.append(item)
    # Each thread runs in this one's context, so that an upload stopped while they read
    # stops them too (aio.check_abandoned).
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        read = pool.map(
            lambda p: context.copy().run(archive_members, p), [i.archive for i in read_now]
        )
        for item, listed in zip(read_now, read, strict=True):
            item.expected = listed
    own_resource_groups(own)  # two files for one remote path: refused before anything is sent
    return _LocalPlan(imports, own, notes)


def _session_import(base: Path, found: SessionFolder, subject: str, session: str) -> _Import:
    members = [(base / rel, arcname) for rel, arcname in found.imported]
    label = session or found.label
    if label != found.label:
        members = [(p, label + a[len(found.label) :]) for p, a in members]
    parent = found.subject or base.name
    return _Import(
        name=f"{found.folder}/",
        content_type="application/zip",
        body=lambda moved, m=members: zip_body(m, moved),  # type: ignore[misc]
        size=sum(p.stat().st_size for p, _ in members),
        expected=[(a, p.stat().st_size, md5_file(p)) for p, a in members],
        subject=subject or parent,
        label=label,
        folder=found,
        root=base,
    )


def _import_params(
    project: str, item: _Import, dest: str, importer: str, ignore: bool, mode: str, label: str
) -> dict[str, str]:
    """The import service's parameters; ``mode`` is its ``overwrite`` (``none``, ``append``:
    add what is missing, ``delete``: replace the files sent)."""
    params = {
        "PROJECT_ID": project,
        "import-handler": importer,
        "dest": f"/{dest}/projects/{project}",
    }
    if item.subject:
        params["SUBJECT_ID"] = item.subject
    if label:
        params["EXPT_LABEL"] = label
    if ignore:
        params["Ignore-Unparsable"] = "true"
    if mode != "none":
        params["overwrite"] = mode
    return params


async def _session_digests(xs: XnatClient, uri: str, resources: str = "") -> list[tuple[int, str]]:
    """(size, md5) of a session's scan files, of every resource or of those named."""
    return await remote_digest_list(xs, paths.session_scan_files(uri, resources))


def _verify_import(
    item: _Import, server: list[tuple[int, str]], sink: EventSink, *, already: bool = False
) -> tuple[list[Outcome], str | None]:
    """Each expected file must be on the server with its MD5 (or size, if none listed).
    ``already``: nothing was sent, the files were there before this run; each found is
    then skipped (verified, and counted as already on the server), not sent and verified."""
    pool = Counter(server)
    by_size = Counter(size for size, _ in server)
    outcomes: list[Outcome] = []
    dropped = 0

    def found(job: Job, size: int, md5: str, by_digest: bool) -> None:
        if already:
            sink(FileSkipped(job.local, size, "already on the server with the same MD5"))
            outcomes.append(Outcome(job, Status.SKIPPED, size, md5, by_digest))
        else:
            sink(FileVerified(job.local, size, md5, by_digest))
            outcomes.append(Outcome(job, Status.VERIFIED, size, md5, by_digest))

    for name, size, md5 in item.expected:
        job = item.job(name, size, md5)
        if pool[(size, md5)] > 0:
            pool[(size, md5)] -= 1
            found(job, size, md5, True)
        elif by_size[size] > 0 and not any(d for _, d in server):
            by_size[size] -= 1
            found(job, size, md5, False)
        elif item.may_drop:
            dropped += 1
        else:
            error = (
                "not on the server with the MD5 that was sent (did the server rewrite or drop it?)"
            )
            sink(FileFailed(job.local, error))
            outcomes.append(Outcome(job, Status.FAILED, 0, md5, True, error))
    if dropped and not outcomes and item.expected:
        # Nothing sent is on the server as sent: not files left out, but rewritten ones.
        error = (
            "the session holds none of the files as sent (did the server rewrite them, "
            "e.g. with an anonymization script?)"
        )
        for name, size, md5 in item.expected:
            job = item.job(name, size, md5)
            outcomes.append(Outcome(job, Status.FAILED, 0, md5, True, error))
        sink(FileFailed(item.name, error))
        return outcomes, None
    note = None
    if dropped:
        note = (
            f"{item.name}: {dropped} of its files were not imported (not DICOM, or in a "
            "resource the importer ignores)"
        )
    return outcomes, note


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
            options = _ImportOptions(
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
) -> _LocalPlan:
    """:func:`_plan_imports` in a thread; then the first ``jobs`` archives, the first to be
    sent, start being hashed (:attr:`_Import.hashing`, also put in ``ahead``), one after
    another: side by side they would all be ready last, and the first could go while the
    others are hashed."""
    plan = await aio.in_thread(_plan_imports, paths, subject, session, ignore_unparsable)
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
    plan: _LocalPlan,
    options: _ImportOptions,
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

    async def one(item: _Import) -> None:
        async with gate:
            if item.archive is not None and not item.expected:
                try:
                    item.expected = await (
                        item.hashing or aio.in_thread(archive_members, item.archive)
                    )
                except UsageError as exc:  # its listing was whole, some member is not
                    _fail_session(item, report, sink, str(exc))
                    return
            mine = UploadReport()  # this session's part, so a failure part-way is its own
            try:
                await _one_session(xs, item, options, mine, sink)
            except (ConnectionFailed, ServerError) as exc:
                _unfinished(item, mine, sink, str(exc))
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
    options: _ImportOptions,
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


async def _already_there(
    xs: XnatClient, item: _Import, opts: _ImportOptions
) -> tuple[str, str] | None:
    """(label, URI) of the session already in the project that a zip sent without a label
    would make, so that it is compared rather than sent again: a re-run after an
    interruption would otherwise send every archive whole, to be told 409.  A cheap look at
    its first file's header says whether its study may be there; only then are all its
    headers read and the session looked up.  Anything less sure is sent (a 409 then leads
    to the same comparison)."""
    if opts.on_server is None or item.archive is None or item.label:
        return None
    identity = await aio.in_thread(zip_identity, item.archive)
    known = await opts.on_server
    if identity is None or identity[1] not in known:
        return None
    found = await _session_of_archive(xs, item, opts.project, known, identity)
    # The same study under another label is another session (the importer makes a new one
    # from this archive's folder): only a session of that label is this one.
    return found if found is not None and found[0] == identity[0] else None


@dataclass(frozen=True)
class _ImportOptions:
    project: str
    dest: str
    importer: str
    ignore: bool
    overwrite: bool
    jobs: int
    # The project's sessions by study UID when the upload began (asked once, alongside the
    # project's check): an archive whose study is not among them is sent at once.
    on_server: asyncio.Task[dict[str, list[tuple[str, str]]]] | None = None


def _fail_session(item: _Import, report: UploadReport, sink: EventSink, error: str) -> None:
    """One failure for a whole session: each file records it (its other resources' files
    too, which were never sent), the display says it once."""
    for name, size, md5 in item.expected or [(item.name, item.size, "")]:
        report.outcomes.append(
            Outcome(item.job(name, size, md5), Status.FAILED, 0, md5, True, error)
        )
    _extras_not_sent(item, report, error)
    sink(FileFailed(item.name, error))


def _unfinished(item: _Import, mine: UploadReport, sink: EventSink, error: str) -> None:
    """A session the server stopped answering for (or answered wrongly) part-way: every file
    of it fails, said once, and the upload goes on with the others.  Files it already
    verified fail too when a later step (its scan types, other resources or label) did not
    happen: the session is not yet what was asked for.  A re-run compares what the server
    kept and finishes it."""
    error += "; the session is not finished: run the same command again to finish it"
    # What the import made is not the session asked for (it may still carry its staging
    # label): named as a note, never listed among the sessions this upload made.
    mine.notes += [
        f"{item.name}: not finished; what the server has of it so far is {uri}"
        for uri in mine.sessions
    ]
    mine.sessions = []
    if not mine.outcomes:
        _fail_session(item, mine, sink, error)
        return
    mine.outcomes = [
        o if o.status == Status.FAILED else Outcome(o.job, Status.FAILED, 0, o.md5, True, error)
        for o in mine.outcomes
    ]
    extras = len(item.folder.extras) if item.folder is not None else 0
    if len(mine.outcomes) < len(item.expected) + extras:  # its other resources never went
        _extras_not_sent(item, mine, error)
    _derived_not_sent(item, mine, error)
    sink(FileFailed(item.name, error, counted=True))  # its files were counted as they went


def _extras_not_sent(item: _Import, report: UploadReport, why: str) -> None:
    """The files of a session's other resources, failed with ``why`` without being sent:
    they go after the import, and the import failed; counted, so the totals add up."""
    if item.folder is None or item.root is None:
        return
    for extra in item.folder.extras:
        try:
            size = (item.root / extra.local).stat().st_size
        except OSError:
            size = 0
        job = item.job(f"{extra.resource}/{extra.relpath}", size, "")
        report.outcomes.append(Outcome(job, Status.FAILED, 0, "", True, why))


async def _one_session(
    xs: XnatClient, item: _Import, opts: _ImportOptions, report: UploadReport, sink: EventSink
) -> None:
    """Import one session (or archive) so that a re-run after any interruption finishes it.

    A session already on the server is compared with the upload by content: the same →
    nothing is sent; some of ours missing → only those are sent; other content → refused
    once, unless ``--overwrite``.  A session that gets more than the import (other
    resources, scan types) is imported under a staging label and renamed last, so an
    interrupted upload never leaves one that looks finished.
    """
    if opts.dest != "archive" or not item.label:  # nothing to compare with: the flag decides
        found = None if opts.overwrite else await _already_there(xs, item, opts)
        if found is not None:
            there, uri = found
            await _compared(xs, item, opts, report, sink, uri, there, there)
            return
        mode = "delete" if opts.overwrite else "none"
        await _import_and_verify(xs, item, opts, report, sink, mode, item.label)
        return
    label = item.label
    staged = item.folder is not None and bool(
        item.folder.extras or item.folder.scan_types or item.folder.derived
    )
    existing = await find_session(xs, opts.project, label)
    current = label
    if existing is None and staged:
        current = staging_label(label)
        existing = await find_session(xs, opts.project, current)
    if existing is None:
        log.info("session %s: importing %d files as %s", label, len(item.expected), current)
        uris = await _import_and_verify(xs, item, opts, report, sink, "none", current)
    else:
        uris = await _compared(xs, item, opts, report, sink, existing, label, current)
    if uris is None or len(uris) != 1 or item.folder is None or item.root is None:
        return
    await _session_extras(xs, uris[0], item, report, sink, opts)
    log.info("session %s: other resources and scan types done", label)
    if current != label:
        await xs.send(
            "PUT",
            paths.owner(opts.project, session=current),
            params={"label": label},
            what=f"the label of session {label}",
        )
        # The import answered with the staging label's URI; the report names the session.
        report.sessions = [paths.relabelled(u, current, label) for u in report.sessions]
        log.info("session %s: renamed from %s, complete", label, current)


async def _import_and_verify(
    xs: XnatClient,
    item: _Import,
    opts: _ImportOptions,
    report: UploadReport,
    sink: EventSink,
    mode: str,
    label: str,
) -> list[str] | None:
    """Send ``item`` to the import service (``mode``: its ``overwrite``) and check every
    file arrived; the session URIs, or None when the import was refused, went to the
    prearchive, or is not on the server as it was sent."""
    params = _import_params(opts.project, item, opts.dest, opts.importer, opts.ignore, mode, label)
    sink(FileStarted(item.name, item.size))
    sent = [0]

    def moved(n: int) -> None:
        sent[0] += n
        sink(BytesMoved(item.name, n))

    def body() -> AsyncIterator[bytes]:
        if sent[0]:
            sink(BytesMoved(item.name, -sent[0]))
            sent[0] = 0
        return item.body(moved)

    try:
        length = item.size if item.archive is not None else None  # a folder is zipped as sent
        uris = await import_archive(xs, body, item.content_type, params, item.name, length)
    except LocalReadError as exc:  # this archive changed or went away: the others go on
        _fail_session(item, report, sink, str(exc))
        return None
    except ServerError as exc:  # 400 (bad archive), 409 (exists): this item fails, not all
        if exc.status == 409 and mode == "none" and not label and opts.dest == "archive":
            # An archive the importer names from its DICOM (no label given): the session
            # it would make is there.  Found by its study UID, it is compared by content
            # like a labelled one (the same archive sent again is no failure).
            existing = await _session_of_archive(xs, item, opts.project)
            if existing is not None:
                there, uri = existing
                return await _compared(xs, item, opts, report, sink, uri, there, there)
        error = str(exc)
        if exc.status == 409 and mode == "none" and opts.dest == "archive" and item.label:
            # It was not there when this upload looked: another upload is sending it.
            error += " (it appeared while this upload ran: run the same command again)"
        elif exc.status == 409 and not opts.overwrite:
            error += " (add --overwrite to add to or replace files in that session)"
        elif exc.status == 400 and not opts.ignore and "dicom" in error.lower():
            error += " (--ignore-unparsable leaves out the files that are not DICOM)"
        _fail_session(item, report, sink, error)
        return None
    report.sessions += uris
    if opts.dest == "prearchive" or any(paths.is_prearchive(u) for u in uris):
        if len(uris) == 1:  # what was sent, for 'prearchive archive' to check later
            try:
                record_prearchived(xs.base_url, uris[0], [(s, m) for _, s, m in item.expected])
            except LocalWriteError as exc:  # the upload stands; only the later check is lost
                report.notes.append(
                    f"{item.name}: what was sent could not be recorded ({exc}); 'prearchive "
                    "archive' will archive it without checking it"
                )
        for name, size, md5 in item.expected:
            job = item.job(name, size, md5)
            report.outcomes.append(Outcome(job, Status.SENT, size, md5, False))
        folder = item.folder
        later = (
            0
            if folder is None
            else len(folder.extras) + sum(len(d.files) for d in folder.derived.values())
        )
        if later:
            report.notes.append(
                f"{item.name}: {later} files of other resources, assessors and "
                "reconstructions were not sent: they need the archived session (use --dest "
                "archive)"
            )
        return None
    server: list[tuple[int, str]] = []
    for uri in uris:
        server += await _session_digests(xs, uri)
    outcomes, note = _verify_import(item, server, sink)
    report.outcomes += outcomes
    if note:
        report.notes.append(note)
    if any(o.status == Status.FAILED for o in outcomes):
        # Not what was sent: its other resources, scan types and label wait for a re-run.
        _extras_not_sent(item, report, "not sent: the session's import did not verify")
        return None
    return uris


async def _session_of_archive(
    xs: XnatClient,
    item: _Import,
    project: str,
    known: dict[str, list[tuple[str, str]]] | None = None,
    identity: tuple[str, str] | None = None,
) -> tuple[str, str] | None:
    """(label, URI) of the session of ``project`` with the study UID of the archive's
    DICOM (of several, the one named as the zip's folder), or None (several studies, none
    found, or more than one such session and none of them so named).  ``known``: the
    project's sessions by study UID, if already listed; ``identity``: the archive's
    :func:`zip_identity`, if already read."""
    if item.archive is None:
        return None
    uids = await aio.in_thread(study_uids, item.archive)
    if len(uids) != 1:
        return None
    if known is None:
        try:
            known = await sessions_by_study(xs, project)
        except (ServerError, NotFound):  # a server that cannot list by UID: the 409 stands
            return None
    found = known.get(uids.pop(), [])
    if len(found) > 1:  # the same study imported under other labels too
        if identity is None:
            identity = await aio.in_thread(zip_identity, item.archive)
        found = [f for f in found if identity is not None and f[0] == identity[0]]
    return found[0] if len(found) == 1 else None


async def _compared(
    xs: XnatClient,
    item: _Import,
    opts: _ImportOptions,
    report: UploadReport,
    sink: EventSink,
    existing: str,
    label: str,
    current: str,
) -> list[str] | None:
    """``item`` against its session already on the server (``existing``, there as
    ``current``), by content: the same → verified, nothing sent; some of ours missing →
    sent again to add them (with ``--overwrite``, to replace); other content → one failure
    naming ``--overwrite``.  The session URIs, or None when nothing stands verified."""
    # What the importer made of an earlier run: its DICOM and ECAT files only (the
    # session's other resources are uploaded and compared file by file afterwards).
    server = await _session_digests(xs, existing, "DICOM,ECAT")
    comparison = compare_contents([(s, m) for _, s, m in item.expected], server)
    log.info(
        "session %s: on the server as %s (%s: %d of ours missing, %d others there)",
        label, current, comparison.state, comparison.missing, comparison.extra,
    )  # fmt: skip
    if comparison.state == "same":
        outcomes, _ = _verify_import(item, server, sink, already=True)
        report.outcomes += outcomes
        report.notes.append(f"{item.name}: session {label} is already on the server, verified")
        return [existing]
    if comparison.state == "incomplete" or opts.overwrite:
        mode = "append" if comparison.state == "incomplete" else "delete"
        return await _import_and_verify(xs, item, opts, report, sink, mode, current)
    _fail_session(
        item,
        report,
        sink,
        f"session {label} is already in {opts.project} with other content "
        f"({comparison.extra} files there are not in this upload, {comparison.missing} of "
        "its files are not there); add --overwrite to replace the files it sends",
    )
    return None


async def _session_extras(
    xs: XnatClient,
    uri: str,
    item: _Import,
    report: UploadReport,
    sink: EventSink,
    opts: _ImportOptions,
) -> None:
    """What a session of a download-layout tree gets after its import: its scan types, its
    other resources' files, its assessors and reconstructions."""
    found, root = item.folder, item.root
    assert found is not None
    assert root is not None
    if found.scan_types:
        await set_scan_types(xs, uri, found.scan_types)
    groups: dict[tuple[str | None, str], list[tuple[Path, str]]] = {}
    for extra in found.extras:
        groups.setdefault((extra.scan, extra.resource), []).append(
            (root / extra.local, extra.relpath)
        )
    uploads = [
        ResourceUpload(paths.scan_of(uri, s) if s else uri, label, files)
        for (s, label), files in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
    ]
    if uploads:
        report.outcomes += await upload_resources(
            xs, uploads, sink, jobs=opts.jobs, overwrite=opts.overwrite, announce=False
        )
    unmade: list[DerivedFolder] = []
    for key in sorted(found.derived):
        folder = found.derived[key]
        if folder.document is None:
            unmade.append(folder)
        else:
            await _make_derived(xs, uri, found.label, folder, root, report, sink, opts)
            item.derived_done.add(key)
    files = [f.local for d in unmade for f in d.files]
    kinds = Counter(rel.parts[len(found.folder.parts)] for rel in [*found.ignored, *files])
    if kinds:
        said = " and ".join(
            f"{n} {kind[:-1]} file{'s' if n != 1 else ''}" for kind, n in sorted(kinds.items())
        )
        report.notes.append(
            f"{found.folder}: not sent, as no assessor.xml or recon.xml (what 'download "
            "--metadata xml' saves) says what to make ('copy --assessors --recons' reads it "
            f"from the server): {said}"
        )


async def _make_derived(
    xs: XnatClient,
    uri: str,
    session: str,
    folder: DerivedFolder,
    root: Path,
    report: UploadReport,
    sink: EventSink,
    opts: _ImportOptions,
) -> None:
    """Make an assessor or reconstruction of the session at ``uri`` (``session``: its
    label in the upload, which ``uri`` may not show yet) from its document in
    the tree (an assessor with its fields; the PUT of the same again changes nothing), then
    upload and verify its resources' files into its ``…/out`` resources.  One the server
    refuses (or whose document does not read) fails with its files, said once, and the
    session stands; a server that stops answering or fails (5xx) ends the session's unit
    of work like any other step of it."""
    what = f"{folder.collection[:-1]} {folder.name} of {session}"
    base = paths.derived(uri, folder.collection, folder.name) + "/out"
    try:
        assert folder.document is not None
        document = await aio.in_thread((root / folder.document).read_bytes)
        if folder.collection == "assessors":
            await put_assessor(xs, uri, folder.name, document, opts.project)
        else:
            await put_recon(xs, uri, folder.name, recon_fields(document))
    except (OSError, AccessDenied, NotFound, ServerError) as exc:
        if isinstance(exc, ServerError) and (exc.status or 0) >= 500:
            raise
        error = f"{exc}; run the same command again to make it"
        sink(FileFailed(what, error))
        if not folder.files:
            report.outcomes.append(Outcome(Job(what, what, None, None), Status.FAILED, 0, "",
                                           False, error))  # fmt: skip
        for f in folder.files:
            report.outcomes.append(
                Outcome(_derived_job(base, f), Status.FAILED, 0, "", True, error)
            )
        return
    groups: dict[str, list[tuple[Path, str]]] = {}
    for f in folder.files:
        groups.setdefault(f.resource, []).append((root / f.local, f.relpath))
    uploads = [ResourceUpload(base, label, files) for label, files in sorted(groups.items())]
    if uploads:
        report.outcomes += await upload_resources(
            xs, uploads, sink, jobs=opts.jobs, overwrite=opts.overwrite, announce=False
        )


def _derived_job(base: str, f: ResourceFile) -> Job:
    """The job of an assessor's or reconstruction's file (``base``: its ``…/out``), named
    as :func:`upload_resources` names the files it sends."""
    return ResourceUpload(base, f.resource, []).job(f.relpath)


def _derived_not_sent(item: _Import, report: UploadReport, why: str) -> None:
    """The files of a session's assessors and reconstructions that have no outcome yet (a
    step before them stopped the session), failed with ``why``: counted, so totals add up."""
    if item.folder is None:
        return
    for key, d in item.folder.derived.items():
        if key not in item.derived_done:
            for f in d.files:
                job = _derived_job(f"/{d.collection}/{paths.q(d.name)}/out", f)
                report.outcomes.append(Outcome(job, Status.FAILED, 0, "", True, why))


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

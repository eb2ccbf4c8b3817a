"""One session's unit of work in an upload (:func:`one_session`): compared by content with
what the server has, imported (under a staging label when more is to follow), verified file
by file, then given its scan types, other resources, assessors and reconstructions, and
renamed last, so that an interrupted upload never leaves a session that looks finished and
running the same upload again finishes it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from xnat_downloader import aio
from xnat_downloader.api.import_plan import Import
from xnat_downloader.api.manage import record_prearchived
from xnat_downloader.errors import (
    AccessDenied,
    LocalReadError,
    LocalWriteError,
    NotFound,
    ServerError,
)
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.upload import DerivedFolder, ResourceFile, compare_contents, staging_label
from xnat_downloader.transfer.archives import study_uids, zip_identity
from xnat_downloader.transfer.events import (
    BytesMoved,
    EventSink,
    FileFailed,
    FileSkipped,
    FileStarted,
    FileVerified,
)
from xnat_downloader.transfer.jobs import Job, Outcome, OutcomeCounts, Status
from xnat_downloader.transfer.upload import ResourceUpload, upload_resources
from xnat_downloader.words import counted
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.derived import put_assessor, put_recon, recon_fields
from xnat_downloader.xnat.documents import scan_rating
from xnat_downloader.xnat.services import (
    find_session,
    import_archive,
    remote_digest_list,
    sessions_by_study,
    set_scan_fields,
)

log = logging.getLogger("xnat_downloader")


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


@dataclass(frozen=True)
class ImportOptions:
    """What every session of one upload is sent with."""

    project: str
    dest: str
    importer: str
    ignore: bool
    overwrite: bool
    jobs: int
    # The project's sessions by study UID when the upload began (asked once, alongside the
    # project's check): an archive whose study is not among them is sent at once.
    on_server: asyncio.Task[dict[str, list[tuple[str, str]]]] | None = None


def _import_params(
    project: str, item: Import, dest: str, importer: str, ignore: bool, mode: str, label: str
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
    item: Import, server: list[tuple[int, str]], sink: EventSink, *, already: bool = False
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


async def _already_there(
    xs: XnatClient, item: Import, opts: ImportOptions
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


def fail_session(item: Import, report: UploadReport, sink: EventSink, error: str) -> None:
    """One failure for a whole session: each file records it (its other resources' files
    too, which were never sent), the display says it once."""
    for name, size, md5 in item.expected or [(item.name, item.size, "")]:
        report.outcomes.append(
            Outcome(item.job(name, size, md5), Status.FAILED, 0, md5, True, error)
        )
    _extras_not_sent(item, report, error)
    sink(FileFailed(item.name, error))


def unfinished(item: Import, mine: UploadReport, sink: EventSink, error: str) -> None:
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
        fail_session(item, mine, sink, error)
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


def _extras_not_sent(item: Import, report: UploadReport, why: str) -> None:
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


async def one_session(
    xs: XnatClient, item: Import, opts: ImportOptions, report: UploadReport, sink: EventSink
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
        item.folder.extras
        or item.folder.scan_types
        or item.folder.scan_documents
        or item.folder.derived
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
    item: Import,
    opts: ImportOptions,
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
        fail_session(item, report, sink, str(exc))
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
        fail_session(item, report, sink, error)
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
                f"{item.name}: {counted(later, 'file')} of other resources, assessors and "
                "reconstructions not sent: they need the archived session (use --dest archive)"
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
    item: Import,
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
    item: Import,
    opts: ImportOptions,
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
    fail_session(
        item,
        report,
        sink,
        f"session {label} is already in {opts.project} with other content "
        f"({counted(comparison.extra, 'file')} there not in this upload, "
        f"{counted(comparison.missing, 'file')} of it not there); add --overwrite to replace "
        "the files it sends",
    )
    return None


async def _session_extras(
    xs: XnatClient,
    uri: str,
    item: Import,
    report: UploadReport,
    sink: EventSink,
    opts: ImportOptions,
) -> None:
    """What a session of a download-layout tree gets after its import: its scan types, its
    other resources' files, its assessors and reconstructions."""
    found, root = item.folder, item.root
    assert found is not None
    assert root is not None
    fields: dict[str, dict[str, str]] = {s: {"type": t} for s, t in found.scan_types.items()}
    for scan, document in sorted(found.scan_documents.items()):
        try:
            rating = scan_rating(await aio.in_thread((root / document).read_bytes))
        except OSError:
            rating = None
        if rating is None:
            report.notes.append(f"{document}: unreadable, so scan {scan} keeps the quality "
                                "the import gave it")  # fmt: skip
        else:
            fields.setdefault(scan, {}).update(rating)
    if fields:
        await set_scan_fields(xs, uri, fields)
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
    made: list[str] = []
    for key in sorted(found.derived):
        folder = found.derived[key]
        if folder.document is None:
            unmade.append(folder)
        else:
            if await _make_derived(xs, uri, found.label, folder, root, report, sink, opts):
                made.append(folder.name)
            item.derived_done.add(key)
    if made:  # said, since one without files has no line of its own in the totals
        report.notes.append(f"{found.folder}: made or updated on the server: {', '.join(made)}")
    files = [f.local for d in unmade for f in d.files]
    kinds = Counter(rel.parts[len(found.folder.parts)] for rel in [*found.ignored, *files])
    if kinds:
        said = " and ".join(counted(n, f"{kind[:-1]} file") for kind, n in sorted(kinds.items()))
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
    opts: ImportOptions,
) -> bool:
    """Make an assessor or reconstruction of the session at ``uri`` (``session``: its
    label in the upload, which ``uri`` may not show yet) from its document in
    the tree (an assessor with its fields; the PUT of the same again changes nothing), then
    upload and verify its resources' files into its ``…/out`` resources.  One the server
    refuses (or whose document does not read) fails with its files, said once, and the
    session stands; a server that stops answering or fails (5xx) ends the session's unit
    of work like any other step of it.  False when it was not made."""
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
        return False
    groups: dict[str, list[tuple[Path, str]]] = {}
    for f in folder.files:
        groups.setdefault(f.resource, []).append((root / f.local, f.relpath))
    uploads = [ResourceUpload(base, label, files) for label, files in sorted(groups.items())]
    if uploads:
        report.outcomes += await upload_resources(
            xs, uploads, sink, jobs=opts.jobs, overwrite=opts.overwrite, announce=False
        )
    return True


def _derived_job(base: str, f: ResourceFile) -> Job:
    """The job of an assessor's or reconstruction's file (``base``: its ``…/out``), named
    as :func:`upload_resources` names the files it sends."""
    return ResourceUpload(base, f.resource, []).job(f.relpath)


def _derived_not_sent(item: Import, report: UploadReport, why: str) -> None:
    """The files of a session's assessors and reconstructions that have no outcome yet (a
    step before them stopped the session), failed with ``why``: counted, so totals add up."""
    if item.folder is None:
        return
    for key, d in item.folder.derived.items():
        if key not in item.derived_done:
            for f in d.files:
                job = _derived_job(f"/{d.collection}/{paths.q(d.name)}/out", f)
                report.outcomes.append(Outcome(job, Status.FAILED, 0, "", True, why))

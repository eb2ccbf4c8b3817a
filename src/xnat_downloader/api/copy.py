"""The Python API for copying sessions from one XNAT to another: :func:`copy`.

Session by session, never the whole selection on disk at once: the session's files are
fetched (verified against the source's MD5s) into a scratch folder in the download layout,
uploaded to the target (imported, then its other resources; see :mod:`uploads`), verified
there, and the scratch folder removed.  A session whose files are all on the target with
the source's MD5s is neither fetched nor sent, so a re-run after an interruption does only
what is left.  Projects' and subjects' own resources (``project_resources``,
``subject_resources``) follow the sessions, resource by resource, the same way, file by
file: one already on the target with the source's MD5 is neither fetched nor sent.  A
session's assessors and reconstructions (``assessors``, ``recons``) follow it: each made on
the target from what the source says of it (see :mod:`xnat.derived`), then its files, as
resources are.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from xnat_downloader import aio
from xnat_downloader.api import upload as uploads
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.download import (
    PlanResult,
    Report,
    check_output_dir,
    plan_in,
    run_planned,
)
from xnat_downloader.errors import (
    AccessDenied,
    ConnectionFailed,
    NotFound,
    ServerError,
    UsageError,
)
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.layout import Layout, LayoutOptions
from xnat_downloader.plan.plan import Plan, PlanEntry
from xnat_downloader.transfer.engine import EngineOptions, check_jobs
from xnat_downloader.transfer.events import (
    Event,
    EventSink,
    FileFailed,
    FileVerified,
    Planned,
    ignore,
)
from xnat_downloader.transfer.jobs import Job, Outcome, OutcomeCounts, Status
from xnat_downloader.transfer.state import State
from xnat_downloader.transfer.upload import ResourceUpload, upload_resources
from xnat_downloader.words import counted
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.derived import Derived, make_derived
from xnat_downloader.xnat.model import Scan, Session
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.services import (
    ensure_subject,
    find_session,
    remote_digest_list,
    remote_digests,
    set_scan_fields,
)

log = logging.getLogger("xnat_downloader")


@dataclass
class CopyReport(OutcomeCounts):
    """What a copy did: one outcome per file of the selection, verified on the target."""

    outcomes: list[Outcome] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # session → copied | present | failed
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


OWN = ("project", "subject")  # categories of projects' and subjects' own resource files
DERIVED = ("assessor", "recon")  # categories of assessors' and reconstructions' files


def sessions_of(plan: Plan) -> dict[tuple[str, str, str], list[PlanEntry]]:
    """The plan's session files by (project, subject, session), from their layout paths."""
    grouped: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for entry in plan.entries:
        if entry.file.category in OWN:
            continue
        parts = PurePosixPath(entry.local).parts
        grouped.setdefault((parts[0], parts[1], parts[2]), []).append(entry)
    return grouped


async def _target_digests(xs: XnatClient, project: str, session: str) -> Counter[tuple[int, str]]:
    found: Counter[tuple[int, str]] = Counter()
    base = paths.owner(project, session=session)
    for where in (paths.session_scan_files(base), paths.session_files(base)):
        found.update(await remote_digest_list(xs, where))
    return found


async def _copy(
    source: Connection,
    target: Connection,
    selection: Selection,
    target_project: str | None,
    jobs: int,
    scratch: Path,
    sink: EventSink,
) -> CopyReport:
    # One logged-in client per server for the whole run: one login each, and a server
    # that has answered once and then stops (a restart) is waited for with the retry
    # policy, where a fresh client would take a refused connection for a wrong address.
    async with source.client() as src, target.client() as dst:
        return await _copy_with(src, dst, selection, target_project, jobs, scratch, sink)


async def _copy_with(
    source: XnatClient,
    target: XnatClient,
    selection: Selection,
    target_project: str | None,
    jobs: int,
    scratch: Path,
    sink: EventSink,
) -> CopyReport:
    report = CopyReport()
    started = time.monotonic()
    # A project missing on the target is said before anything is fetched from the source
    # (the upload of the first session would find it only then): before the source is
    # walked when it is named, else once the plan has named the projects.
    if target_project:
        await uploads.require_project(target, target_project)
    layout = LayoutOptions(Layout.XNAT, include_project=True, include_subject=True)
    planned = await plan_in(source, selection, layout, None)
    grouped = sessions_of(planned.plan)
    own = [e for e in planned.plan.entries if e.file.category in OWN]
    if not target_project:
        for project in sorted({p for p, _, _ in grouped} | {e.file.project for e in own}):
            await uploads.require_project(target, project)
    gaps = planned.gaps
    sink(Planned(len(planned.plan.entries) + len(gaps), planned.plan.total_bytes,
                 other_files=len(gaps)))  # fmt: skip
    if not planned.plan.entries and not gaps:  # said, not left to a bare "done: 0"
        report.notes.append(f"nothing matched: {selection.describe()}; nothing was copied")
    for gap in gaps:  # named by the selection, but no file could stand for it
        sink(FileFailed(gap.what, gap.reason))
        job = Job(gap.what, gap.what, None, None)
        report.outcomes.append(Outcome(job, Status.FAILED, 0, "", False, gap.reason))
    by_id = {s.id: s for s in planned.sessions}
    work = [(key, by_id[files[0].file.session_id], files) for key, files in grouped.items()]
    # A session whose only selected parts are assessors or reconstructions without files
    # has nothing in the plan: it is copied for them alone.
    planned_ids = {s.id for _, s, _ in work}
    work += [((s.project, s.subject_label, s.label), s, []) for s in planned.sessions
             if planned.derived.get(s.id) and s.id not in planned_ids]  # fmt: skip
    scans: dict[str, list[Scan]] = {}
    for scan in planned.scans:
        scans.setdefault(scan.session_id, []).append(scan)
    for (project, _subject, session), found, everything in sorted(work, key=lambda w: w[0]):
        dest_project = target_project or project
        entries = [e for e in everything if e.file.category not in DERIVED]
        if entries:
            await _copy_session(source, target, session, entries, dest_project, jobs,
                                scratch, sink, report)  # fmt: skip
        else:  # only its assessors or reconstructions: _copy_derived asks if it is there
            report.sessions[session] = "present"
        if entries and report.sessions[session] != "failed":
            rated = {s.id: _rating(s) for s in scans.get(found.id, []) if s.quality or s.note}
            if not await _copy_scan_fields(target, found, rated, dest_project, sink, report):
                report.sessions[session] = "failed"
        derived = [e for e in everything if e.file.category in DERIVED]
        if report.sessions[session] == "failed" and derived:
            error = "not copied, as its session did not copy; run the same command again"
            _fail_rest(derived, f"the assessors and reconstructions of {session}", error,
                       sink, report)  # fmt: skip
        elif report.sessions[session] != "failed" and (selection.assessors or selection.recons):
            items = planned.derived.get(found.id, [])
            if not await _copy_derived(source, target, found, items, dest_project, derived,
                                       not entries, jobs, scratch, sink, report):  # fmt: skip
                report.sessions[session] = "failed"  # not "present": it is not on the target
    if own:
        await _copy_own(source, target, own, target_project, jobs, scratch, sink, report)
    report.seconds = time.monotonic() - started
    return report


async def _copy_session(
    source: XnatClient,
    target: XnatClient,
    session: str,
    entries: list[PlanEntry],
    dest_project: str,
    jobs: int,
    scratch: Path,
    sink: EventSink,
    report: CopyReport,
) -> None:
    """One session's own files (scans' and the session's resources): neither fetched nor
    sent when the target holds them all; else fetched into scratch, uploaded, verified.
    Its state (copied, present, failed) goes into ``report.sessions``."""
    wanted = Counter((e.file.size or 0, (e.file.md5 or "").lower()) for e in entries)
    try:
        there = await _target_digests(target, dest_project, session)
    except NotFound:
        there = Counter()
    except (ConnectionFailed, ServerError) as exc:  # this session fails, the rest go on
        error = (
            f"what the target holds of this session could not be listed ({exc}); run the "
            "same command again to copy it"
        )
        _fail_rest(entries, session, error, sink, report)
        report.sessions[session] = "failed"
        return
    if all(md5 for _, md5 in wanted) and not (wanted - there):
        report.sessions[session] = "present"
        _present(entries, sink, report)
        return
    folder = scratch / session
    fetched = await _fetch(source, entries, folder, jobs)
    if not fetched.ok:
        report.outcomes += [o for o in fetched.outcomes if o.status == "failed"]
        report.sessions[session] = "failed"
        report.notes.append(f"{session}: {counted(fetched.failed, 'file')} could not be fetched")
        shutil.rmtree(folder, ignore_errors=True)
        return
    project = PurePosixPath(entries[0].local).parts[0]
    sent = await uploads.upload_async(
        target, [folder / project], dest_project, jobs=jobs, sink=_without_plans(sink)
    )
    report.outcomes += sent.outcomes
    report.notes += sent.notes
    report.sessions[session] = "copied" if sent.ok else "failed"
    shutil.rmtree(folder, ignore_errors=True)


def _rating(scan: Scan) -> dict[str, str]:
    """A scan's QC rating as the target is sent it: its quality and note, where given."""
    return {k: v for k, v in (("quality", scan.quality), ("note", scan.note)) if v}


async def _copy_scan_fields(
    target: XnatClient,
    session: Session,
    wanted: dict[str, dict[str, str]],
    dest_project: str,
    sink: EventSink,
    report: CopyReport,
) -> bool:
    """The source's quality and note of each copied scan set on the target where they
    differ (an import makes every scan usable, and a QC rating is part of the data); False,
    with one failure saying to run again, when the target does not take them."""
    if not wanted:
        return True
    uri = paths.owner(dest_project, session.subject_label, session.label)
    try:
        await set_scan_fields(target, uri, wanted)
    except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
        error = f"not set on the target ({exc}); run the same command again"
        _fail_all([], f"the scan qualities of {session.label}", error, sink, report)
        return False
    return True


def _there(e: PlanEntry, listed: dict[str, tuple[int, str]]) -> bool:
    """Whether a resource's listing on the target has ``e`` with the source's MD5 (one the
    source lists none for never is: it is fetched, and the upload compares it)."""
    md5 = (e.file.md5 or "").lower()
    return bool(md5) and listed.get(e.file.path, (0, ""))[1].lower() == md5


def _present(entries: list[PlanEntry], sink: EventSink, report: CopyReport) -> None:
    """Files on the target with the source's MD5 already: verified, neither fetched nor
    sent."""
    for e in entries:
        size, md5 = e.file.size or 0, e.file.md5 or ""
        sink(FileVerified(e.local, size, md5, True))
        report.outcomes.append(Outcome(Job.of(e), Status.SKIPPED, size, md5, True))


async def _fetch(source: XnatClient, entries: list[PlanEntry], folder: Path, jobs: int) -> Report:
    """``entries`` fetched from ``source`` into a fresh ``folder`` (in the download layout,
    with its own state), each verified against the source's MD5."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    state = State(folder)
    try:
        part = PlanResult(Plan(entries), [], [], 0, source.base_url)
        fetch = [Job.of(e) for e in entries]
        return await run_planned(
            source, part, fetch, folder, state, EngineOptions(jobs=jobs), ignore
        )
    finally:
        state.close()


async def _copy_own(
    source: XnatClient,
    target: XnatClient,
    entries: list[PlanEntry],
    target_project: str | None,
    jobs: int,
    scratch: Path,
    sink: EventSink,
    report: CopyReport,
) -> None:
    """The projects' and subjects' own resource files, after the sessions, resource by
    resource (see :func:`_copy_resource`), into the target's project or subject (a subject
    made if missing)."""
    groups: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for e in entries:
        groups.setdefault((e.file.project, e.file.subject_label, e.file.resource), []).append(e)
    for (project, subject, resource), files in sorted(groups.items()):
        dest = target_project or project
        upload = ResourceUpload(paths.owner(dest, subject), resource, [])
        what = f"{resource} of {f'subject {subject}' if subject else f'project {dest}'}"

        async def make_subject(dest: str = dest, subject: str = subject) -> None:
            if subject:
                await ensure_subject(target, dest, subject)

        await _copy_resource(
            source, target, upload, files, what, jobs, scratch, sink, report, make_subject
        )


async def _copy_resource(
    source: XnatClient,
    target: XnatClient,
    upload: ResourceUpload,
    files: list[PlanEntry],
    what: str,
    jobs: int,
    scratch: Path,
    sink: EventSink,
    report: CopyReport,
    before_sending: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """One resource's ``files``: those the target lacks (by path and MD5) are fetched into
    scratch, verified, put into ``upload``'s resource on the target (made if missing;
    ``before_sending`` makes its owner) and verified there.  A side that stops answering
    fails this resource's files alone, each with the reason."""
    folder = scratch / "resource"
    try:
        there = await remote_digests(target, upload.files_path)  # none there: empty
        missing = [e for e in files if not _there(e, there)]
        _present([e for e in files if e not in missing], sink, report)
        if not missing:
            return
        fetched = await _fetch(source, missing, folder, jobs)
        if not fetched.ok:
            report.outcomes += [o for o in fetched.outcomes if o.status == "failed"]
            report.notes.append(f"{what}: {counted(fetched.failed, 'file')} could not be fetched")
            return
        send = replace(upload, files=[(folder / e.local, e.file.path) for e in missing])
        if before_sending is not None:
            await before_sending()
        report.outcomes += await upload_resources(
            target, [send], _without_plans(sink), jobs=jobs, overwrite=False, announce=False
        )
    except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
        _fail_rest(files, what, f"{exc}; run the same command again to copy it", sink, report)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fail_rest(
    files: list[PlanEntry], what: str, error: str, sink: EventSink, report: CopyReport
) -> None:
    """Every one of ``files`` that has no outcome yet fails with ``error`` (said once)."""
    sink(FileFailed(what, error))
    done = {o.job.local for o in report.outcomes}
    for e in files:
        job = Job.of(e)
        if job.local not in done:
            report.outcomes.append(Outcome(job, Status.FAILED, 0, e.file.md5 or "", True, error))


async def _copy_derived(
    source: XnatClient,
    target: XnatClient,
    session: Session,
    items: list[Derived],
    dest_project: str,
    files: list[PlanEntry],
    alone: bool,
    jobs: int,
    scratch: Path,
    sink: EventSink,
    report: CopyReport,
) -> bool:
    """A copied session's assessors and reconstructions that the walk selected (``items``,
    with their ``files``): each made on the target (an assessor from its source document,
    its fields kept; a reconstruction from its type), then its ``…/out`` resources' files
    copied as :func:`_copy_resource` copies any.  One that cannot be made fails, with its
    files (an assessor without files counts as one failure).  ``alone``: nothing else of
    the session was selected, so whether the target has the session is asked first
    (nothing else of this copy made it); False when it is not there or cannot be asked."""
    label = session.label
    session_uri = paths.owner(dest_project, session.subject_label, label)
    owners: dict[tuple[str, str], list[PlanEntry]] = {}
    for e in files:
        owners.setdefault((e.file.category, e.file.owner), []).append(e)
    what = f"the assessors and reconstructions of {label}"
    if items and alone:  # only its assessors were selected (--no-scans): is it there?
        try:
            there = await find_session(target, dest_project, label)
        except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
            error = (
                f"the target could not be asked for session {label} ({exc}); run the same "
                "command again"
            )
            _fail_all(files, what, error, sink, report)
            return False
        if there is None:
            error = (
                f"session {label} is not in {dest_project} on the target: copy it with its "
                "scans first (without --no-scans), then run this again"
            )
            _fail_all(files, what, error, sink, report)
            return False
    made: list[str] = []
    for item in items:
        mine = owners.pop((item.category, item.name), [])
        what = f"{item.collection[:-1]} {item.name} of {label}"
        try:
            await make_derived(source, target, item, session_uri, dest_project)
        except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
            error = f"{exc}; run the same command again to copy it"
            _fail_all(mine, what, error, sink, report)
            continue
        made.append(item.name)
        base = paths.derived(session_uri, item.collection, item.name) + "/out"
        by_resource: dict[str, list[PlanEntry]] = {}
        for e in mine:
            by_resource.setdefault(e.file.resource, []).append(e)
        for resource, entries in sorted(by_resource.items()):
            upload = ResourceUpload(base, resource, [])
            await _copy_resource(
                source, target, upload, entries, f"{resource} of {what}", jobs, scratch, sink,
                report,
            )  # fmt: skip
    for (_, owner), entries in sorted(owners.items()):  # listed as files, not as an object
        what = f"{owner} of {label}"
        error = "not in the source's listing of the session's assessors and reconstructions"
        _fail_rest(entries, what, error, sink, report)
    if made:
        report.notes.append(f"{label}: made or updated on the target: {', '.join(made)}")
    return True


def _fail_all(
    files: list[PlanEntry], what: str, error: str, sink: EventSink, report: CopyReport
) -> None:
    """``what`` failed with ``error``: each of its ``files``, or when it has none (an
    assessor without files), one failure that stands for it, so the run never ends with
    nothing failed."""
    if files:
        _fail_rest(files, what, error, sink, report)
        return
    sink(FileFailed(what, error))
    report.outcomes.append(Outcome(Job(what, what, None, None), Status.FAILED, 0, "", False, error))


SCRATCH_PREFIX = "xnatdl-copy-"
IN_USE = ".in-use"  # held locked (flock) by the copy that made the folder, while it runs


@contextmanager
def _scratch_folder(parent: Path) -> Iterator[Path]:
    """A new scratch folder under ``parent`` for one copy, removed when it ends.

    A copy killed outright (SIGKILL, the OOM killer) cannot remove its folder, and the next
    run would make another: a session's worth of files left behind at each kill. So each
    folder holds a lock for as long as its copy runs, and folders whose lock nobody holds
    any more are removed first (only this user's; a folder whose marker was made in the last
    seconds may be a copy between making it and locking it, and is left)."""
    _remove_abandoned(parent)
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    with open(folder / IN_USE, "w") as marker:
        fcntl.flock(marker.fileno(), fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(parent: Path, settle: float = 2.0) -> None:
    for folder in parent.glob(SCRATCH_PREFIX + "*"):
        marker = folder / IN_USE
        try:
            made = marker.stat()
            if made.st_uid != os.getuid() or time.time() - made.st_mtime < settle:
                continue
            with open(marker) as held:
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # in use: raises
                log.info("removing %s, left by a copy that was killed", folder)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # in use, gone meanwhile, or not ours to read: left alone
            continue


def _without_plans(sink: EventSink) -> EventSink:
    """The copy announced one plan for everything; each session's upload keeps quiet."""

    def forward(event: Event) -> None:
        if not isinstance(event, Planned):
            sink(event)

    return forward


def copy(
    source: Connection,
    target: Connection,
    selection: Selection,
    *,
    target_project: str | None = None,
    jobs: int = 4,
    scratch: str | Path | None = None,
    sink: EventSink = ignore,
) -> CopyReport:
    """Copy the sessions ``selection`` names from ``source`` to ``target`` (into the same
    project IDs, or ``target_project``), with the assessors and reconstructions and the
    projects' and subjects' own resources it asks for; every file verified on the target
    against the source's MD5."""
    check_jobs(jobs)
    if source.url.rstrip("/") == target.url.rstrip("/") and not target_project:
        raise UsageError("--from and --to are the same server: name another --to-project")
    if scratch is None:
        with _scratch_folder(Path(tempfile.gettempdir())) as tmp:
            return aio.run(_copy(source, target, selection, target_project, jobs, tmp, sink))
    work = Path(scratch)
    check_output_dir(work)
    return aio.run(_copy(source, target, selection, target_project, jobs, work, sink))


__all__ = ["CopyReport", "copy", "sessions_of"]

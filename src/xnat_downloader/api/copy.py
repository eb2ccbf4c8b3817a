"""The Python API for copying sessions from one XNAT to another: :func:`copy`.

Session by session, never the whole selection on disk at once: the session's files are
fetched (verified against the source's MD5s) into a scratch folder in the download layout,
uploaded to the target (imported, then its other resources; see :mod:`uploads`), verified
there, and the scratch folder removed.  A session whose files are all on the target with
the source's MD5s is neither fetched nor sent, so a re-run after an interruption does only
what is left.  Projects' and subjects' own resources (``project_resources``,
``subject_resources``) follow the sessions, resource by resource, the same way, file by
file: one already on the target with the source's MD5 is neither fetched nor sent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
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
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.services import ensure_subject, remote_digest_list, remote_digests

log = logging.getLogger("xnat_downloader")


@dataclass
class CopyReport(OutcomeCounts):
    """What a copy did: one outcome per file of the selection, verified on the target."""

    outcomes: list[Outcome] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # session → copied | present | failed
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


OWN = ("project", "subject")  # categories of projects' and subjects' own resource files


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
    for (project, _subject, session), entries in sorted(grouped.items()):
        dest_project = target_project or project
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
            sink(FileFailed(session, error))
            for e in entries:
                job = Job.of(e)
                report.outcomes.append(
                    Outcome(job, Status.FAILED, 0, e.file.md5 or "", True, error)
                )
            report.sessions[session] = "failed"
            continue
        if all(md5 for _, md5 in wanted) and not (wanted - there):
            report.sessions[session] = "present"
            _present(entries, sink, report)
            continue
        folder = scratch / session
        fetched = await _fetch(source, entries, folder, jobs)
        if not fetched.ok:
            report.outcomes += [o for o in fetched.outcomes if o.status == "failed"]
            report.sessions[session] = "failed"
            report.notes.append(f"{session}: {fetched.failed} files could not be fetched")
            shutil.rmtree(folder, ignore_errors=True)
            continue
        sent = await uploads.upload_async(
            target, [folder / project], dest_project, jobs=jobs, sink=_without_plans(sink)
        )
        report.outcomes += sent.outcomes
        report.notes += sent.notes
        report.sessions[session] = "copied" if sent.ok else "failed"
        shutil.rmtree(folder, ignore_errors=True)
    if own:
        await _copy_own(source, target, own, target_project, jobs, scratch, sink, report)
    report.seconds = time.monotonic() - started
    return report


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
    """The projects' and subjects' own resource files, after the sessions: each resource's
    files that the target lacks (by path and MD5) are fetched into scratch, verified, put
    into the same resource of the target's project or subject (made if missing) and
    verified there.  A side that stops answering fails that resource's files alone."""
    groups: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for e in entries:
        groups.setdefault((e.file.project, e.file.subject_label, e.file.resource), []).append(e)
    for (project, subject, resource), files in sorted(groups.items()):
        dest = target_project or project
        upload = ResourceUpload(paths.owner(dest, subject), resource, [])
        what = f"{resource} of {f'subject {subject}' if subject else f'project {dest}'}"
        try:
            there = await remote_digests(target, upload.files_path)  # none there: empty
            missing = [e for e in files if not _there(e, there)]
            _present([e for e in files if e not in missing], sink, report)
            if not missing:
                continue
            folder = scratch / "own"
            fetched = await _fetch(source, missing, folder, jobs)
            if not fetched.ok:
                report.outcomes += [o for o in fetched.outcomes if o.status == "failed"]
                report.notes.append(f"{what}: {fetched.failed} files could not be fetched")
                continue
            send = replace(upload, files=[(folder / e.local, e.file.path) for e in missing])
            if subject:
                await ensure_subject(target, dest, subject)
            report.outcomes += await upload_resources(
                target, [send], _without_plans(sink), jobs=jobs, overwrite=False, announce=False
            )
        except (ConnectionFailed, ServerError, NotFound, AccessDenied) as exc:
            error = f"{what}: {exc}; run the same command again to copy it"
            sink(FileFailed(what, error))
            done = {o.job.local for o in report.outcomes}
            for e in files:
                if Job.of(e).local not in done:
                    job = Job.of(e)
                    report.outcomes.append(
                        Outcome(job, Status.FAILED, 0, e.file.md5 or "", True, error)
                    )
        finally:
            shutil.rmtree(scratch / "own", ignore_errors=True)


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
    project IDs, or ``target_project``), and the projects' and subjects' own resources it
    asks for; every file verified on the target against the source's MD5.  UsageError for
    a selection of assessors or reconstructions: an upload makes neither, so they cannot
    be copied (refused before any request, rather than left out of a run that ends with
    nothing failed)."""
    check_jobs(jobs)
    asked = [flag for flag, on in (("--assessors", selection.assessors),
                                   ("--recons", selection.recons)) if on]  # fmt: skip
    if asked:
        raise UsageError(
            "copy does not copy assessors or reconstructions (an upload makes neither): "
            f"leave out {' and '.join(asked)}, and download them with the same selection"
        )
    if source.url.rstrip("/") == target.url.rstrip("/") and not target_project:
        raise UsageError("--from and --to are the same server: name another --to-project")
    if scratch is None:
        with _scratch_folder(Path(tempfile.gettempdir())) as tmp:
            return aio.run(_copy(source, target, selection, target_project, jobs, tmp, sink))
    work = Path(scratch)
    check_output_dir(work)
    return aio.run(_copy(source, target, selection, target_project, jobs, work, sink))


__all__ = ["CopyReport", "copy", "sessions_of"]

"""The Python API: :func:`plan`, :func:`download`, :func:`ls` and :func:`list_projects`.

The CLI is a thin layer over these.  Each call opens one authenticated session, does its
work and logs out.  Errors are the exceptions of :mod:`xnat_downloader.errors`.

Example::

    from xnat_downloader import Selection, download
    report = download("https://xnat.example.org", Selection(projects=("P1",)), "data",
                      user="me", password="secret", jobs=8)
    assert report.failed == 0
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.errors import LocalWriteError, NotFound, UsageError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.plan import shard as shards
from xnat_downloader.plan.layout import Layout, LayoutOptions, check_layout
from xnat_downloader.plan.plan import Plan, build_plan, manifest_catalog, manifest_json
from xnat_downloader.plan.shard import Shard
from xnat_downloader.plan.sync import (
    Vanished,
    known_sessions,
    make_record,
    selection_key,
    vanished,
)
from xnat_downloader.transfer.decide import bytes_to_fetch, space_shortfall
from xnat_downloader.transfer.documents import fetch_documents
from xnat_downloader.transfer.download import size_or_none
from xnat_downloader.transfer.engine import EngineOptions, run_jobs
from xnat_downloader.transfer.events import EventSink, FileFailed, ignore
from xnat_downloader.transfer.jobs import Job, Outcome, OutcomeCounts, Status
from xnat_downloader.transfer.localfs import write_failure, write_whole
from xnat_downloader.transfer.modes import Mode
from xnat_downloader.transfer.prune import prune_files
from xnat_downloader.transfer.state import State
from xnat_downloader.transfer.workdir import StateFolder
from xnat_downloader.xnat.derived import Derived
from xnat_downloader.xnat.documents import (
    derived_documents,
    document_files,
    holder_documents,
)
from xnat_downloader.xnat.model import Project, Scan, Session, WorkflowState
from xnat_downloader.xnat.parse import catalog_link, same_server
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.services import latest_workflow, latest_workflows
from xnat_downloader.xnat.walk import Gap, KnownSession, catalog_files, projects_of_sessions, walk
from xnat_downloader.xnat.walk import list_projects as _list_projects

#: A catalog XML: a file, or an http(s) link to one on the same server (the web page's
#: hand-off, ``/xapi/archive/download/{id}/xml``).
Catalog = Path | str


@dataclass
class PlanResult:
    plan: Plan
    sessions: list[Session]
    scans: list[Scan]
    requests: int
    server: str
    gaps: list[Gap] = field(default_factory=list)  # selected, but not plannable: failed
    # Sessions taken unchanged from the last run's record (not asked about again).
    unchanged: frozenset[str] = frozenset()
    # The selected assessors and reconstructions of each session (by ID), files or none.
    derived: dict[str, list[Derived]] = field(default_factory=dict)

    @property
    def reused(self) -> int:
        return len(self.unchanged)

    vanished: list[Vanished] = field(default_factory=list)  # in the last record, gone now
    pruned: int = 0  # local files of vanished sessions removed (--prune)


@dataclass
class Report(OutcomeCounts):
    """What a download did.  ``ok`` is true when every selected file is present and verified."""

    outcomes: list[Outcome]
    total_bytes: int
    seconds: float
    report_path: Path | None = None
    report_error: str | None = None  # why the report file could not be written
    renamed: list[tuple[str, str]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)  # sessions gone since the last run
    pruned: int = 0  # their local files removed (prune=True)
    reused: int = 0  # sessions not asked about again (unchanged since the last run)
    documents: int = 0  # metadata documents fetched (checked to parse; XNAT lists no MD5)

    @property
    def without_server_digest(self) -> int:
        """Data files the server listed no MD5 for (documents are not counted)."""
        unlisted = sum(1 for o in self.outcomes if o.status != "failed" and not o.server_digest)
        return unlisted - self.documents


def _conn(url: str | Connection, user: str | None, password: str | None) -> Connection:
    if isinstance(url, Connection):
        return url
    return Connection(url, Credentials(user, password, "api"))


async def _plan(
    conn: Connection,
    selection: Selection,
    layout: LayoutOptions,
    catalog: Catalog | None,
    metadata: str | None = None,
) -> PlanResult:
    async with conn.client() as xs:
        return await plan_in(xs, selection, layout, catalog, metadata)


async def read_catalog(xs: XnatClient, catalog: Catalog) -> bytes:
    """A catalog's XML: from a file, or from a link on the server ``xs`` is logged in to."""
    link = catalog_link(catalog) if isinstance(catalog, str) else None
    if link is None:
        try:
            return Path(catalog).read_bytes()
        except OSError as exc:
            msg = f"cannot read catalog {catalog}: {exc.strerror}"
            raise UsageError(msg) from exc
    if not same_server(xs.base_url, link):
        msg = (
            f"catalog link {link} is not on {xs.base_url}; credentials are only sent to the "
            "server given with -w, so download the catalog and pass the file instead"
        )
        raise UsageError(msg)
    return await xs.get_bytes(link, what="catalog")


async def plan_in(
    xs: XnatClient,
    selection: Selection,
    layout: LayoutOptions,
    catalog: Catalog | None,
    metadata: str | None = None,
    known: dict[str, KnownSession] | None = None,
) -> PlanResult:
    """The plan of a selection (or catalog); ``metadata`` (xml or json) adds XNAT's
    project, subject, session and scan documents to it; ``known`` sessions whose
    ``last_modified`` is unchanged are taken as they were (see :mod:`plan.sync`)."""
    check_layout(
        layout,
        subject_resources=selection.subject_resources,
        metadata=bool(metadata),
        catalog=catalog is not None,
    )
    if catalog is not None:
        data = await read_catalog(xs, catalog)
        files = await catalog_files(xs, data, str(catalog))
        return PlanResult(build_plan(files, layout), [], [], xs.request_count, xs.base_url)
    found = await walk(xs, selection, known=known)
    files = found.files
    if metadata:
        files = [
            *files,
            *document_files(found.sessions, found.scans, metadata),
            *derived_documents(files, found.derived, found.sessions, metadata),
            *holder_documents(
                files, found.sessions, metadata, project_level=layout.include_project
            ),
        ]
    return PlanResult(
        build_plan(files, layout),
        found.sessions,
        found.scans,
        xs.request_count,
        xs.base_url,
        found.gaps,
        unchanged=frozenset(found.reused),
        derived=found.derived,
    )


def plan(
    url: str | Connection,
    selection: Selection,
    *,
    user: str | None = None,
    password: str | None = None,
    layout: LayoutOptions | None = None,
    catalog: Catalog | None = None,
    metadata: str | None = None,
) -> PlanResult:
    """Resolve a selection (or a catalog XML) into a plan, transferring nothing."""
    return aio.run(
        _plan(_conn(url, user, password), selection, layout or LayoutOptions(), catalog, metadata)
    )


def ls(
    url: str | Connection,
    selection: Selection,
    *,
    user: str | None = None,
    password: str | None = None,
) -> PlanResult:
    """What a selection matches: sessions, scans (with types) and files, with sizes."""
    return plan(url, selection, user=user, password=password)


def session_workflows(
    url: str | Connection,
    sessions: Sequence[Session],
    *,
    user: str | None = None,
    password: str | None = None,
    jobs: int = 8,
) -> dict[str, WorkflowState]:
    """The newest workflow record of each of ``sessions`` (archiving, snapshots, pipelines),
    by session ID; a session with none is absent.  One request per project, or, where the
    server cannot list a project's workflows at once, one per session (``jobs`` at a time).
    """

    async def run(conn: Connection) -> dict[str, WorkflowState]:
        by_project: dict[str, list[str]] = {}
        for session in sessions:
            by_project.setdefault(session.project, []).append(session.id)
        found: dict[str, WorkflowState] = {}
        gate = asyncio.Semaphore(max(1, jobs))
        async with conn.client() as xs:

            async def one(eid: str) -> tuple[str, WorkflowState | None]:
                async with gate:
                    return eid, await latest_workflow(xs, eid)

            for project, ids in by_project.items():
                states = await latest_workflows(xs, project)
                if states is None:
                    answers = await asyncio.gather(*(one(eid) for eid in ids))
                    states = {eid: state for eid, state in answers if state is not None}
                found.update({eid: states[eid] for eid in ids if eid in states})
        return found

    return aio.run(run(_conn(url, user, password)))


def list_projects(
    url: str | Connection, *, user: str | None = None, password: str | None = None
) -> list[Project]:
    """The projects this user can see."""

    async def run(conn: Connection) -> list[Project]:
        async with conn.client() as xs:
            return await _list_projects(xs)

    return aio.run(run(_conn(url, user, password)))


def projects_for_sessions(conn: Connection, sessions: list[str]) -> list[str]:
    """The projects holding the sessions named (IDs or labels), found in one request;
    NotFound for a session no visible project holds, UsageError for a label in several."""

    async def run() -> dict[str, list[str]]:
        async with conn.client() as xs:
            return await projects_of_sessions(xs, sessions)

    found = aio.run(run())
    nowhere = [ref for ref, projects in found.items() if not projects]
    if nowhere:
        raise NotFound(
            f"no project you can see holds session {', '.join(nowhere)}; check the ID or "
            "label, or name the project with -p"
        )
    several = {ref: projects for ref, projects in found.items() if len(projects) > 1}
    if several:
        named = "; ".join(f"{ref} is in {', '.join(p)}" for ref, p in several.items())
        raise UsageError(f"{named}: name the project with -p, or use the session's ID")
    return sorted({projects[0] for projects in found.values()})


def check_output_dir(outdir: Path) -> None:
    """Refuse an output directory we cannot write, before any request is made."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create output directory {outdir}: {exc.strerror}"
        raise UsageError(msg) from exc
    if not os.access(outdir, os.W_OK | os.X_OK):
        msg = f"output directory {outdir} is not writable"
        raise UsageError(msg)


def scan_type_counts(scans: list[Scan]) -> list[tuple[str, int]]:
    """Each scan type across the sessions with its count (seed 000's middle column)."""
    return sorted(Counter(s.type or "(no type)" for s in scans).items())


async def _download(
    conn: Connection,
    selection: Selection,
    outdir: Path,
    *,
    layout: LayoutOptions,
    catalog: Catalog | None,
    saved_plan: Plan | None,
    options: EngineOptions,
    sink: EventSink,
    on_plan: Callable[[PlanResult], None] | None,
    shard: Shard | None = None,
    metadata: str | None = None,
    prune: bool = False,
    rescan: bool = False,
) -> Report:
    state = State(outdir, shard)  # the lock first: a second run refuses before any request
    try:
        async with conn.client() as xs:
            if saved_plan is not None:
                unplanned = [Gap(what, why) for what, why in saved_plan.unplanned]
                planned = PlanResult(saved_plan, [], [], 0, xs.base_url, unplanned)
            elif catalog is not None:
                planned = await plan_in(xs, selection, layout, catalog, metadata)
            else:
                planned = await _synced_plan(
                    xs, selection, layout, metadata, state.folder, prune=prune, rescan=rescan
                )
            if prune and planned.vanished:
                removed = prune_files(
                    outdir,
                    state,
                    [v.id for v in planned.vanished],
                    {u for v in planned.vanished for u in v.uris},
                )
                planned.pruned = removed
            if shard is not None:
                # The whole plan first (its names are unique across shards), then this part;
                # what could not be planned is reported once, by shard 0.
                planned = replace(
                    planned,
                    plan=shards.select(planned.plan, shard),
                    gaps=planned.gaps if shard.index == 0 else [],
                )
            if on_plan is not None:
                on_plan(planned)
            jobs = [
                Job.of(e)
                for e in planned.plan.entries
                if e.file.category != "metadata"  # documents: fetched and parsed apart
            ]
            if options.space_check:
                check_space(outdir, jobs)
            return await run_planned(xs, planned, jobs, outdir, state, options, sink)
    finally:
        state.close()


async def _synced_plan(
    xs: XnatClient,
    selection: Selection,
    layout: LayoutOptions,
    metadata: str | None,
    folder: StateFolder,
    *,
    prune: bool,
    rescan: bool,
) -> PlanResult:
    """Plan with the last run's record: unchanged sessions are not asked about again, and
    sessions the record has but the server no longer lists come back as ``vanished``.
    The new record is written before anything is fetched."""
    path = folder.sync
    try:
        loaded: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        loaded = {}  # no record (a first run) or a damaged one: walk everything
    previous: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    key = selection_key(selection)
    known = {} if rescan else known_sessions(previous, key)
    planned = await plan_in(xs, selection, layout, None, metadata, known)
    planned.vanished = vanished(previous, {s.id for s in planned.sessions})
    files = [e.file for e in planned.plan.entries]
    # Vanished sessions stay on record until pruned (this run prunes them when asked to).
    gone = [] if prune else planned.vanished
    record = make_record(
        key, planned.sessions, planned.scans, files, planned.gaps, gone, planned.derived
    )
    write_whole(path, json.dumps(record))
    return planned


def check_space(outdir: Path, jobs: list[Job]) -> None:
    """Refuse, before the first byte, a run that cannot fit on the output's file system."""
    on_disk = []
    for job in jobs:
        final = outdir / job.local
        part = final.with_name(final.name + ".xnatdl-part")
        on_disk.append(size_or_none(final) or size_or_none(part))
    needed = bytes_to_fetch([j.size for j in jobs], on_disk)
    free = shutil.disk_usage(outdir).free
    short = space_shortfall(needed, free)
    if short:
        msg = (
            f"not enough space on the file system of {outdir}: this run needs "
            f"{needed / 1e9:.2f} GB more and {free / 1e9:.2f} GB are free (short by "
            f"{short / 1e9:.2f} GB); free some space, choose another -o, or add "
            "--no-space-check to start anyway"
        )
        raise UsageError(msg)


async def run_planned(
    xs: XnatClient,
    planned: PlanResult,
    jobs: list[Job],
    outdir: Path,
    state: State,
    options: EngineOptions,
    sink: EventSink,
) -> Report:
    """Save the manifest, run ``jobs`` (the plan's files, perhaps placed elsewhere) and write
    the per-run report."""
    _save_manifest(state.folder, planned)
    started = time.monotonic()
    documents = [e for e in planned.plan.entries if e.file.category == "metadata"]
    also = len(documents) + len(planned.gaps)  # each ends as an outcome, after the jobs
    outcomes = await run_jobs(xs, jobs, outdir, state, sink, options, also)
    # A session unchanged since the last run has the same session and scan documents: kept
    # while they are on disk as verified (project and subject documents are asked again).
    reusable = {
        e.local
        for e in documents
        if e.file.resource in ("session", "scan") and e.file.session_id in planned.unchanged
    }
    fetched = await fetch_documents(xs, documents, outdir, state, sink, options.jobs, reusable)
    outcomes += fetched
    for gap in planned.gaps:  # what the selection named but no file could stand for
        sink(FileFailed(gap.what, gap.reason))
        outcomes.append(Outcome(Job(gap.what, gap.what, None, None), Status.FAILED, 0, "", False,
                                gap.reason))  # fmt: skip
    report = Report(
        outcomes,
        sum(j.size or 0 for j in jobs),
        time.monotonic() - started,
        renamed=planned.plan.renamed,
        vanished=[str(v) for v in planned.vanished],
        pruned=planned.pruned,
        reused=planned.reused,
        documents=sum(1 for o in fetched if o.status != "failed"),
    )
    try:
        report.report_path = write_report(state.folder.reports, report.outcomes)
    except LocalWriteError as exc:  # the files are done and recorded; only the report is lost
        report.report_error = str(exc)
    return report


def download(
    url: str | Connection,
    selection: Selection,
    outdir: str | Path,
    *,
    user: str | None = None,
    password: str | None = None,
    layout: LayoutOptions | None = None,
    catalog: Catalog | None = None,
    saved_plan: Plan | None = None,
    jobs: int = 8,
    overwrite: bool = False,
    checksum: bool = False,
    space_check: bool = True,
    max_rate: float | None = None,
    mode: Mode = Mode.AUTO,
    sink: EventSink = ignore,
    on_plan: Callable[[PlanResult], None] | None = None,
    shard: Shard | None = None,
    metadata: str | None = None,
    prune: bool = False,
    rescan: bool = False,
) -> Report:
    """Plan and fetch a selection into ``outdir``; every file verified against XNAT's MD5.

    A re-run asks the server only about sessions whose ``last_modified`` changed since the
    last run; sessions that vanished (from the server or the selection) are reported in
    ``Report.vanished``, and ``prune=True`` removes their local files; ``rescan=True``
    lists every session again.
    ``metadata`` (``"xml"`` or ``"json"``) also saves XNAT's project, subject, session and
    scan documents beside the data, each checked to parse.
    With ``shard``, only that shard's sessions of the plan (:mod:`plan.shard`), with the
    shard's own state, manifest and reports under ``.xnat-downloader/shards/K-of-N/``.

    Resumable: a re-run skips verified files whose size and modification time are as they
    were when verified (``checksum=True``: whose content still hashes to the MD5), fetches
    again those that changed, and finishes the rest.  ``mode`` chooses, per
    resource, between one streamed zip and per-file GETs (``AUTO``: zips for many small
    files).  Raises
    :class:`~xnat_downloader.errors.LockedError` if another run uses ``outdir``.
    Per-file failures do not raise; they are in the returned :class:`Report`.
    """
    out = Path(outdir)
    options = EngineOptions(
        jobs=jobs,
        overwrite=overwrite,
        checksum=checksum,
        space_check=space_check,
        max_rate=max_rate,
        mode=mode,
    )
    check_output_dir(out)  # after the options: a bad option creates no folder
    return aio.run(
        _download(
            _conn(url, user, password),
            selection,
            out,
            layout=layout or LayoutOptions(),
            catalog=catalog,
            saved_plan=saved_plan,
            options=options,
            sink=sink,
            on_plan=on_plan,
            shard=shard,
            metadata=metadata,
            prune=prune,
            rescan=rescan,
        )
    )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _save_manifest(folder: StateFolder, planned: PlanResult) -> None:
    unplanned = [(g.what, g.reason) for g in planned.gaps]  # a run from it counts them too
    plan = replace(planned.plan, unplanned=unplanned)
    write_whole(folder.manifest_json, manifest_json(plan, planned.server))
    write_whole(folder.manifest_xml, manifest_catalog(planned.plan, planned.server))


def write_report(folder: Path, outcomes: Sequence[Outcome]) -> Path:
    """One JSON line per outcome in ``{folder}/run-*.jsonl``, written whole (downloads put it
    in their state folder's ``reports/``; dicom-send beside its log of acknowledged files)."""
    path = folder / f"run-{_stamp()}-{os.getpid()}.jsonl"
    lines = [
        json.dumps(
            {
                "local": o.job.local,
                "uri": o.job.uri,
                "status": o.status,
                "size": o.size,
                "md5": o.md5,
                "server_digest": o.server_digest,
                "error": o.error,
            }
        )
        + "\n"
        for o in outcomes
    ]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalWriteError(write_failure(path, exc)) from exc
    write_whole(path, "".join(lines))
    return path


__all__ = [
    "Connection",
    "Layout",
    "LayoutOptions",
    "PlanResult",
    "Report",
    "Selection",
    "download",
    "list_projects",
    "ls",
    "plan",
    "scan_type_counts",
]

"""Walk a server: resolve a :class:`Selection` into the :class:`RemoteFile` records it names.

Requests are kept few because real servers are far away: one project listing, one subject
and one experiment listing per project, then per matching session one scan listing and one
``scans/ALL/files`` listing (plus, when asked for, one for session resources, two each
for assessors and reconstructions, the objects and their files, and one per project and
per subject for their own resources).  Listings that do not depend on each other are
asked for at once (a project's two; a session's, unless a scan filter makes its files
depend on its scans), and eight sessions are walked at a time, so a distant server costs
a round trip per wave of sessions, not one per listing.

Whatever the selection names that cannot become a file (a row without an ID or a usable
URI, a session whose listing fails) is a :class:`Gap`: counted as failed, never skipped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from xnat_downloader.aio import together
from xnat_downloader.errors import LoginPageError, NotFound, ServerError, UsageError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.derived import CATEGORY_OF, Derived, list_derived
from xnat_downloader.xnat.model import Project, RemoteFile, Scan, Session, Subject
from xnat_downloader.xnat.parse import (
    CatalogEntry,
    holder_kind,
    item_fields,
    item_type,
    owner_of,
    parse_catalog,
    parse_date,
    parse_size,
    result_rows,
    split_file_uri,
)
from xnat_downloader.xnat.selection import (
    Selection,
    resource_matches,
    scan_matches,
    session_matches,
    subjects_selected,
)

log = logging.getLogger("xnat_downloader.walk")


@dataclass
class Part:
    """What the listings of a part of a session (or of a holder's own resources) give:
    scans, files, and the session's selected assessors and reconstructions (with or
    without files: with ``--metadata`` each gets its document)."""

    scans: list[Scan] = field(default_factory=list)
    files: list[RemoteFile] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)


@dataclass(frozen=True)
class Gap:
    """Something the selection names that the walk could not turn into files: it counts as
    failed, never as silently absent."""

    what: str  # a URI, a session
    reason: str
    session_id: str = ""  # the session it belongs to: not complete, so walked again next time


# The gaps of the walk under way (a list per walk; tasks it starts share it), and the
# session being listed (each session's task sets its own).
_gaps: ContextVar[list[Gap] | None] = ContextVar("xnat_downloader_gaps", default=None)
_listing: ContextVar[str] = ContextVar("xnat_downloader_listing", default="")


def _gap(what: str, reason: str) -> None:
    log.warning("%s: %s", what, reason)
    gaps = _gaps.get()
    if gaps is not None:
        gaps.append(Gap(what, reason, _listing.get()))


def _unusable_uri(uri: str, where: str) -> None:
    """A listing row whose URI names no file: a gap, named by the URI (or ``where``)."""
    _gap(uri or where, "the listing gives no usable file URI")


@dataclass(frozen=True)
class KnownSession:
    """What an earlier walk found under a session, and the ``last_modified`` it had then."""

    stamp: str
    scans: list[Scan]
    files: list[RemoteFile]
    derived: list[Derived] = field(default_factory=list)


@dataclass
class WalkResult:
    """Everything a walk found: the files, plus the sessions and scans for ``ls``, and what
    it could not use."""

    projects: list[Project] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    scans: list[Scan] = field(default_factory=list)
    files: list[RemoteFile] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)  # session IDs taken from ``known``
    # The selected assessors and reconstructions of each session, by session ID.
    derived: dict[str, list[Derived]] = field(default_factory=dict)


async def projects_of_sessions(xs: XnatClient, refs: list[str]) -> dict[str, list[str]]:
    """For each session ID or label in ``refs``, the projects that hold it, from one listing
    of every experiment the user can see (``/data/experiments``), not a walk per project."""
    doc = await xs.get_json(
        "/data/experiments", params={"columns": "ID,label,project"}, what="the session list"
    )
    found: dict[str, list[str]] = {ref: [] for ref in refs}
    for row in result_rows(doc, "experiments"):
        for ref in refs:
            if ref in (row.get("ID"), row.get("label")) and row.get("project"):
                found[ref].append(str(row["project"]))
    return {ref: sorted(set(projects)) for ref, projects in found.items()}


async def list_projects(xs: XnatClient) -> list[Project]:
    doc = await xs.get_json(
        "/data/projects", params={"columns": "ID,name,secondary_ID"}, what="the project list"
    )
    rows = result_rows(doc, "projects")
    return sorted(
        (
            Project(r.get("ID", ""), r.get("name", ""), r.get("secondary_ID", ""))
            for r in rows
            if r.get("ID")
        ),
        key=lambda p: p.id,
    )


def match_projects(wanted: Iterable[str], available: list[Project]) -> list[Project]:
    """The projects named by ID (or, failing that, secondary ID or name)."""
    chosen: list[Project] = []
    for ref in wanted:
        found = next((p for p in available if p.id == ref), None) or next(
            (p for p in available if ref in (p.secondary_id, p.name)), None
        )
        if found is None:
            msg = (
                f"project {ref!r} does not exist or you have no access to it "
                f"(visible: {', '.join(p.id for p in available) or 'none'})"
            )
            raise NotFound(msg)
        if found not in chosen:
            chosen.append(found)
    return chosen


async def list_sessions(xs: XnatClient, project: Project) -> tuple[list[Subject], list[Session]]:
    """A project's subjects and sessions (the subjects name the sessions' subject labels)."""
    # Two independent listings, asked for at once (one round trip, not two).
    subjects_doc, doc = await together(
        xs.get_json(
            paths.project_subjects(project.id),
            params={"columns": "ID,label"},
            what=f"the subjects of project {project.id}",
        ),
        xs.get_json(
            paths.project_experiments(project.id),
            params={
                "columns": "ID,label,date,xsiType,subject_ID,subject_label,modality,project,"
                "last_modified,insert_date"
            },
            what=f"the sessions of project {project.id}",
        ),
    )
    # A row without an ID is kept (its ID empty): if its resources are asked for, it is a gap.
    subjects = [
        Subject(r.get("ID", ""), r.get("label") or r.get("ID", ""), project.id)
        for r in result_rows(subjects_doc, "subjects")
    ]
    labels = {s.id: s.label for s in subjects if s.id}
    sessions = []
    for r in result_rows(doc, "experiments"):
        if not r.get("ID"):  # nothing can be asked about it: a gap, not a skip
            _gap(
                f"a session of project {project.id} ({r.get('label') or 'no label'})",
                "the server's session listing gives it no ID",
            )
            continue
        subject_id = r.get("subject_ID", "")
        sessions.append(
            Session(
                id=r["ID"],
                label=r.get("label") or r["ID"],
                project=project.id,
                subject_id=subject_id,
                subject_label=r.get("subject_label") or labels.get(subject_id, subject_id),
                date=parse_date(r.get("date", "")),
                xsi_type=r.get("xsiType", ""),
                modality=r.get("modality", ""),
                stamp=r.get("last_modified", ""),
                added=parse_date(r.get("insert_date", "")),
            )
        )
    return subjects, sessions


async def list_scans(xs: XnatClient, session: Session) -> list[Scan]:
    doc = await xs.get_json(
        f"{paths.experiment(session.id)}/scans",
        params={"columns": "ID,type,series_description,quality,xsiType,note"},
        what=f"the scans of session {session.label}",
    )
    scans = []
    for r in result_rows(doc, "scans"):
        if not r.get("ID"):
            _gap(
                f"a scan of session {session.label} ({r.get('type') or 'no type'})",
                "the server's scan listing gives it no ID",
            )
            continue
        scans.append(
            Scan(
                session.id,
                r["ID"],
                r.get("type", ""),
                r.get("series_description", ""),
                r.get("quality", ""),
                r.get("xsiType", ""),
                r.get("note", ""),
            )
        )
    return scans


def _row_file(row: dict[str, str], where: str, **place: str) -> RemoteFile | None:
    """A listing row as a file, placed by ``place`` (its project, subject, session,
    category and owner fields); None, and a gap, when its URI names no file."""
    uri = row.get("URI", "")
    split = split_file_uri(uri)
    if split is None:
        _unusable_uri(uri, where)
        return None
    res, path = split
    return RemoteFile(
        uri=uri,
        path=path,
        size=parse_size(row.get("Size", "")),
        md5=row.get("digest") or None,
        resource=row.get("collection") or res,
        **place,
    )


def _file(
    row: dict[str, str], session: Session, category: str, owner: str = "", owner_type: str = ""
) -> RemoteFile | None:
    return _row_file(
        row,
        f"a file of session {session.label}",
        project=session.project,
        subject_label=session.subject_label,
        session_label=session.label,
        session_id=session.id,
        category=category,
        owner=owner,
        owner_type=owner_type,
    )


def _own_file(row: dict[str, str], holder: Subject | Project, where: str) -> RemoteFile | None:
    """A file of a project's or subject's own resource (no session)."""
    subject = holder if isinstance(holder, Subject) else None
    return _row_file(
        row,
        f"a file of {where}",
        project=subject.project if subject else holder.id,
        subject_label=subject.label if subject else "",
        session_label="",
        session_id="",
        category="subject" if subject else "project",
    )


async def _own_resource_part(xs: XnatClient, holder: Subject | Project, sel: Selection) -> Part:
    """The files of a project's or subject's own resources, from its ``…/files`` listing
    (rows of anything below it, which some servers include, are not its own)."""
    if isinstance(holder, Subject):
        kind, where = "subjects", f"subject {holder.label} of project {holder.project}"
        listing = paths.owner(holder.project, subject=holder.id)
    else:
        kind, where = "projects", f"project {holder.id}"
        listing = paths.project(holder.id)
    rows = await _files_listing(xs, paths.session_files(listing), f"the resources of {where}")
    files: list[RemoteFile] = []
    for row in rows:
        uri = row.get("URI", "")
        held_by = holder_kind(uri)
        if held_by is None:
            _unusable_uri(uri, f"a file of {where}")
        elif held_by == kind and resource_matches(
            row.get("collection", ""), row.get("file_format", ""), sel
        ):
            found = _own_file(row, holder, where)
            if found:
                files.append(found)
    return Part(files=files)


async def _files_listing(xs: XnatClient, path: str, what: str) -> list[dict[str, str]]:
    """The rows of a files listing.  A row whose URI is on another server is a gap (it
    fails, named): a hostile or confused server must not send the client elsewhere."""
    try:
        doc = await xs.get_json(path, what=what)
    except NotFound:
        return []  # XNAT answers 404 for "no files here", e.g. no assessors
    rows = []
    for row in result_rows(doc, what):
        uri = row.get("URI", "")
        if xs.on_this_server(uri):
            rows.append(row)
        else:
            _gap(uri, "the listing names a file on another server; it was not fetched")
    return rows


async def _owned_files(
    xs: XnatClient,
    session: Session,
    sel: Selection,
    collection: str,
    category: str,
    owner_name: Callable[[str], str | None],
) -> list[RemoteFile]:
    """The files of a session's assessors or reconstructions, from one ``ALL/out/files``
    listing; ``owner_name`` maps an owner ID to its folder name, or None to leave it out."""
    rows = await _files_listing(
        xs,
        f"{paths.experiment(session.id)}/{collection}/ALL/out/files",
        f"the {collection} files of {session.label}",
    )
    files: list[RemoteFile] = []
    for row in rows:
        owner = owner_of(row.get("URI", ""))
        if owner is None:
            _unusable_uri(row.get("URI", ""), f"a {collection} file of {session.label}")
            continue
        if owner[0] != collection:
            continue
        name = owner_name(owner[1])
        if name is None or not resource_matches(
            row.get("collection", ""), row.get("file_format", ""), sel
        ):
            continue
        found = _file(row, session, category, name)
        if found:
            files.append(found)
    return files


async def session_files(xs: XnatClient, session: Session, sel: Selection) -> Part:
    """The scans and files of one session that ``sel`` selects.  Its listings (scans,
    session resources, assessors, reconstructions) are asked for at once: on a server tens
    of milliseconds away, a session costs one round trip instead of four."""
    parts = [_scan_part(xs, session, sel)]
    if sel.session_resources:
        parts.append(_session_resource_part(xs, session, sel))
    if sel.assessors:
        parts.append(_derived_part(xs, session, sel, "assessors"))
    if sel.recons:
        parts.append(_derived_part(xs, session, sel, "reconstructions"))
    answers = await together(*parts)
    return Part(
        answers[0].scans,
        [f for part in answers for f in part.files],
        [d for part in answers for d in part.derived],
    )


def scan_filtered(sel: Selection) -> bool:
    """Whether ``sel`` can leave a session's scans out: then its scan files are asked for
    only after the scan listing shows that some scan matches."""
    return bool(sel.scan_types or sel.qualities or sel.exclude_scan_types)


async def _scan_part(xs: XnatClient, session: Session, sel: Selection) -> Part:
    if not sel.scans:
        return Part()
    scan_files = paths.session_scan_files(paths.experiment(session.id))
    what = f"the scan files of session {session.label}"
    if scan_filtered(sel):
        listed = await list_scans(xs, session)
        scans = [s for s in listed if scan_matches(s, sel)]
        rows = await _files_listing(xs, scan_files, what) if scans else []
    else:  # every scan is wanted: both listings at once
        listed, rows = await together(list_scans(xs, session), _files_listing(xs, scan_files, what))
        scans = [s for s in listed if scan_matches(s, sel)]
    by_id = {s.id: s for s in scans}
    named = {s.id for s in listed}
    files: list[RemoteFile] = []
    for row in rows:
        owner = owner_of(row.get("URI", ""))
        if owner is None:  # no scan can be read from it: a gap, not a skip
            _unusable_uri(row.get("URI", ""), f"a scan file of {session.label}")
            continue
        if owner[0] == "scans" and owner[1] not in named:
            # Not left out by the selection: the two listings disagree (a scan added
            # between them, or a confused server).  A re-run sees the session changed.
            why = f"the scan listing of session {session.label} names no scan {owner[1]}"
            _gap(row.get("URI", ""), f"{why}; run again to fetch it")
            continue
        scan = by_id.get(owner[1]) if owner[0] == "scans" else None
        if scan is None or not resource_matches(
            row.get("collection", ""), row.get("file_format", ""), sel
        ):
            continue
        found = _file(row, session, "scan", scan.id, scan.type)
        if found:
            files.append(found)
    return Part(scans, files)


async def _session_resource_part(xs: XnatClient, session: Session, sel: Selection) -> Part:
    rows = await _files_listing(
        xs,
        paths.session_files(paths.experiment(session.id)),
        f"the session resources of {session.label}",
    )
    files: list[RemoteFile] = []
    for row in rows:
        if owner_of(row.get("URI", "")) is None and resource_matches(
            row.get("collection", ""), row.get("file_format", ""), sel
        ):
            found = _file(row, session, "session")
            if found:
                files.append(found)
    return Part(files=files)


async def _derived_part(xs: XnatClient, session: Session, sel: Selection, collection: str) -> Part:
    """A session's assessors or reconstructions that ``sel`` selects, and their files.
    The files listing waits for the objects' listing only where patterns choose among
    them, or to learn assessors' labels (their folders' names)."""
    files_of = functools.partial(
        _owned_files, xs, session, sel, collection, CATEGORY_OF[collection]
    )
    if collection == "reconstructions" and not sel.recon_patterns:  # every one: both at once
        chosen, files = await together(
            list_derived(xs, session.id, collection, sel), files_of(lambda o: o)
        )
        return Part(files=files, derived=chosen)
    chosen = await list_derived(xs, session.id, collection, sel)
    if not chosen:
        return Part()
    # Owner folders in file URIs name an assessor by ID (or, on some servers, label).
    names = {d.source_id: d.name for d in chosen} | {d.name: d.name for d in chosen}
    return Part(files=await files_of(names.get), derived=chosen)


async def walk(
    xs: XnatClient,
    sel: Selection,
    *,
    concurrency: int = 8,
    known: dict[str, KnownSession] | None = None,
) -> WalkResult:
    """Resolve ``sel`` into files.  Raises NotFound for an unknown project or session.

    A session in ``known`` whose listing shows the same ``last_modified`` as then is not
    asked about again: an unchanged re-run costs a few listings per project, not per
    session.  A session without a ``last_modified`` is always walked."""
    before_walk = known or {}
    if not sel.projects:
        raise UsageError("no project selected: name one or more with -p PROJECT")
    result = WalkResult()
    _gaps.set(result.gaps)
    result.projects = match_projects(sel.projects, await list_projects(xs))
    per_project = await together(*(list_sessions(xs, p) for p in result.projects))
    subjects: list[Subject] = []
    for project_subjects, sessions in per_project:
        subjects.extend(project_subjects)
        result.sessions.extend(s for s in sessions if session_matches(s, sel))
    if sel.sessions:
        listed = {s.id for s in result.sessions} | {s.label for s in result.sessions}
        missing = [s for s in sel.sessions if s not in listed]
        if missing and not result.sessions:
            msg = (
                f"no session {', '.join(missing)} in project(s) "
                f"{', '.join(p.id for p in result.projects)} matches the selection"
            )
            raise NotFound(msg)
        for ref in missing:
            _gap(f"session {ref}", "not found in the selected projects")
    gate = asyncio.Semaphore(concurrency)

    async def guarded(what: str, part: Awaitable[Part]) -> Part:
        """``part``'s listings, ``concurrency`` at a time; a failure of them is a gap named
        ``what`` and the rest goes on (a login page ends the walk: not this part's fault)."""
        async with gate:
            try:
                return await part
            except LoginPageError:
                raise
            except (NotFound, ServerError) as exc:
                _gap(what, f"cannot be listed: {exc}")
                return Part()

    async def one(session: Session) -> Part:
        before = before_walk.get(session.id)
        if before is not None and session.stamp and before.stamp == session.stamp:
            result.reused.add(session.id)
            return Part(before.scans, before.files, before.derived)
        _listing.set(session.id)  # this task's own context: its gaps name the session
        return await guarded(
            f"session {session.label} ({session.id})", session_files(xs, session, sel)
        )

    async def own(holder: Subject | Project) -> Part:
        if isinstance(holder, Subject) and not holder.id:  # a gap, not a skip
            name = f"a subject of project {holder.project} ({holder.label or 'no label'})"
            _gap(name, "the server's subject listing gives it no ID")
            return Part()
        name = holder.label if isinstance(holder, Subject) else holder.id
        return await guarded(f"the resources of {name}", _own_resource_part(xs, holder, sel))

    holders: list[Subject | Project] = []
    if sel.project_resources:
        holders += result.projects
    if sel.subject_resources:
        holders += subjects_selected(subjects, result.sessions, sel)
    walked = [one(s) for s in result.sessions] + [own(h) for h in holders]
    parts = await together(*walked)
    for part in parts:
        result.scans.extend(part.scans)
        result.files.extend(part.files)
    for session, part in zip(result.sessions, parts[: len(result.sessions)], strict=True):
        if part.derived:
            result.derived[session.id] = part.derived
    return result


async def catalog_files(xs: XnatClient, catalog: bytes, source: str) -> list[RemoteFile]:
    """The files an XNAT catalog XML names (download page catalogs and ``format=xcat``)."""
    entries = parse_catalog(catalog, source)
    files: list[RemoteFile] = []
    cache: dict[str, Session] = {}
    for entry in entries:
        files.extend(await _entry_files(xs, entry, cache))
    return files


async def _session_by_id(xs: XnatClient, eid: str, cache: dict[str, Session]) -> Session:
    if eid not in cache:
        doc = await xs.get_json(paths.experiment(eid), what=f"session {eid}")
        try:
            fields = item_fields(doc, f"session {eid}")
        except ServerError as exc:
            raise NotFound(str(exc)) from exc
        subject_id = str(fields.get("subject_ID", ""))
        project = str(fields.get("project", ""))
        subject_label = subject_id
        if subject_id and project:
            subject_doc = await xs.get_json(
                paths.owner(project, subject_id), what=f"subject {subject_id}"
            )
            subject_label = str(item_fields(subject_doc, f"subject {subject_id}").get("label")
                                or subject_id)  # fmt: skip
        cache[eid] = Session(
            eid,
            str(fields.get("label", eid)),
            project,
            subject_id,
            subject_label,
            parse_date(str(fields.get("date", ""))),
            item_type(doc),
        )
    return cache[eid]


async def _entry_files(
    xs: XnatClient, entry: CatalogEntry, cache: dict[str, Session]
) -> list[RemoteFile]:
    parts = urlsplit(entry.uri)
    path = parts.path
    if parts.netloc and xs.base_url.split("://", 1)[-1].split("/", 1)[0] != parts.netloc:
        log.warning(
            "catalog entry %s names another server; fetching it from %s instead",
            entry.uri,
            xs.base_url,
        )
    if "/data/" in path:
        path = "/data/" + path.split("/data/", 1)[1]
    elif path.startswith("/archive/"):
        path = "/data" + path[len("/archive") :]
    eid_match = re.search(r"/experiments/([^/]+)", path)
    if not eid_match:
        msg = f"catalog entry {entry.uri} does not name an experiment"
        raise UsageError(msg)
    session = await _session_by_id(xs, eid_match.group(1), cache)
    split = split_file_uri(path)
    if split is not None and not path.endswith("/files"):
        # One file (format=xcat listings): its place is the entry's cachePath.
        return [
            RemoteFile(
                uri=path,
                path=entry.cache_path or split[1],
                size=entry.size,
                md5=entry.digest or None,
                project=session.project,
                subject_label=session.subject_label,
                session_label=session.label,
                session_id=session.id,
                category="catalog",
                resource=split[0],
            )
        ]
    rows = await _files_listing(xs, path, f"catalog entry {entry.uri}")
    owner = owner_of(path)
    scan_type = ""
    if rows and not entry.name and owner and owner[0] == "scans":
        scan_type = next((s.type for s in await list_scans(xs, session) if s.id == owner[1]), "")
    out = []
    for row in rows:
        if entry.name:
            found = _file(row, session, "catalog")
            if found:
                found = replace(found, folder=entry.name)
        elif owner and owner[0] == "scans":
            found = _file(row, session, "scan", owner[1], scan_type)
        elif owner and owner[0] == "assessors":
            found = _file(row, session, "assessor", owner[1])
        else:
            found = _file(row, session, "session")
        if found:
            out.append(found)
    return out

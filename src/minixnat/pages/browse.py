"""The browser: projects → subjects → sessions, a session's report, its file manager, and a
search over sessions.  Each page shows only what the visitor may read (``Access``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Response
from minixnat.pages.render import page
from minixnat.pages.visit import LoginNeeded, Visit, project_subject, readable_project
from minixnat.store import Experiment, Project, Resource, Scan, Store, Subject, Workflow
from minixnat.store.workflows import SNAPSHOTS, SNAPSHOTS_RESOURCE


@dataclass(frozen=True)
class ProjectRow:
    project: Project
    readable: bool
    subjects: int
    sessions: int


@dataclass(frozen=True)
class SessionRow:
    session: Experiment
    subject: Subject | None
    scans: int


@dataclass(frozen=True)
class ResourceView:
    """A resource with its files, and the API URL each file downloads from."""

    title: str
    resource: Resource
    files: list[tuple[str, int, str, str]]  # path, size, md5, url

    @property
    def size(self) -> int:
        return sum(f[1] for f in self.files)


@dataclass(frozen=True)
class Snapshot:
    """A scan's snapshot pictures, by the API URLs they download from."""

    thumbnail: str
    full: str


def scan_snapshot(
    store: Store, session: Experiment, scan: Scan, resources: list[Resource]
) -> Snapshot | None:
    """The scan's SNAPSHOTS thumbnail and full-size picture, if it has both.  ``resources``
    are the scan's, which the pages list anyway: only a scan with a SNAPSHOTS resource
    costs a query here."""
    resource = next((r for r in resources if r.label == SNAPSHOTS_RESOURCE), None)
    if resource is None:
        return None
    by_content = {row.content: row.path for row in store.list_files(resource.pk)}
    if "THUMBNAIL" not in by_content or "ORIGINAL" not in by_content:
        return None
    owner = f"/data/experiments/{_seg(session.id)}/scans/{_seg(scan.scan_id)}"
    return Snapshot(
        file_url(owner, resource, by_content["THUMBNAIL"]),
        file_url(owner, resource, by_content["ORIGINAL"]),
    )


def _snapshot_state(records: list[Workflow]) -> str:
    """What a scan without pictures shows: why there are none (yet)."""
    runs = [w for w in records if w.pipeline_name == SNAPSHOTS]
    if not runs:
        return "none made"
    return {"Queued": "queued", "In Progress": "being made", "Failed": "failed"}.get(
        runs[0].status, "no image"
    )


def _seg(text: str) -> str:
    return quote(text, safe="")


def file_url(owner: str, res: Resource, path: str) -> str:
    """The ``/data`` URL of one file (each path segment encoded, slashes kept)."""
    encoded = "/".join(_seg(part) for part in path.split("/"))
    return f"{owner}/resources/{_seg(res.label)}/files/{encoded}"


def session_rows(store: Store, sessions: list[Experiment]) -> list[SessionRow]:
    subjects: dict[str, Subject | None] = {}
    rows = []
    for s in sessions:
        if s.subject_id not in subjects:
            subjects[s.subject_id] = store.get_subject(s.subject_id)
        rows.append(SessionRow(s, subjects[s.subject_id], len(store.list_scans(s.id))))
    return rows


def readable_session(store: Store, access: Access, eid: str) -> tuple[Experiment, Project]:
    session = store.get_experiment(eid)
    if session is None or session.is_assessor:
        if access.user is None:
            raise LoginNeeded
        raise HttpError(404, f"Unable to find session {eid}, or you may not read it.")
    return session, readable_project(store, access, session.project)


# -- pages ---------------------------------------------------------------------------------


def home(store: Store, access: Access, visit: Visit) -> Response:
    rows = []
    for p in store.list_projects():
        if not access.can_see(p):
            continue
        readable = access.can_read(p)
        subjects = len(store.list_subjects(p.id)) if readable else 0
        sessions = len(store.list_experiments(project=p.id, sessions_only=True)) if readable else 0
        rows.append(ProjectRow(p, readable, subjects, sessions))
    return page("home.html", visit=visit, projects=rows)


def project(store: Store, access: Access, visit: Visit, ref: str) -> Response:
    found = store.get_project(ref)
    if found is not None and access.can_see(found) and not access.can_read(found):
        # Protected: anyone logged in may know it exists, only members see its data.
        return page("project.html", visit=visit, project=found, readable=False)
    proj = readable_project(store, access, ref)
    subjects = store.list_subjects(proj.id)
    sessions = store.list_experiments(project=proj.id, sessions_only=True)
    per_subject: dict[str, int] = {}
    for s in sessions:
        per_subject[s.subject_id] = per_subject.get(s.subject_id, 0) + 1
    return page(
        "project.html",
        visit=visit,
        project=proj,
        readable=True,
        role=access.role(proj) or ("admin" if access.is_admin else ""),
        editable=access.can_edit(proj),
        subjects=[(s, per_subject.get(s.id, 0)) for s in subjects],
        sessions=session_rows(store, sessions),
    )


def subject(store: Store, access: Access, visit: Visit, project_ref: str, ref: str) -> Response:
    proj = readable_project(store, access, project_ref)
    found = project_subject(store, proj, ref)
    sessions = store.list_experiments(subject_id=found.id, sessions_only=True)
    return page(
        "subject.html",
        visit=visit,
        project=proj,
        subject=found,
        editable=access.can_edit(proj),
        custom=sorted(json.loads(found.fields or "{}").items()),
        sessions=session_rows(store, sessions),
    )


def _scan_resources(store: Store, scan: Scan) -> list[tuple[Resource, int, int]]:
    return [
        (res, *store.resource_stats(res.pk)) for res in store.list_resources("scan", str(scan.pk))
    ]


def session(store: Store, access: Access, visit: Visit, eid: str) -> Response:
    found, proj = readable_session(store, access, eid)
    records = store.list_workflows(experiment_id=found.id)
    scans = []
    for scan in store.list_scans(found.id):
        listed = _scan_resources(store, scan)
        snapshot = scan_snapshot(store, found, scan, [res for res, _, _ in listed])
        scans.append((scan, listed, snapshot))
    resources = [
        (res, *store.resource_stats(res.pk)) for res in store.list_resources("experiment", found.id)
    ]
    return page(
        "session.html",
        visit=visit,
        project=proj,
        subject=store.get_subject(found.subject_id),
        session=found,
        scans=scans,
        resources=resources,
        assessors=store.list_experiments(session_id=found.id),
        recons=store.list_recons(found.id),
        workflows=records,
        no_snapshot=_snapshot_state(records),
    )


def files(store: Store, access: Access, visit: Visit, eid: str) -> Response:
    """Seed 000's "Manage Files": every resource of the session, each file a download link."""
    found, proj = readable_session(store, access, eid)
    base = f"/data/experiments/{_seg(found.id)}"
    groups: list[ResourceView] = []

    def add(title: str, owner: str, res: Resource) -> None:
        rows = [
            (f.path, f.size, f.md5, file_url(owner, res, f.path)) for f in store.list_files(res.pk)
        ]
        groups.append(ResourceView(title, res, rows))

    for scan in store.list_scans(found.id):
        owner = f"{base}/scans/{_seg(scan.scan_id)}"
        for res in store.list_resources("scan", str(scan.pk)):
            add(f"Scan {scan.scan_id} ({scan.type or 'no type'})", owner, res)
    for res in store.list_resources("experiment", found.id):
        add("Session resources", base, res)
    for recon in store.list_recons(found.id):
        owner = f"{base}/reconstructions/{_seg(recon.recon_id)}/out"
        for res in store.list_resources("recon", str(recon.pk)):
            add(f"Reconstruction {recon.recon_id}", owner, res)
    for assessor in store.list_experiments(session_id=found.id):
        owner = f"{base}/assessors/{_seg(assessor.id)}/out"
        for res in store.list_resources("assessor", assessor.id):
            add(f"Assessor {assessor.label}", owner, res)
    return page(
        "files.html",
        visit=visit,
        project=proj,
        subject=store.get_subject(found.subject_id),
        session=found,
        groups=groups,
    )


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def sessions(store: Store, access: Access, visit: Visit) -> Response:
    """A searchable listing of the sessions the visitor may read; "Download" takes the ticked
    ones to the download page (seed 000's third way in)."""
    request = visit.request
    projects = [p for p in store.list_projects() if access.can_read(p)]
    wanted = request.param("project")
    text = request.param("q").strip().lower()
    modality = request.param("modality")
    since, until = _day(request.param("since")), _day(request.param("until"))
    errors = [
        f"{name} date {request.param(name)!r} is not YYYY-MM-DD"
        for name, value in (("since", since), ("until", until))
        if request.param(name) and value is None
    ]
    found: list[Experiment] = []
    modalities: set[str] = set()
    for p in projects:
        for s in store.list_experiments(project=p.id, sessions_only=True):
            modalities.add(s.modality)
            if wanted and p.id != wanted:
                continue
            if modality and s.modality != modality:
                continue
            day = _day(s.date)
            if since and (day is None or day < since):
                continue
            if until and (day is None or day > until):
                continue
            found.append(s)
    rows = session_rows(store, found)
    if text:
        rows = [
            r
            for r in rows
            if text in r.session.label.lower() or (r.subject and text in r.subject.label.lower())
        ]
    return page(
        "sessions.html",
        visit=visit,
        projects=projects,
        modalities=sorted(m for m in modalities if m),
        rows=rows,
        errors=errors,
        query={
            "project": wanted,
            "q": request.param("q"),
            "modality": modality,
            "since": request.param("since"),
            "until": request.param("until"),
        },
    )

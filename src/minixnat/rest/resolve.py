"""Resolve an XNAT ``/data`` path into the objects it names, checking permissions on the way.

The grammar (XNAT 1.8, ``XNATApplication.addRoutes``), after the ``/data``, ``/data/archive``,
``/REST`` or ``/REST/archive`` prefix::

    projects[/{P}[/subjects[/{S}[/experiments[/{E}…]]] | /experiments[/{E}…]
                 | /resources… | /files]]
    subjects[/{SID}…]                 experiments[/{EID}…]
    {E}/scans[/{sel}[/resources…|/files]]      sel: ID, comma list, ALL, *, a type, NULL
    {E}/reconstructions[/{sel}[/in|/out][/resources…|/files]]
    {E}/assessors[/{sel}[/in|/out][/resources…|/files]]
    {owner}/resources[/{label,id,…}[/files[/{path…}]]]     {owner}/files

Subjects and experiments under a project resolve by label first, then by accession ID;
un-scoped paths need the accession ID.  A private project the user cannot read is a 404 at
every level (as XNAT answers), and never appears in a listing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minixnat.http.access import Access
from minixnat.http.messages import HttpError
from minixnat.store import Experiment, Project, Recon, Resource, Scan, Store, Subject


@dataclass(frozen=True)
class Node:
    """One owner of resources: a project, subject, session, scan, recon or assessor."""

    kind: str
    project: Project
    subject: Subject | None = None
    experiment: Experiment | None = None  # the image session (for scans, recons, assessors)
    scan: Scan | None = None
    recon: Recon | None = None
    assessor: Experiment | None = None

    @property
    def owner(self) -> tuple[str, str]:
        if self.kind == "project":
            return "project", self.project.id
        if self.kind == "subject":
            assert self.subject
            return "subject", self.subject.id
        if self.kind == "experiment":
            assert self.experiment
            return "experiment", self.experiment.id
        if self.kind == "scan":
            assert self.scan
            return "scan", str(self.scan.pk)
        if self.kind == "recon":
            assert self.recon
            return "recon", str(self.recon.pk)
        assert self.assessor
        return "assessor", self.assessor.id

    def uri(self, *, scoped: bool = False) -> str:
        """The object's canonical URI (accession-ID form, as XNAT's ``URI`` columns use)."""
        if self.kind == "project":
            return f"/data/projects/{self.project.id}"
        if self.kind == "subject":
            assert self.subject
            if scoped:
                return f"/data/projects/{self.project.id}/subjects/{self.subject.id}"
            return f"/data/subjects/{self.subject.id}"
        assert self.experiment
        if scoped and self.subject:
            base = (
                f"/data/projects/{self.project.id}/subjects/{self.subject.id}"
                f"/experiments/{self.experiment.id}"
            )
        else:
            base = f"/data/experiments/{self.experiment.id}"
        if self.kind == "experiment":
            return base
        if self.kind == "scan":
            assert self.scan
            return f"{base}/scans/{self.scan.scan_id}"
        if self.kind == "recon":
            assert self.recon
            return f"{base}/reconstructions/{self.recon.recon_id}/out"
        assert self.assessor
        return f"{base}/assessors/{self.assessor.id}/out"


@dataclass
class Target:
    """What a path names.  ``kind`` is the last thing named (a listing or an object)."""

    kind: str
    project: Project | None = None
    subject: Subject | None = None
    experiment: Experiment | None = None
    nodes: list[Node] = field(default_factory=list)
    resources: list[tuple[Node, Resource]] = field(default_factory=list)
    file_path: str | None = None
    multi_owner: bool = False
    extra: list[str] = field(default_factory=list)

    def at_file(self, path: str) -> Target:
        """This ``files`` target naming the file ``path`` in it (a plain constructor call:
        ``dataclasses.replace`` costs the file GET three times as much)."""
        return Target(
            self.kind,
            self.project,
            self.subject,
            self.experiment,
            self.nodes,
            self.resources,
            path,
            self.multi_owner,
            self.extra,
        )


def _project(store: Store, access: Access, ref: str) -> Project:
    project = store.get_project(ref)
    if project is None or not access.can_see(project):
        raise HttpError(404, f"Unable to identify project {ref}.")
    return project


def readable_project(store: Store, access: Access, ref: str) -> Project:
    """The project ``ref`` names (ID, secondary ID or alias) if the caller may read it;
    404 otherwise, whether it is missing or hidden (a caller learns nothing either way)."""
    project = store.get_project(ref)
    if project is None or not access.can_read(project):
        raise HttpError(404, f"Unable to identify project {ref}.")
    return project


def _require_read(access: Access, project: Project, what: str) -> None:
    if not access.can_read(project):
        raise HttpError(403, f"Unable to read {what} for Project: {project.id}")


def _select_scans(store: Store, session: Experiment, selector: str) -> list[Scan]:
    if "," not in selector and selector not in ("ALL", "*"):
        # One scan by its ID, the usual case (every file URL names one): a row, not a list.
        scan = store.get_scan(session.id, selector.replace("[COMMA]", ",").replace("[SLASH]", "/"))
        if scan is not None:
            return [scan]
    scans = store.list_scans(session.id)
    if selector in ("ALL", "*"):
        return scans
    chosen: list[Scan] = []
    for part in selector.split(","):
        part = part.replace("[COMMA]", ",").replace("[SLASH]", "/")
        matches = [s for s in scans if s.scan_id == part]
        if not matches:
            if part == "NULL":
                matches = [s for s in scans if not s.type]
            else:
                matches = [s for s in scans if s.type == part]
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _select_recons(store: Store, session: Experiment, selector: str) -> list[Recon]:
    recons = store.list_recons(session.id)
    if selector in ("ALL", "*"):
        return recons
    wanted = selector.split(",")
    return [r for r in recons if r.recon_id in wanted or r.type in wanted]


def _select_assessors(store: Store, session: Experiment, selector: str) -> list[Experiment]:
    assessors = store.list_experiments(session_id=session.id)
    if selector in ("ALL", "*"):
        return assessors
    wanted = selector.split(",")
    return [a for a in assessors if a.id in wanted or a.label in wanted or a.xsi_type in wanted]


def _select_resources(
    store: Store, nodes: list[Node], selector: str | None
) -> list[tuple[Node, Resource]]:
    found: list[tuple[Node, Resource]] = []
    wanted = selector.split(",") if selector is not None else None
    one = selector is not None and not any(c in selector for c in ",*") and selector != "NULL"
    for node in nodes:
        # One label or ID, the usual case (every file URL names one): matched in the query.
        listed: Sequence[Resource] = (
            store.resources_named(*node.owner, selector)
            if one and selector is not None
            else store.list_resources(*node.owner)
        )
        for res in listed:
            if (
                wanted is None
                or res.label in wanted
                or str(res.pk) in wanted
                or ("NULL" in wanted and not res.label)
                or any("*" in w and fnmatch.fnmatchcase(res.label, w) for w in wanted)
            ):
                found.append((node, res))
    return found


def uri_segments(uri: str) -> list[str]:
    """The segments of a path a service is given to name an object (``/data/archive/…``,
    ``/REST/…``, ``/archive/…``, or bare), without the leading ``data``/``REST`` and
    ``archive``, as :func:`resolve` takes them."""
    parts = [p for p in uri.split("/") if p]
    if parts[:1] in (["data"], ["REST"]):
        parts = parts[1:]
    if parts[:1] == ["archive"]:
        parts = parts[1:]
    return parts


def resolve(store: Store, access: Access, segs: list[str], *, all_files: bool = False) -> Target:
    """Resolve ``segs`` (already stripped of ``/data``) into a :class:`Target`.  The caller
    must not change what it gets: the lists in it may be shared with other requests."""
    if len(segs) > 2 and segs[-2] == "files":
        # The usual file GET (…/files/NAME): the folder's resolution is remembered while
        # the database is unchanged, so the files of one resource, fetched one after
        # another, walk the path once.  Resolving is left to right, so the whole path is
        # its folder's ``files`` target with a file path; anything else (a file under a
        # folder called files) is resolved in full.
        folder = tuple(segs[:-1])
        try:
            found: Target | None = store.remembered(
                ("resolve", access.user, folder, all_files),
                lambda: _resolve(store, access, list(folder), all_files=all_files),
            )
        except HttpError:
            found = None  # the error (if any) is the whole path's to say
        if found is not None and found.kind == "files" and found.file_path is None:
            return found.at_file(segs[-1])
    return _resolve(store, access, segs, all_files=all_files)


def _resolve(store: Store, access: Access, segs: list[str], *, all_files: bool) -> Target:
    if not segs:
        raise HttpError(404, "The requested resource was not found.")
    head, rest = segs[0], segs[1:]
    if head == "projects":
        if not rest:
            return Target("projects")
        project = _project(store, access, rest[0])
        return _under_project(store, access, project, rest[1:], all_files=all_files)
    if head == "subjects":
        if not rest:
            return Target("subjects")
        subject = store.get_subject(rest[0])
        owner = store.get_project(subject.project) if subject else None
        if subject is None or owner is None or not access.can_read(owner):
            raise HttpError(
                404,
                "When searching by subject ID only, you must specify the "
                "accession number and not the subject label. Unable to find "
                f"subject {rest[0]}.",
            )
        return _under_subject(store, access, owner, subject, rest[1:], all_files=all_files)
    if head == "experiments":
        if not rest:
            return Target("experiments")
        experiment = store.get_experiment(rest[0])
        home = store.get_project(experiment.project) if experiment else None
        if experiment is None or home is None or not access.can_read(home):
            raise HttpError(
                404,
                f"Unable to find experiment {rest[0]}: un-scoped experiment "
                "paths need the accession ID.",
            )
        subject = store.get_subject(experiment.subject_id)
        return _under_experiment(
            store, access, home, subject, experiment, rest[1:], all_files=all_files
        )
    raise HttpError(404, "The requested resource was not found.")


def _under_project(
    store: Store, access: Access, project: Project, rest: list[str], *, all_files: bool = False
) -> Target:
    if not rest:
        return Target("project", project=project)
    head = rest[0]
    if head in ("accessibility", "prearchive_code", "quarantine_code", "current_arc"):
        return Target(head, project=project, extra=rest[1:])
    if head == "subjects":
        if len(rest) == 1:
            _require_read(access, project, "subjects")
            return Target("subjects", project=project)
        _require_read_or_404(access, project)
        subject = store.find_subject(project.id, rest[1])
        if subject is None:
            raise HttpError(404, f"Unable to find the specified subject {rest[1]}.")
        return _under_subject(store, access, project, subject, rest[2:], all_files=all_files)
    if head == "experiments":
        if len(rest) == 1:
            _require_read(access, project, "experiments")
            return Target("experiments", project=project)
        _require_read_or_404(access, project)
        experiment = store.find_experiment(project.id, rest[1])
        if experiment is None:
            raise HttpError(404, f"Unable to identify experiment {rest[1]}.")
        subject = store.get_subject(experiment.subject_id)
        return _under_experiment(
            store, access, project, subject, experiment, rest[2:], all_files=all_files
        )
    if head in ("resources", "files"):
        _require_read_or_404(access, project)
        return _resources(store, [Node("project", project)], rest, project=project)
    raise HttpError(404, f"Unknown path element {head!r} under a project.")


def _require_read_or_404(access: Access, project: Project) -> None:
    if not access.can_read(project):
        raise HttpError(404, f"Unable to identify project {project.id}.")


def _under_subject(
    store: Store,
    access: Access,
    project: Project,
    subject: Subject,
    rest: list[str],
    *,
    all_files: bool = False,
) -> Target:
    if not rest:
        return Target("subject", project=project, subject=subject)
    head = rest[0]
    if head == "experiments":
        if len(rest) == 1:
            return Target("experiments", project=project, subject=subject)
        experiment = store.find_experiment(project.id, rest[1])
        if experiment is None or experiment.subject_id != subject.id:
            raise HttpError(404, f"Unable to identify experiment {rest[1]}.")
        return _under_experiment(
            store, access, project, subject, experiment, rest[2:], all_files=all_files
        )
    if head in ("resources", "files"):
        return _resources(
            store, [Node("subject", project, subject)], rest, project=project, subject=subject
        )
    raise HttpError(404, f"Unknown path element {head!r} under a subject.")


def _under_experiment(
    store: Store,
    access: Access,
    project: Project,
    subject: Subject | None,
    experiment: Experiment,
    rest: list[str],
    *,
    all_files: bool = False,
) -> Target:
    ctx: dict[str, Any] = {"project": project, "subject": subject, "experiment": experiment}
    if not rest:
        return Target("experiment", **ctx)
    if experiment.is_assessor and experiment.session_id:
        # An assessor reached directly (/data/experiments/{assessor ID}/…): its resources
        # are the assessor's own, under an optional in/out segment.
        session = store.get_experiment(experiment.session_id)
        tail = rest[1:] if rest[0] in ("in", "out") else rest
        if tail and tail[0] in ("resources", "files"):
            node = Node("assessor", project, subject, session, assessor=experiment)
            return _resources(store, [node], tail, **ctx)
    head = rest[0]
    if head == "status" and len(rest) == 1:
        return Target("status", **ctx)
    if head == "scans":
        if len(rest) == 1:
            return Target("scans", **ctx)
        scans = _select_scans(store, experiment, rest[1])
        single = len(rest) == 2 and "," not in rest[1] and rest[1] not in ("ALL", "*")
        if single:
            if (len(scans) != 1 or scans[0].scan_id != rest[1]) and not scans:
                raise HttpError(404, f"Unable to find scan {rest[1]}.")
            return Target(
                "scan",
                nodes=[Node("scan", project, subject, experiment, scan=s) for s in scans[:1]],
                **ctx,
            )
        if not scans and len(rest) > 2:
            raise HttpError(404, f"No scans match {rest[1]!r}.")
        nodes = [Node("scan", project, subject, experiment, scan=s) for s in scans]
        target = _resources(
            store,
            nodes,
            rest[2:],
            multi=len(nodes) != 1 or "," in rest[1] or rest[1] in ("ALL", "*"),
            **ctx,
        )
        return target
    if head in ("reconstructions", "assessors"):
        if len(rest) == 1:
            return Target(head, **ctx)
        if head == "reconstructions":
            recons = _select_recons(store, experiment, rest[1])
            nodes = [Node("recon", project, subject, experiment, recon=r) for r in recons]
        else:
            assessors = _select_assessors(store, experiment, rest[1])
            nodes = [Node("assessor", project, subject, experiment, assessor=a) for a in assessors]
        tail = rest[2:]
        if tail and tail[0] in ("in", "out"):
            tail = tail[1:]
        if not nodes:
            raise HttpError(404, f"Unable to find {head[:-1]} {rest[1]}.")
        if not tail:
            return Target(head[:-1], nodes=nodes[:1], **ctx)
        if head == "assessors" and tail == ["status"]:  # an assessor is an experiment
            return Target("status", **ctx)
        return _resources(store, nodes, tail, multi=len(nodes) != 1, **ctx)
    if head in ("resources", "files"):
        nodes = [Node("experiment", project, subject, experiment)]
        if head == "files" and all_files:
            nodes += all_children(store, project, subject, experiment)
        return _resources(store, nodes, rest, multi=len(nodes) > 1, **ctx)
    if head in ("projects",):
        return Target("shares", extra=rest[1:], **ctx)
    raise HttpError(404, f"Unknown path element {head!r} under an experiment.")


def all_children(
    store: Store, project: Project, subject: Subject | None, experiment: Experiment
) -> list[Node]:
    """The session's scans, reconstructions and assessors, each an owner of resources."""
    nodes = [
        Node("scan", project, subject, experiment, scan=s) for s in store.list_scans(experiment.id)
    ]
    nodes += [
        Node("recon", project, subject, experiment, recon=r)
        for r in store.list_recons(experiment.id)
    ]
    nodes += [
        Node("assessor", project, subject, experiment, assessor=a)
        for a in store.list_experiments(session_id=experiment.id)
    ]
    return nodes


def _resources(
    store: Store,
    nodes: list[Node],
    rest: list[str],
    *,
    multi: bool = False,
    project: Project | None = None,
    subject: Subject | None = None,
    experiment: Experiment | None = None,
) -> Target:
    ctx: dict[str, Any] = {"project": project, "subject": subject, "experiment": experiment}
    if not rest:
        raise HttpError(404, "The requested resource was not found.")
    head = rest[0]
    if head == "files":
        return Target(
            "files",
            nodes=nodes,
            resources=_select_resources(store, nodes, None),
            file_path="/".join(rest[1:]) if len(rest) > 1 else None,
            multi_owner=True,
            **ctx,
        )
    if head != "resources":
        raise HttpError(404, f"Unknown path element {head!r}.")
    if len(rest) == 1:
        return Target(
            "resources",
            nodes=nodes,
            resources=_select_resources(store, nodes, None),
            multi_owner=multi,
            **ctx,
        )
    selector = rest[1]
    chosen = _select_resources(store, nodes, selector)
    if len(rest) == 2:
        return Target(
            "resource",
            nodes=nodes,
            resources=chosen,
            multi_owner=multi,
            extra=[selector],
            **ctx,
        )
    if rest[2] != "files":
        raise HttpError(
            400, "This resource works at the catalog level only; file paths go under .../files/."
        )
    if not chosen:
        raise HttpError(404, f"Unable to find resource {selector}.")
    return Target(
        "files",
        nodes=nodes,
        resources=chosen,
        file_path="/".join(rest[3:]) if len(rest) > 3 else None,
        multi_owner=multi or len(chosen) > 1,
        extra=[selector],
        **ctx,
    )

"""Sharing subjects and experiments into other projects (XNAT's ``…/projects/{Q}``).

``PUT …/subjects/{S}/projects/{Q}[?label=L]`` lists the subject in project Q as L (its own
label by default); ``DELETE`` takes it out again; ``GET …/subjects/{S}/projects`` lists the
owning project and every project it is shared into.  The same for experiments.  Sharing
needs read access to the object and member or owner rights in Q; an object cannot be shared
into, or taken out of, its own project.  ``primary=true`` (moving ownership) is refused.
"""

from __future__ import annotations

from minixnat.http.access import Access
from minixnat.http.messages import AnyResponse, HttpError, Request, text
from minixnat.rest.listings import project_table
from minixnat.rest.resolve import Target, resolve
from minixnat.rest.tables import project_columns, render
from minixnat.store import Store


def _object(store: Store, access: Access, path: list[str]) -> tuple[str, str, str, str]:
    """(kind, key, owner project, label) of the subject or experiment ``path`` names."""
    target: Target = resolve(store, access, path)
    if target.kind == "subject" and target.subject:
        return "subject", target.subject.id, target.subject.project, target.subject.label
    if target.kind == "experiment" and target.experiment:
        e = target.experiment
        return "experiment", e.id, e.project, e.label
    raise HttpError(404, "Only subjects and experiments can be shared.")


def listing(store: Store, access: Access, request: Request, path: list[str]) -> AnyResponse:
    kind, key, owner, _ = _object(store, access, path)
    wanted = {owner, *store.shared_projects(kind, key)}
    table = project_table(store, access, request)
    table.rows = [r for r in table.rows if r["ID"] in wanted]
    return render(project_columns(table, request), request)


def change(
    store: Store, access: Access, request: Request, path: list[str], project_ref: str
) -> AnyResponse:
    if access.user is None:
        raise HttpError(401, "Log in to share data.")
    kind, key, owner, label = _object(store, access, path)
    target = store.get_project(project_ref)
    if target is None or not access.can_see(target):
        raise HttpError(404, f"Unable to identify project {project_ref}.")
    if target.id == owner:
        raise HttpError(400, f"The {kind} belongs to {owner}; it cannot be shared with it.")
    if not access.can_edit(target):
        raise HttpError(403, f"You may not add data to project {target.id}.")
    if request.method == "PUT":
        if request.flag("primary"):
            raise HttpError(400, "minixnat does not move ownership between projects.")
        new_label = request.param("label") or label
        store.share(kind, key, target.id, new_label)
        return text("")
    if request.method == "DELETE":
        if not store.unshare(kind, key, target.id):
            raise HttpError(404, f"The {kind} is not shared with {target.id}.")
        return text("")
    raise HttpError(405, "PUT shares; DELETE unshares.")

"""``POST /data/services/refresh/catalog?resource=…&options=…``: catalogs brought in line
with the files on disk (XNAT's catalog refresh; xnatpy's ``services.refresh_catalog``).

``resource`` names a resource (``/archive/experiments/{E}/resources/{R}``), or an object
whose resources are all refreshed: a session (with its scans', reconstructions' and
assessors'), a scan, a subject or a project.  ``options`` (comma-separated or repeated):
``append`` records files put into a resource folder by hand, ``delete`` forgets rows whose
file is gone, ``populateStats`` records the size and MD5 of files that changed size,
``checksum`` also fills in missing MD5s.  With none, nothing changes.  The caller must be
allowed to edit the project.  The answer lists what changed, one line per file.
"""

from __future__ import annotations

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response, text
from minixnat.rest.resolve import all_children, resolve, uri_segments
from minixnat.store import Resource, Store

OPTIONS = ("append", "delete", "populatestats", "checksum")


def _resources(store: Store, access: Access, uri: str) -> tuple[str, list[Resource]]:
    """The project and the resources that ``uri`` names."""
    parts = uri_segments(uri)
    if not parts:
        raise HttpError(400, "Name the resource to refresh: resource=/archive/experiments/{E}/…")
    target = resolve(store, access, parts)
    if target.project is None:
        raise HttpError(400, f"{uri} names no resource, session, subject or project.")
    owners: list[tuple[str, str]] = []
    if target.resources:
        return target.project.id, [res for _, res in target.resources]
    if target.kind in ("resource", "files"):
        raise HttpError(404, f"{uri} names no resource that exists.")
    if target.kind == "experiment" and target.experiment is not None:
        session = target.experiment
        children = all_children(store, target.project, target.subject, session)
        owners += [("experiment", session.id), *(node.owner for node in children)]
    elif target.kind in ("scan", "reconstruction", "assessor"):
        owners += [node.owner for node in target.nodes]
    elif target.kind == "subject" and target.subject is not None:
        owners.append(("subject", target.subject.id))
    elif target.kind == "project":
        owners.append(("project", target.project.id))
    else:
        raise HttpError(400, f"{uri} names no resource, session, subject or project.")
    return target.project.id, [res for owner in owners for res in store.list_resources(*owner)]


def refresh_catalog(store: Store, access: Access, request: Request) -> Response:
    uri = request.param("resource")
    said = [v for k, v in request.query_list if k == "options"]
    options = {o.strip().lower() for value in said for o in value.split(",") if o.strip()}
    unknown = options - set(OPTIONS)
    if unknown:
        raise HttpError(
            400, f"Unknown refresh option {sorted(unknown)[0]!r}: use append, delete, "
            "populateStats or checksum."
        )  # fmt: skip
    project_id, resources = _resources(store, access, uri)
    project = store.get_project(project_id)
    if project is None or not access.can_edit(project):
        raise HttpError(403, f"You may not change the catalogs of project {project_id}.")
    lines = []
    for resource in resources:
        done = store.refresh_catalog(
            resource,
            checksum="checksum" in options,
            delete="delete" in options,
            append="append" in options,
            stats="populatestats" in options,
        )
        for verb, paths in (
            ("added", done.added),
            ("removed", done.removed),
            ("updated", done.updated),
            ("skipped (a name a catalog may not hold)", done.skipped),
        ):
            lines += [f"{verb}: {resource.label}/{path}" for path in paths]
    return text("\n".join(lines) + ("\n" if lines else ""))

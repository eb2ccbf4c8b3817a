"""Seed 004's compressed uploader, and the activity tracker that follows each import.

The upload form posts one multipart body: the form token and choices first, the archive
last.  The body is streamed to disk as it arrives (``http/bodies.py``), so a multi-GB
archive never sits in memory; then the file goes, already on disk, to the REST import
service (``POST /data/services/import``) as the visitor, through the pages' API seam.  The
import is recorded in the activity tracker from its first byte (receiving, processing,
done with N files, or failed with the API's own message).

With JavaScript the form is sent by ``site.js`` with upload progress, and the answer (JSON)
links to the result in place; without it, the browser is sent to the import's tracker page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from minixnat.http import bodies
from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Response
from minixnat.pages.api import Api
from minixnat.pages.render import NO_STORE, page, redirect
from minixnat.pages.visit import STALE_FORM, Visit, require_multipart
from minixnat.store import Activity, Project, Store, User
from minixnat.store.activity import FAILED

#: The importers the form offers: XNAT's value, and what the page calls it.
IMPORTERS = {"DICOM-zip": "DICOM-zip", "SI": "Classic: DICOM or ECAT"}
DESTINATIONS = {"prearchive": "Prearchive (review before archiving)", "archive": "Archive"}
ACCEPT = ".zip,.tar.gz,.tgz,.tar"
NO_FILE = "Choose a .zip, .tar.gz or .tar file to upload."


@dataclass(frozen=True)
class Link:
    href: str
    text: str


def upload_targets(store: Store, access: Access) -> list[Project]:
    """The projects the visitor may upload to (members who may edit, and admins)."""
    return [p for p in store.list_projects() if access.can_see(p) and access.can_edit(p)]


def form(
    store: Store,
    access: Access,
    visit: Visit,
    *,
    error: str = "",
    status: int = 200,
    chosen: dict[str, str] | None = None,
) -> Response:
    """``GET /app/upload``: project, importer, options, destination and the file."""
    chosen = chosen or {}
    return page(
        "upload.html",
        status,
        visit=visit,
        projects=upload_targets(store, access),
        importers=IMPORTERS,
        destinations=DESTINATIONS,
        accept=ACCEPT,
        error=error,
        chosen={
            "project": chosen.get("project", visit.request.param("project")),
            "importer": chosen.get("importer", "DICOM-zip"),
            "destination": chosen.get("destination", "prearchive"),
            "ignore": chosen.get("ignore", ""),
        },
    )


def wants_json(visit: Visit) -> bool:
    return "application/json" in visit.request.headers.get("accept", "")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json", list(NO_STORE))


async def receive(store: Store, api: Api, access: Access, visit: Visit, user: User) -> Response:
    """``POST /app/upload`` (multipart): receive, check, then import through the API."""
    require_multipart(visit.request)
    activity = store.start_activity(user.login)
    with store.failing_activity(activity, otherwise="The upload was cut off."):
        body = await bodies.receive(visit.request, store.tmp_dir)
    fields = body.form
    problem = ""
    if not visit.carries_token(fields):
        problem = STALE_FORM
    elif fields.get("importer") not in IMPORTERS:
        problem = f"Choose an importer: {', '.join(IMPORTERS)}."
    elif fields.get("destination") not in DESTINATIONS:
        problem = "Choose the prearchive or the archive as the destination."
    elif not fields.get("project"):
        problem = "Choose the project to upload to."
    elif len(body.uploads) != 1 or not body.uploads[0].filename or not body.uploads[0].size:
        problem = NO_FILE
    if problem:
        body.discard()
        store.end_activity(activity, FAILED, message=problem)
        status = 403 if problem == STALE_FORM else 400
        if wants_json(visit):
            return json_response({"activity": activity, "ok": False, "message": problem}, status)
        return form(store, access, visit, error=problem, status=status, chosen=fields)
    query = [
        ("import-handler", fields["importer"]),
        ("PROJECT_ID", fields["project"]),
        ("dest", f"/{fields['destination']}"),
    ]
    if fields.get("ignore"):
        query.append(("Ignore-Unparsable", "true"))
    answer = await api(
        user, "POST", "/data/services/import", query, spooled=body, activity=activity
    )
    if not wants_json(visit):
        return redirect(f"/app/activity/{activity}")
    found = store.get_activity(activity)
    assert found is not None
    return json_response(activity_json(store, found), 200 if answer.ok else answer.status)


# -- the activity tracker ------------------------------------------------------------------
def _segments(uri: str) -> list[str]:
    """A ``/data[/archive]/…`` URI's segments after ``data``."""
    parts = [p for p in uri.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    return parts[1:] if parts[:1] == ["archive"] else parts


def session_href(store: Store, uri: str) -> str:
    """The page of an archived session the import service or the archive service named
    (``/data/archive/projects/P/subjects/S/experiments/L``); empty if it names none."""
    parts = _segments(uri)
    if len(parts) != 6 or parts[0] != "projects" or parts[4] != "experiments":
        return ""
    found = store.resolve_experiment(parts[1], parts[5])
    return f"/app/experiments/{quote(found.id, safe='')}" if found else ""


def result_links(store: Store, activity: Activity) -> list[Link]:
    """Page links for what an import made: its sessions, or its prearchive entries."""
    links = []
    for uri in activity.uris:
        parts = _segments(uri)
        if parts[:2] == ["prearchive", "projects"] and len(parts) == 5:
            href = "/app/prearchive/" + "/".join(quote(p, safe="") for p in parts[2:])
            links.append(Link(href, f"{parts[2]} prearchive: {parts[4]}"))
        elif href := session_href(store, uri):
            links.append(Link(href, f"{parts[1]} / {parts[3]} / {parts[5]}"))
    return links


def describe(activity: Activity) -> str:
    """The state as a person reads it."""
    if activity.state == "done":
        made = "session" if len(activity.uris) == 1 else "sessions"
        return f"done: {activity.files} files in {len(activity.uris)} {made}"
    if activity.state == "failed":
        return f"failed: {activity.message}"
    return activity.state


def activity_json(store: Store, activity: Activity) -> dict[str, Any]:
    return {
        "activity": activity.id,
        "ok": activity.state != FAILED,
        "state": activity.state,
        "running": activity.running,
        "summary": describe(activity),
        "message": activity.message,
        "filename": activity.filename,
        "project": activity.project,
        "destination": activity.destination,
        "files": activity.files,
        "started": activity.started,
        "links": [{"href": k.href, "text": k.text} for k in result_links(store, activity)],
    }


def tracker(store: Store, visit: Visit, user: User) -> Response:
    """``GET /app/activity``: the visitor's recent imports (``?format=json`` for the script)."""
    recent = store.recent_activities(user.login)
    if visit.request.param("format") == "json":
        return json_response(
            {
                "running": sum(a.running for a in recent),
                "activities": [activity_json(store, a) for a in recent],
            }
        )
    rows = [(a, describe(a), result_links(store, a)) for a in recent]
    return page("activity.html", visit=visit, rows=rows)


def one(store: Store, visit: Visit, user: User, ref: str) -> Response:
    """``GET /app/activity/{id}``: one import, where the no-script upload form lands."""
    found = store.get_activity(int(ref)) if ref.isdigit() else None
    if found is None or found.login != user.login:
        raise HttpError(404, f"You have no import {ref}.")
    if visit.request.param("format") == "json":
        return json_response(activity_json(store, found))
    return page(
        "activity_one.html",
        visit=visit,
        activity=found,
        summary=describe(found),
        links=result_links(store, found),
    )

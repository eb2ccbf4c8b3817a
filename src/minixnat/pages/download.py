"""Seed 000's download page: choose sessions, formats and types, a method; then confirm.

The page is one form.  "Prepare download" posts it: the selection is stored through the
same ``/xapi/archive/download`` code the API uses, and the browser is sent to a confirmation
showing the download id and its estimated size, with the chosen method:

- **ZIP**: a link to ``/xapi/archive/download/{id}/zip``, streamed into the browser's own
  download manager;
- **XML catalog**: ``/xapi/archive/download/{id}/xml``, a ``cat:Catalog``;
- **download client**: a button that issues an alias token and shows the exact
  ``xnat-downloader download --catalog …`` command, which fetches with resume and MD5
  checks and does not need the browser session to stay alive.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response
from minixnat.pages.browse import readable_session, scan_snapshot
from minixnat.pages.choices import (
    METHODS,
    NO_TYPE,
    PATH_OPTIONS,
    DownloadRequest,
    FormError,
    ScanChoice,
    SessionChoices,
    form_values,
    read_form,
    tally,
)
from minixnat.pages.render import page, redirect
from minixnat.pages.visit import Visit, project_subject, readable_project
from minixnat.store import Experiment, FileRow, Resource, Store


class Entry(Protocol):
    """One resource of one session in a stored download (what the pages read of it)."""

    @property
    def session(self) -> Experiment: ...

    @property
    def files(self) -> Sequence[tuple[Resource, FileRow]]: ...


class Catalogs(Protocol):
    """The download-catalog service the pages use; the server passes the REST API's."""

    def new_download(
        self, store: Store, access: Access, spec: dict[str, object]
    ) -> tuple[str, Sequence[Entry]]: ...

    def load_download(
        self, store: Store, access: Access, cid: str
    ) -> tuple[dict[str, object], Sequence[Entry]]: ...


DEFAULT_FOLDER = "xnat-download"
#: Seed 000's defaults: project and subject folders on, the full XNAT structure.
DEFAULT_OPTIONS = ("include_project", "include_subject")


def session_choices(store: Store, session: Experiment) -> SessionChoices:
    subject = store.get_subject(session.subject_id)
    choices = []
    for scan in store.list_scans(session.id):
        resources = store.list_resources("scan", str(scan.pk))
        snapshot = scan_snapshot(store, session, scan, resources)
        choices.append(
            ScanChoice(
                scan.type, tuple(r.label for r in resources), snapshot.thumbnail if snapshot else ""
            )
        )
    scans = tuple(choices)
    return SessionChoices(
        id=session.id,
        project=session.project,
        subject=subject.label if subject else session.subject_id,
        label=session.label,
        date=session.date,
        modality=session.modality,
        scans=scans,
        resources=tuple(r.label for r in store.list_resources("experiment", session.id)),
        assessors=tuple(a.xsi_type for a in store.list_experiments(session_id=session.id)),
        recons=tuple(r.type or r.recon_id for r in store.list_recons(session.id)),
    )


def _listed(store: Store, access: Access, request: Request) -> list[Experiment] | None:
    """The sessions the page lists: named ones, or a project's (optionally one subject's)."""
    named = form_values(request.query_list, "listed", "session")
    if named:
        return [readable_session(store, access, eid)[0] for eid in named]
    if request.param("project"):
        proj = readable_project(store, access, request.param("project"))
        subject_ref = request.param("subject")
        subject = project_subject(store, proj, subject_ref) if subject_ref else None
        return store.list_experiments(
            project=proj.id, subject_id=subject.id if subject else None, sessions_only=True
        )
    return None


def _render(
    visit: Visit,
    listed: Sequence[SessionChoices],
    form: Sequence[tuple[str, str]] | None,
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    """The page; ``form`` (a refresh or a refused post) keeps what the user ticked."""
    if form is None:  # at first: every session, format and type on, the extras off
        chosen = {s.id for s in listed}
        tallies = tally(listed, chosen)
        ticked = {
            "format": {o.value for o in tallies.formats},
            "type": {o.value for o in tallies.types},
        }
        options = set(DEFAULT_OPTIONS)
        method = "zip"
    else:
        chosen = set(form_values(form, "pick"))
        tallies = tally(listed, chosen)
        ticked = {}
        for key, value in form:
            ticked.setdefault(key, set()).add(value)
        options = {name for name in PATH_OPTIONS if name in ticked}
        method = next((v for k, v in form if k == "method" and v in METHODS), "zip")
    data = [
        {
            "id": s.id,
            "scans": [{"type": sc.type or NO_TYPE, "formats": list(sc.formats)} for sc in s.scans],
            "resources": list(s.resources),
            "assessors": list(s.assessors),
            "recons": list(s.recons),
        }
        for s in listed
    ]
    return page(
        "download.html",
        status,
        visit=visit,
        sessions=listed,
        chosen=chosen,
        tallies=tallies,
        ticked=ticked,
        options=options,
        method=method,
        error=error,
        data=data,
    )


def page_for(store: Store, access: Access, visit: Visit) -> Response:
    """``GET /app/download?project=P | session=E… | listed=E…&pick=E…``."""
    request = visit.request
    found = _listed(store, access, request)
    if found is None:
        return redirect("/app/sessions")
    listed = [session_choices(store, s) for s in found]
    refresh = any(k == "listed" for k, _ in request.query_list)
    return _render(visit, listed, request.query_list if refresh else None)


def prepare(
    catalogs: Catalogs, store: Store, access: Access, visit: Visit, form: list[tuple[str, str]]
) -> Response:
    """``POST /app/download``: store the selection, then show its confirmation."""
    listed = [
        session_choices(store, readable_session(store, access, eid)[0])
        for eid in form_values(form, "listed")
    ]
    try:
        wanted: DownloadRequest = read_form(form, listed)
    except FormError as exc:
        return _render(visit, listed, form, error=str(exc), status=400)
    cid, entries = catalogs.new_download(store, access, wanted.spec)
    if not any(e.files for e in entries):
        return _render(
            visit,
            listed,
            form,
            error="The chosen sessions have no files of those formats and types; choose others.",
            status=400,
        )
    return redirect(f"/app/download/{cid}?method={wanted.method}")


def _summary(catalogs: Catalogs, store: Store, access: Access, cid: str) -> dict[str, object]:
    spec, entries = catalogs.load_download(store, access, cid)
    sessions = {e.session.id for e in entries}
    return {
        "cid": cid,
        "size": sum(f.size for e in entries for _, f in e.files),
        "files": sum(len(e.files) for e in entries),
        "sessions": len(sessions),
        "resources": len(entries),
        "options": spec.get("options") or [],
    }


def confirm(catalogs: Catalogs, store: Store, access: Access, visit: Visit, cid: str) -> Response:
    """``GET /app/download/{id}``: the download id, its size, and the chosen method."""
    method = visit.request.param("method", "zip")
    if method not in METHODS:
        method = "zip"
    return page(
        "prepared.html",
        visit=visit,
        method=method,
        folder=DEFAULT_FOLDER,
        **_summary(catalogs, store, access, cid),
    )


def server_url(request: Request) -> str:
    """This server's base URL as the browser reached it."""
    host = request.headers.get("host", "127.0.0.1")
    return f"{request.scheme}://{host}"


def handoff_command(server: str, cid: str, alias: str, folder: str) -> str:
    """The shell command that fetches download ``cid`` with xnat-downloader.  It names the
    token's alias only: the secret is typed at the password prompt (or given in
    ``$XNAT_PASS``), so it never lands in the shell's history."""
    words = [
        "xnat-downloader",
        "download",
        "-w",
        shlex.quote(server),
        "-u",
        shlex.quote(alias),
        "--catalog",
        shlex.quote(f"{server}/xapi/archive/download/{cid}/xml"),
        "-o",
        shlex.quote(folder),
    ]
    return " ".join(words)


def handoff(
    catalogs: Catalogs,
    store: Store,
    access: Access,
    visit: Visit,
    cid: str,
    form: list[tuple[str, str]],
) -> Response:
    """``POST /app/download/{id}/handoff``: an alias token and the command that uses it.

    The token (XNAT's default lifetime, two days) lets the client log in on its own, so the
    download outlives this browser session.  It is shown once, on a page that is not cached.
    """
    summary = _summary(catalogs, store, access, cid)  # 404 unless the download is the visitor's
    folder = dict(form).get("folder", "").strip() or DEFAULT_FOLDER
    if any(c in folder for c in "\0\r\n"):
        raise HttpError(400, "The folder name may not contain line breaks.")
    assert access.user is not None
    token = store.issue_token(access.user.login)
    expires = datetime.fromtimestamp(token.expires_ms / 1000, UTC)
    return page(
        "handoff.html",
        visit=visit,
        command=handoff_command(server_url(visit.request), cid, token.alias, folder),
        secret=token.secret,
        expires=expires.strftime("%Y-%m-%d %H:%M UTC"),
        folder=folder,
        **summary,
    )

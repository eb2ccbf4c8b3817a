"""One browser request as the page handlers see it, and the guards they share."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response
from minixnat.pages.render import redirect
from minixnat.store import Project, Store, Subject, User

STALE_FORM = "This form is out of date or came from another site; reload the page."


@dataclass
class Visit:
    request: Request
    user: User | None
    sid: str | None
    cookies: list[tuple[str, str]]
    #: The browser sent a session cookie the server no longer knows.
    expired: bool
    #: The token this visitor's forms must carry (empty without a login session).
    csrf: str
    #: How many of the visitor's imports are receiving or processing (the header shows it).
    imports_running: int = 0

    def carries_token(self, form: Mapping[str, str]) -> bool:
        """Whether a posted form carries this login session's token (its ``csrf`` field)."""
        return bool(self.sid) and hmac.compare_digest(form.get("csrf", ""), self.csrf)


def posted_type(request: Request) -> str:
    """The media type of a request's body, lower-cased, without its parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_multipart(request: Request) -> None:
    """415 unless the body is a multipart form (the forms that send files)."""
    if posted_type(request) != "multipart/form-data":
        raise HttpError(415, "This form sends multipart/form-data.")


class LoginNeeded(Exception):
    """A guest asked for something that logging in might show: send them to the form."""


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this server, never another site."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target:
        return "/"
    return target


def here(request: Request) -> str:
    """This request's path and query, to come back to after logging in."""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in request.query_list)
    return request.raw_path + (f"?{query}" if query else "")


def to_login(visit: Visit) -> Response:
    target = here(visit.request) if visit.request.method == "GET" else "/"
    return redirect(f"/app/login?next={quote(target, safe='')}")


def readable_project(store: Store, access: Access, ref: str) -> Project:
    """A project the visitor may read.  Guests are sent to log in rather than told whether a
    private project exists; logged-in outsiders get 404, as from the API."""
    project = store.get_project(ref)
    if project is not None and access.can_read(project):
        return project
    if access.user is None:
        raise LoginNeeded
    raise HttpError(404, f"Unable to find project {ref}, or you may not read it.")


def project_subject(store: Store, project: Project, ref: str) -> Subject:
    """A subject of ``project`` by label or ID; 404 if it has none such."""
    found = store.resolve_subject(project.id, ref)
    if found is None:
        raise HttpError(404, f"Project {project.id} has no subject {ref}.")
    return found

"""Seed 002's prearchive page: sessions waiting to be archived, and what can be done to them.

What the page lists and does goes through the REST API as the visitor (``pages/api.py``):
the listing is ``GET /data/prearchive/projects``, and archive, move and delete are
``/data/services/archive`` and ``/data/services/prearchive/{move,delete}``.  So the page
shows exactly the sessions the API would show this user, and refuses what the API refuses
with the API's message.  Only the sizes on disk are read from the store directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Response
from minixnat.pages.api import Api
from minixnat.pages.render import page, redirect
from minixnat.pages.upload import session_href, upload_targets
from minixnat.pages.visit import Visit
from minixnat.store import Store, User

ACTIONS = {"archive": "Archive", "move": "Move to project", "delete": "Delete"}


@dataclass(frozen=True)
class Entry:
    """One prearchive session as the page shows it."""

    row: dict[str, str]
    size: int
    files: int

    @property
    def src(self) -> str:
        return self.row["url"]

    @property
    def href(self) -> str:
        return _href(self.src)


def _href(src: str) -> str:
    """The page of ``/prearchive/projects/{P}/{timestamp}/{folder}``."""
    return "/app/prearchive/" + "/".join(quote(p, safe="") for p in src.split("/")[3:])


@dataclass(frozen=True)
class Outcome:
    """What one action did to one session: a link to the result, or the API's refusal."""

    src: str
    status: int  # the API's
    message: str
    href: str = ""

    @property
    def ok(self) -> bool:
        return self.status < 400


def _entry(store: Store, row: dict[str, str]) -> Entry:
    found = store.get_prearc(row["project"], row["timestamp"], row["folderName"])
    files = [p for p in store.prearc_folder(found).rglob("*") if p.is_file()] if found else []
    return Entry(row, sum(p.stat().st_size for p in files), len(files))


def _src(project: str, timestamp: str, folder: str) -> str:
    return f"/prearchive/projects/{project}/{timestamp}/{folder}"


async def listing(store: Store, api: Api, access: Access, visit: Visit, user: User) -> Response:
    """``GET /app/prearchive``: the visitor's prearchive sessions, with bulk actions."""
    answer = await api(user, "GET", "/data/prearchive/projects", [("format", "json")])
    if not answer.ok:
        raise HttpError(answer.status, answer.message)
    entries = [_entry(store, row) for row in answer.rows()]
    return page(
        "prearchive.html",
        visit=visit,
        entries=entries,
        actions=ACTIONS,
        projects=upload_targets(store, access),
    )


async def _act(
    store: Store, api: Api, user: User, action: str, src: str, values: dict[str, str]
) -> Outcome:
    """One action on one session through the REST API."""
    if action == "archive":
        query = [("src", src)] + [
            (key, values[key]) for key in ("project", "subject", "session") if values.get(key)
        ]
        answer = await api(user, "POST", "/data/services/archive", query)
        uri = answer.body.decode().strip() if answer.ok else ""
        href = session_href(store, uri)
        return Outcome(src, answer.status, answer.message or "archived", href)
    if action == "move":
        target = values.get("newProject", "")
        query = [("action", "move"), ("newProject", target)]
        answer = await api(user, "POST", f"/data{src}", query)
        moved = answer.location.removeprefix("/data")
        href = _href(moved) if answer.ok and moved.startswith("/prearchive/") else ""
        return Outcome(src, answer.status, answer.message or f"moved to {target}", href)
    if action == "delete":
        answer = await api(user, "POST", "/data/services/prearchive/delete", [("src", src)])
        return Outcome(src, answer.status, answer.message or "deleted")
    raise HttpError(400, f"Unknown action {action!r}: use {', '.join(ACTIONS)}.")


async def bulk(
    store: Store, api: Api, visit: Visit, user: User, form: Sequence[tuple[str, str]]
) -> Response:
    """``POST /app/prearchive``: one action on every ticked session; a report of each."""
    values = dict(form)
    action = values.get("action", "")
    sources = [v for k, v in form if k == "src"]
    if action not in ACTIONS:
        raise HttpError(400, f"Choose an action: {', '.join(ACTIONS).lower()}.")
    if not sources:
        raise HttpError(400, "Tick the sessions to act on.")
    outcomes = [await _act(store, api, user, action, src, values) for src in sources]
    failed = sum(not o.ok for o in outcomes)
    return page(
        "prearchive_done.html",
        400 if failed == len(outcomes) else 200,
        visit=visit,
        action=ACTIONS[action],
        outcomes=outcomes,
        failed=failed,
    )


async def details(
    store: Store,
    api: Api,
    access: Access,
    visit: Visit,
    user: User,
    where: list[str],
    *,
    error: str = "",
    status: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    """``GET /app/prearchive/{P}/{timestamp}/{folder}``: one session, its scans, actions."""
    path = "/data" + _src(*where)
    answer = await api(user, "GET", path, [("format", "json")])
    if not answer.ok:
        raise HttpError(answer.status, answer.message)
    (row,) = answer.rows()
    scans = await api(user, "GET", f"{path}/scans", [("format", "json")])
    return page(
        "prearchive_one.html",
        status,
        visit=visit,
        entry=_entry(store, row),
        scans=scans.rows() if scans.ok else [],
        scans_error="" if scans.ok else scans.message,
        projects=upload_targets(store, access),
        error=error,
        values=values or {"project": row["project"], "subject": row["subject"],
                          "session": row["name"]},
    )  # fmt: skip


async def act_on_one(
    store: Store,
    api: Api,
    access: Access,
    visit: Visit,
    user: User,
    where: list[str],
    form: Sequence[tuple[str, str]],
) -> Response:
    """``POST /app/prearchive/{P}/{timestamp}/{folder}``: archive, move or delete it."""
    values = dict(form)
    action = values.get("action", "")
    outcome = await _act(store, api, user, action, _src(*where), values)
    if not outcome.ok:
        return await details(
            store, api, access, visit, user, where,
            error=outcome.message, status=outcome.status, values=values,
        )  # fmt: skip
    # The archived session's page, the moved entry's, or (deleted) the prearchive.
    return redirect(outcome.href or "/app/prearchive")

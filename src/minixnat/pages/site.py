"""The pages' front door: routing under ``/app``, log in and out, and form protection.

Browsers get pages, never Basic-auth prompts: a page that needs a login redirects to the
login form, and a dead session cookie is dropped (the API under ``/data`` answers 401
instead, so scripts learn their session died).  Forms that change anything are POSTs that
carry a per-session token, and the session cookie is ``SameSite=Lax``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol

from minixnat.http import bodies
from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response
from minixnat.pages import browse, download, prearchive, subjects, upload
from minixnat.pages.api import Api
from minixnat.pages.render import page, redirect, static
from minixnat.pages.visit import (
    STALE_FORM,
    Visit,
    posted_type,
    require_multipart,
    safe_next,
    to_login,
)
from minixnat.store import Store, User

LOGIN_FAILED = "Login attempt failed. Please try again."
LOGGED_OUT = "You are not logged in (or your session has ended): log in, then try again."
#: Pages that bring data in (login required): ``/app/{upload,activity,prearchive}…``, and
#: under a project ``add-subject``, ``spreadsheet[.csv]``, ``upload-xml``, ``subjects/S/edit``.
WRITING_PAGES = ("upload", "activity", "prearchive")
PROJECT_EDITS = ("add-subject", "spreadsheet", "spreadsheet.csv", "upload-xml")


def _writes(rest: list[str]) -> bool:
    """Whether ``/app/{rest}`` is one of the pages that bring data in."""
    if rest[0] in WRITING_PAGES:
        return True
    if rest[0] != "projects":
        return False
    return (len(rest) == 3 and rest[2] in PROJECT_EDITS) or (
        len(rest) == 5 and rest[2] == "subjects" and rest[4] == "edit"
    )


# The login form's own token (login CSRF): a random value in a cookie that other sites'
# form posts do not carry (SameSite=Lax), and its HMAC in the form.
LOGIN_COOKIE = "XNAT_LOGIN_FORM"


class SessionKeeper(Protocol):
    """The server's login sessions, as the pages need them."""

    def check_password(self, login: str, password: str) -> User | None: ...

    def new_session(self, login: str, cookies: list[tuple[str, str]], token: str = "") -> str: ...

    def end_session(self, sid: str, cookies: list[tuple[str, str]]) -> None: ...


class Pages:
    """Server-rendered HTML pages over one store."""

    def __init__(
        self,
        store: Store,
        keeper: SessionKeeper,
        secret: bytes,
        catalogs: download.Catalogs,
        api: Api,
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.secret = secret
        self.catalogs = catalogs
        self.api = api

    def csrf_for(self, sid: str | None) -> str:
        if not sid:
            return ""
        return hmac.new(self.secret, sid.encode(), hashlib.sha256).hexdigest()[:32]

    def visit(
        self,
        request: Request,
        user: User | None,
        sid: str | None,
        cookies: list[tuple[str, str]],
        *,
        expired: bool = False,
    ) -> Visit:
        return Visit(request, user, sid, cookies, expired, self.csrf_for(sid))

    async def handle(self, visit: Visit, rest: list[str]) -> Response:
        """Answer ``/`` (``rest`` empty) or ``/app/{rest}``."""
        method = visit.request.method
        head = rest[0] if rest else ""
        if head == "static" and len(rest) == 2:
            found = static(rest[1])
            if found is None:
                raise HttpError(404, "No such file.")
            return found
        # Only pages show the header's "N running" (not the stylesheet and scripts).
        if visit.user is not None:
            visit.imports_running = self.store.running_activities(visit.user.login)
        if head == "login" and len(rest) == 1:
            if method == "POST":
                return await self._login(visit)
            return self._login_form(visit)
        if head == "logout" and len(rest) == 1:
            return await self._logout(visit)
        if method not in ("GET", "HEAD", "POST"):
            raise HttpError(405, f"{method} is not used by the pages.")
        access = Access(self.store, visit.user)
        if not rest:
            return browse.home(self.store, access, visit)
        if _writes(rest):
            if visit.user is None:
                if upload.wants_json(visit):  # the upload script or the tracker's poll
                    return upload.json_response({"ok": False, "message": LOGGED_OUT}, 401)
                return to_login(visit)
            return await self._writing(visit, visit.user, access, rest)
        if method == "POST":
            form = await self._checked_form(visit)
        else:
            form = None
        if head == "projects" and len(rest) == 2:
            return browse.project(self.store, access, visit, rest[1])
        if head == "projects" and len(rest) == 4 and rest[2] == "subjects":
            return browse.subject(self.store, access, visit, rest[1], rest[3])
        if head == "experiments" and len(rest) == 2:
            return browse.session(self.store, access, visit, rest[1])
        if head == "experiments" and len(rest) == 3 and rest[2] == "files":
            return browse.files(self.store, access, visit, rest[1])
        if head == "sessions" and len(rest) == 1:
            return browse.sessions(self.store, access, visit)
        if head == "download":
            if visit.user is None:
                return to_login(visit)
            if len(rest) == 1:
                if form is not None:
                    return download.prepare(self.catalogs, self.store, access, visit, form)
                return download.page_for(self.store, access, visit)
            if len(rest) == 2 and form is None:
                return download.confirm(self.catalogs, self.store, access, visit, rest[1])
            if len(rest) == 3 and rest[2] == "handoff" and form is not None:
                return download.handoff(self.catalogs, self.store, access, visit, rest[1], form)
        raise HttpError(404, "The requested page was not found.")

    async def _writing(self, visit: Visit, user: User, access: Access, rest: list[str]) -> Response:
        """The pages that bring data in: upload, activity, prearchive, subjects."""
        store, api, post = self.store, self.api, visit.request.method == "POST"
        head, n = rest[0], len(rest)
        if head == "upload" and n == 1:
            if post:
                return await upload.receive(store, api, access, visit, user)
            return upload.form(store, access, visit)
        if head == "activity" and n == 1 and not post:
            return upload.tracker(store, visit, user)
        if head == "activity" and n == 2 and not post:
            return upload.one(store, visit, user, rest[1])
        if head == "prearchive" and n in (1, 4):
            where = rest[1:]
            if not post:
                if n == 1:
                    return await prearchive.listing(store, api, access, visit, user)
                return await prearchive.details(store, api, access, visit, user, where)
            form = await self._checked_form(visit)
            if n == 1:
                return await prearchive.bulk(store, api, visit, user, form)
            return await prearchive.act_on_one(store, api, access, visit, user, where, form)
        if head == "projects" and n == 3 and rest[2] == "spreadsheet.csv" and not post:
            return subjects.sheet_template(store, access, rest[1])
        if head == "projects" and n == 3 and rest[2] in ("spreadsheet", "upload-xml"):
            sheet = rest[2] == "spreadsheet"
            if not post:
                if sheet:
                    return subjects.sheet_form(store, access, visit, rest[1])
                return subjects.xml_form(store, access, visit, rest[1])
            body = await self._checked_upload(visit)
            try:
                if sheet:
                    return await subjects.sheet_upload(
                        store, api, access, visit, user, rest[1], body
                    )
                return await subjects.xml_upload(store, api, access, visit, user, rest[1], body)
            finally:
                body.discard()
        subject = rest[3] if n == 5 and rest[2] == "subjects" and rest[4] == "edit" else ""
        if head == "projects" and (subject or (n == 3 and rest[2] == "add-subject")):
            if not post:
                return subjects.subject_form(store, access, visit, rest[1], subject)
            form = await self._checked_form(visit)
            return await subjects.save_subject(
                store, api, access, visit, user, rest[1], subject, form
            )
        raise HttpError(404, "The requested page was not found.")

    async def _checked_upload(self, visit: Visit) -> bodies.Body:
        """A posted multipart form (streamed to disk), refused unless it carries this
        session's token; its files are the caller's to discard."""
        require_multipart(visit.request)
        body = await bodies.receive(visit.request, self.store.tmp_dir)
        if not visit.carries_token(body.form):
            body.discard()
            raise HttpError(403, STALE_FORM)
        return body

    # -- logging in and out ------------------------------------------------------------------
    def _login_token(self, nonce: str) -> str:
        return hmac.new(self.secret, f"login:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def _login_form(
        self, visit: Visit, *, error: str = "", login: str = "", status: int = 200
    ) -> Response:
        notice = ""
        if visit.expired:
            notice = "Your session has ended. Log in again to continue."
        nonce = visit.request.cookies.get(LOGIN_COOKIE, "")
        if len(nonce) != 32 or not nonce.isalnum():
            nonce = secrets.token_hex(16)
            visit.cookies.append((LOGIN_COOKIE, nonce))
        return page(
            "login.html",
            status,
            visit=visit,
            error=error,
            notice=notice,
            login=login,
            login_csrf=self._login_token(nonce),
            next=safe_next(visit.request.param("next", "/")),
        )

    async def _login(self, visit: Visit) -> Response:
        form = dict(await _form(visit.request))
        login = form.get("username", "")
        password = form.get("password", "")
        target = safe_next(form.get("next", "/"))
        visit.request.query["next"] = target
        nonce = visit.request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not hmac.compare_digest(form.get("csrf", ""), self._login_token(nonce)):
            return self._login_form(visit, error=STALE_FORM, login=login, status=403)
        user = self.keeper.check_password(login, password) if login and password else None
        if user is None:
            # 401 without WWW-Authenticate: the form is shown again, no browser prompt.
            return self._login_form(visit, error=LOGIN_FAILED, login=login, status=401)
        if visit.sid:
            self.keeper.end_session(visit.sid, visit.cookies)
        self.keeper.new_session(user.login, visit.cookies)
        return redirect(target)

    async def _logout(self, visit: Visit) -> Response:
        if visit.request.method != "POST":
            raise HttpError(405, "Log out with the button on the page (a POST).")
        await self._checked_form(visit)
        if visit.sid:
            self.keeper.end_session(visit.sid, visit.cookies)
        return redirect("/")

    async def _checked_form(self, visit: Visit) -> list[tuple[str, str]]:
        """A posted form, refused unless it carries this session's token."""
        form = await _form(visit.request)
        if not visit.carries_token(dict(form)):
            raise HttpError(403, STALE_FORM)
        return form


async def _form(request: Request) -> list[tuple[str, str]]:
    if posted_type(request) != "application/x-www-form-urlencoded":
        raise HttpError(415, "Pages accept HTML form posts only.")
    return await request.form()

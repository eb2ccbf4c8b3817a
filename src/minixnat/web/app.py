"""The minixnat ASGI application: authentication, fault injection and dispatch.

Authentication, as XNAT 1.8 (``xnat-rest-api.md`` §2): HTTP Basic on any request (user and
password, or an alias token's alias and secret); a ``JSESSIONID`` cookie from
``/data/services/auth``, ``/data/JSESSION`` or a Basic-authenticated ``GET /``; a request
with no credentials at all is the guest, who sees public projects only.  A cookie that names
an expired or unknown session gets 401 (with ``WWW-Authenticate``), never silent guest
access, so a client learns its session died.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import shutil
import time
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any

from minixnat.importer.unpack import Limits
from minixnat.pages.render import page
from minixnat.pages.site import Pages
from minixnat.pages.visit import LoginNeeded, to_login
from minixnat.store import Store, User
from minixnat.web import catalogs, downloads, imports, listings, objects, writes
from minixnat.web.http import (
    AnyResponse,
    BadPath,
    HttpError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    build_request,
    error_response,
    text,
)
from minixnat.web.resolve import Access, Target, resolve
from minixnat.web.tables import Table, apply_query, project_columns, render

BUILD_INFO = {
    "version": "1.8.10",
    "buildNumber": "minixnat",
    "buildDate": "",
    "sha": "minixnat",
    "isDirty": "false",
    "branch": "main",
    "commit": "",
    "tag": "1.8.10",
    "shaFull": "",
    "timestamp": "0",
}
SCHEMAS = ("xnat", "xdat")
REALM = 'Basic realm="XNAT"'


@dataclass
class Faults:
    """The fault switches of ``minixnat serve`` (CONTRACT §3)."""

    latency_ms: int = 0
    no_range: bool = False
    drop_rate: float = 0.0
    error_rate: float = 0.0
    chaos_seed: int | None = None
    session_ttl: float = 900.0
    conn_mbps: float = 0.0


@dataclass
class LoginSession:
    login: str
    last_seen: float


class App:
    """The ASGI callable.  One instance serves one archive root."""

    def __init__(
        self, store: Store, faults: Faults | None = None, limits: Limits | None = None
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.limits = limits or Limits()
        # Uploads are received here, on the archive's file system, so storing one is a
        # rename.  Anything left from a previous run was never committed: clear it.
        self.tmp_dir = store.root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(self.faults.chaos_seed)
        now = time.monotonic()
        self.sessions: dict[str, LoginSession] = {
            sid: LoginSession(login, now) for sid, (login, _) in store.load_sessions().items()
        }
        # Signs the pages' form tokens; a restart makes open forms ask for a reload.
        self.pages = Pages(store, self, secrets.token_bytes(32))

    # -- ASGI entry ----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        cookies: list[tuple[str, str]] = []
        try:
            request = build_request(scope, receive)
            if self.faults.error_rate and self.rng.random() < self.faults.error_rate:
                raise HttpError(
                    503,
                    "Service temporarily unavailable (minixnat --error-rate).",
                    [("Retry-After", "1")],
                )
            if _is_page(request):
                response = await self._page(request, cookies)
            else:
                user, sid = self._authenticate(request, cookies)
                response = await self._dispatch(request, user, sid, cookies)
        except BadPath:
            response = error_response(
                HttpError(
                    400,
                    "Invalid path: '..', encoded slashes, control characters and absolute "
                    "paths are refused.",
                )
            )
        except HttpError as err:
            response = error_response(err)
        except Exception as exc:  # a server bug must still answer like XNAT, not hang
            response = error_response(HttpError(500, f"Internal server error: {exc}"))
        await self._send(response, send, cookies)

    async def _send(
        self, response: AnyResponse, send: Send, cookies: list[tuple[str, str]]
    ) -> None:
        headers = [(b"content-type", response.content_type.encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in response.headers]
        for name, value in cookies:
            # Lax keeps the session cookie off other sites' form posts; an empty value
            # deletes the cookie (logging out, or a session the server no longer knows).
            expiry = "" if value else " Max-Age=0;"
            cookie = f"{name}={value}; Path=/;{expiry} HttpOnly; SameSite=Lax"
            headers.append((b"set-cookie", cookie.encode()))
        if isinstance(response, Response):
            headers.append((b"content-length", str(len(response.body)).encode()))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": response.body})
            return
        if response.content_length is not None:
            headers.append((b"content-length", str(response.content_length).encode()))
        cut_at = None
        if response.chaos and self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
            expected = response.content_length or 1024 * 1024
            cut_at = self.rng.randrange(0, max(1, expected))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        sent = 0
        started = time.monotonic()
        rate = self.faults.conn_mbps * 1_000_000
        async for chunk in response.chunks:
            piece_size = 256 * 1024 if rate else len(chunk)
            for offset in range(0, len(chunk), max(1, piece_size)):
                piece = chunk[offset : offset + piece_size]
                if cut_at is not None and sent + len(piece) > cut_at:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": piece[: cut_at - sent],
                            "more_body": True,
                        }
                    )
                    # Abort the response: uvicorn closes the connection, and the client
                    # sees a body shorter than promised (or a broken chunked stream).
                    raise ConnectionAbortedError("minixnat --drop-rate cut this body")
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                sent += len(piece)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- authentication ----------------------------------------------------------------------
    def new_session(self, login: str, cookies: list[tuple[str, str]]) -> str:
        sid = secrets.token_hex(16).upper()
        self.sessions[sid] = LoginSession(login, time.monotonic())
        self.store.add_session(sid, login)
        cookies.append(("JSESSIONID", sid))
        return sid

    def end_session(self, sid: str, cookies: list[tuple[str, str]]) -> None:
        self.sessions.pop(sid, None)
        self.store.delete_session(sid)
        cookies.append(("JSESSIONID", ""))

    def check_password(self, login: str, password: str) -> User | None:
        """The login form takes passwords only; alias tokens are for scripts."""
        return self.store.check_password(login, password)

    def _session_user(self, sid: str) -> User | None:
        session = self.sessions.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self.faults.session_ttl:
            del self.sessions[sid]
            self.store.delete_session(sid)
            return None
        session.last_seen = now
        return self.store.get_user(session.login)

    def _basic(self, request: Request) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
        except Exception as exc:
            raise HttpError(
                401, "Malformed Basic credentials.", [("WWW-Authenticate", REALM)]
            ) from exc
        login, _, password = decoded.partition(":")
        return login, password

    def _check_credentials(self, login: str, password: str) -> User | None:
        user = self.store.check_password(login, password)
        if user is None:
            user = self.store.check_token(login, password)
        return user

    def _authenticate(
        self, request: Request, cookies: list[tuple[str, str]]
    ) -> tuple[User | None, str | None]:
        """The requesting user (None = guest) and their session id, if any."""
        basic = self._basic(request)
        sid = request.cookies.get("JSESSIONID")
        if basic is not None:
            user = self._check_credentials(*basic)
            if user is None:
                raise HttpError(
                    401, "Login attempt failed. Please try again.", [("WWW-Authenticate", REALM)]
                )
            if sid and (current := self._session_user(sid)) and current.login == user.login:
                return user, sid
            return user, None
        if sid:
            user = self._session_user(sid)
            if user is None:
                raise HttpError(
                    401,
                    "Your session has expired or is unknown; log in again.",
                    [("WWW-Authenticate", REALM)],
                )
            return user, sid
        return None, None

    def _expiration_cookie(self, cookies: list[tuple[str, str]]) -> None:
        ttl_ms = int(self.faults.session_ttl * 1000)
        cookies.append(("SESSION_EXPIRATION_TIME", f'"{int(time.time() * 1000)},{ttl_ms}"'))

    # -- the pages -----------------------------------------------------------------------
    async def _page(self, request: Request, cookies: list[tuple[str, str]]) -> AnyResponse:
        """``/`` and ``/app/…``: the browser pages (``minixnat.pages``)."""
        expired = False
        try:
            user, sid = self._authenticate(request, cookies)
        except HttpError as err:
            if err.status != 401 or "authorization" in request.headers:
                raise  # wrong Basic credentials are answered as the API answers them
            # A dead session cookie: the browser is a guest again and forgets the cookie,
            # rather than meeting a Basic-auth prompt.
            user, sid, expired = None, None, True
            cookies.append(("JSESSIONID", ""))
        if user is not None and sid is None:
            # Basic credentials open a session, as in XNAT: xnatpy's alias-token login reads
            # JSESSIONID from GET /, and the pages' forms are tied to a session.
            sid = self.new_session(user.login, cookies)
        if sid:
            self._expiration_cookie(cookies)
        visit = self.pages.visit(request, user, sid, cookies, expired=expired)
        try:
            return await self.pages.handle(visit, request.segments[1:])
        except LoginNeeded:
            return to_login(visit)
        except HttpError as err:
            return page(
                "error.html",
                err.status,
                visit=visit,
                status=err.status,
                reason=_reason(err.status),
                message=err.message,
            )

    # -- dispatch ------------------------------------------------------------------------
    async def _dispatch(
        self, request: Request, user: User | None, sid: str | None, cookies: list[tuple[str, str]]
    ) -> AnyResponse:
        segs = request.segments
        if sid:
            self._expiration_cookie(cookies)
        head = segs[0]
        if head in ("data", "REST"):
            rest = segs[1:]
            if rest and rest[0] == "archive":
                rest = rest[1:]
            return await self._data(request, rest, user, sid, cookies)
        if head == "xapi":
            return await self._xapi(request, segs[1:], user)
        if head == "schemas" and len(segs) == 3 and segs[2].endswith(".xsd"):
            return self._schema(segs[1])
        raise HttpError(404, "The requested resource was not found.")

    def _require_user(self, user: User | None) -> User:
        if user is None:
            raise HttpError(
                401, "The request requires user authentication", [("WWW-Authenticate", REALM)]
            )
        return user

    async def _data(
        self,
        request: Request,
        rest: list[str],
        user: User | None,
        sid: str | None,
        cookies: list[tuple[str, str]],
    ) -> AnyResponse:
        method = request.method
        head = rest[0] if rest else ""
        if head == "JSESSION" and len(rest) == 1:
            if method == "DELETE":
                if sid:
                    self.sessions.pop(sid, None)
                    self.store.delete_session(sid)
                return text("")
            if user is None:
                # Guest sessions exist in XNAT with requireLogin=false; name them "guest".
                return text(sid or self.new_session("guest", cookies))
            if sid is None:
                sid = self.new_session(user.login, cookies)
                self._expiration_cookie(cookies)
            return text(sid)
        if head == "auth" and len(rest) == 1:
            real = self._require_user(user)
            return text(f"User '{real.login}' is logged in")
        if head == "services":
            return await self._services(request, rest[1:], user, cookies)
        if head == "version":
            raise HttpError(404, "The requested resource was not found.")
        if head == "search" and len(rest) >= 2 and rest[1] == "elements":
            return self._search_elements(request, rest[2:])
        if head == "user" and len(rest) == 3 and rest[2] == "sessions":
            real = self._require_user(user)
            if rest[1] != real.login and not real.admin:
                raise HttpError(403, "Only admins may ask about other users' sessions.")
            count = sum(1 for s in self.sessions.values() if s.login == rest[1])
            return Response(200, json.dumps({rest[1]: count}).encode(), "application/json")
        if head == "prearchive":
            return imports.prearchive(self._write_context(user), request, rest[1:])
        if method in ("PUT", "POST", "DELETE"):
            return await writes.handle(self._write_context(user), request, rest)
        if method not in ("GET", "HEAD"):
            raise HttpError(405, f"{method} is not supported by the /data API.")
        access = Access(self.store, user)
        target = resolve(self.store, access, rest, all_files=request.flag("all"))
        return self._read(request, target, access, scoped=bool(rest) and rest[0] == "projects")

    def _read(
        self, request: Request, target: Target, access: Access, *, scoped: bool
    ) -> AnyResponse:
        store = self.store
        kind = target.kind
        if kind == "projects":
            table = listings.project_table(store, access)
            return render(project_columns(apply_query(table, request), request), request)
        if kind == "subjects":
            table = listings.subject_table(store, target, access)
            return render(project_columns(apply_query(table, request), request), request)
        if kind == "experiments":
            table = listings.experiment_table(store, target, request, access)
            return render(project_columns(apply_query(table, request), request), request)
        if kind == "scans":
            table = listings.scan_table(store, target)
        elif kind == "reconstructions":
            table = listings.recon_table(store, target)
        elif kind == "assessors":
            table = listings.assessor_table(store, target)
        elif kind == "resources":
            table = listings.resource_table(store, target)
        elif kind == "accessibility":
            assert target.project
            return text(target.project.accessibility)
        elif kind in ("prearchive_code", "quarantine_code"):
            return text("0")
        elif kind == "current_arc":
            return text("arc001")
        elif kind == "resource":
            if len(target.resources) != 1:
                raise HttpError(404, f"Unable to find resource {''.join(target.extra)}.")
            return catalogs.resource_catalog(store, target.resources[0][1])
        elif kind == "files":
            return self._files(request, target, scoped=scoped)
        else:
            return objects.render_object(store, target, request)
        return render(project_columns(apply_query(table, request, paging=False), request), request)

    def _files(self, request: Request, target: Target, *, scoped: bool) -> AnyResponse:
        store = self.store
        fmt = request.param("format").lower()
        if target.file_path and not request.raw_path.endswith("/"):
            return downloads.serve_file(
                store, target, request, allow_range=not self.faults.no_range
            )
        files = listings.selected_files(store, target, request)
        if fmt in downloads.ARCHIVE_FORMATS:
            members = downloads.archive_members(store, files, request, fmt)
            return downloads.stream_archive(members, fmt, downloads.archive_name(target), request)
        if fmt == "xcat":
            names = [
                downloads.member_name(
                    n,
                    r,
                    f,
                    structure=request.param("structure"),
                    include_project=request.flag("projectIncludedInPath"),
                    include_subject=request.flag("subjectIncludedInPath"),
                )
                for n, r, f in files
            ]
            host = request.headers.get("host", "localhost")
            return catalogs.xcat_listing(files, names, f"http://{host}")
        table = listings.file_table(store, target, request, scoped=scoped)
        if not table.rows and request.flag("accept-not-found"):
            return Response(204, b"")
        return render(apply_query(table, request, filters=False, paging=False), request)

    async def _services(
        self, request: Request, rest: list[str], user: User | None, cookies: list[tuple[str, str]]
    ) -> AnyResponse:
        head = rest[0] if rest else ""
        if head == "auth":
            if request.method not in ("PUT", "POST"):
                raise HttpError(405, "Use PUT or POST to log in.")
            form = dict(await request.form(limit=65536))
            login = form.get("username") or form.get("j_username") or ""
            password = form.get("password") or form.get("j_password") or ""
            found = self._check_credentials(login, password) if login else None
            if found is None:
                raise HttpError(401, "Authentication failed.", [("WWW-Authenticate", REALM)])
            sid = self.new_session(found.login, cookies)
            self._expiration_cookie(cookies)
            return text(sid)
        if head == "tokens":
            return self._tokens(rest[1:], user)
        if head == "import" and len(rest) == 1:
            return await imports.import_service(self._write_context(user), request)
        if head == "archive" and len(rest) == 1:
            return await imports.archive_service(self._write_context(user), request)
        if head == "prearchive" and len(rest) == 2:
            return imports.prearchive_service(self._write_context(user), request, rest[1])
        raise HttpError(404, f"Unknown service {head!r}.")

    def _write_context(self, user: User | None) -> writes.WriteContext:
        """Writes and the prearchive need a logged-in user; the guest gets 401."""
        real = self._require_user(user)
        if real.login == "guest":
            raise HttpError(401, "Log in to change data.", [("WWW-Authenticate", REALM)])
        return writes.WriteContext(
            self.store, Access(self.store, real), real, self.tmp_dir, self.limits
        )

    def _tokens(self, rest: list[str], user: User | None) -> Response:
        real = self._require_user(user)
        if real.login == "guest":
            raise HttpError(403, "The guest user can't request alias tokens")
        action = rest[0] if rest else ""
        if action == "issue":
            login = real.login
            if len(rest) == 3 and rest[1] == "user":
                if not real.admin:
                    raise HttpError(403, "Only admins may issue tokens for other users.")
                if self.store.get_user(rest[2]) is None:
                    raise HttpError(404, f"No user {rest[2]}.")
                login = rest[2]
            token = self.store.issue_token(login)
            return Response(200, json.dumps(_token_json(token)).encode(), "application/json")
        if action == "show":
            body = [_token_json(t) for t in self.store.user_tokens(real.login)]
            return Response(200, json.dumps(body).encode(), "application/json")
        if action == "validate" and len(rest) == 3:
            found = self.store.check_token(rest[1], rest[2])
            return Response(
                200,
                json.dumps({"valid": found.login if found else None}).encode(),
                "application/json",
            )
        if action == "invalidate" and len(rest) == 2:
            found_token = self.store.get_token(rest[1])
            if found_token is None:
                raise HttpError(404, f"Can't find an alias token with the alias {rest[1]}")
            if found_token.login != real.login and not real.admin:
                raise HttpError(403, "That token belongs to another user.")
            self.store.invalidate_token(rest[1])
            return Response(200, json.dumps({"result": "OK"}).encode(), "application/json")
        raise HttpError(404, "Unknown token operation.")

    def _search_elements(self, request: Request, rest: list[str]) -> Response:
        names = [
            "xnat:projectData",
            "xnat:subjectData",
            "xnat:mrSessionData",
            "xnat:ctSessionData",
            "xnat:petSessionData",
            "xnat:qcManualAssessorData",
        ]
        if rest:
            table = Table(["FIELD_ID", "HEADER", "TYPE"], [], title=None)
        else:
            rows = [
                {
                    "ELEMENT_NAME": n,
                    "PLURAL": n.split(":")[1],
                    "SINGULAR": n.split(":")[1],
                    "COUNT": "0",
                    "SECURED": "true",
                }
                for n in names
            ]
            table = Table(["ELEMENT_NAME", "PLURAL", "SINGULAR", "COUNT", "SECURED"], rows)
        return render(table, request)

    async def _xapi(self, request: Request, rest: list[str], user: User | None) -> AnyResponse:
        if rest[:2] == ["siteConfig", "buildInfo"]:
            if len(rest) == 3:
                return text(BUILD_INFO.get(rest[2], ""))
            return Response(200, json.dumps(BUILD_INFO).encode(), "application/json")
        if rest[:2] == ["siteConfig", "uptime"]:
            return Response(
                200, b'{"days":0,"hours":0,"minutes":0,"seconds":1}', "application/json"
            )
        if rest == ["schemas"]:
            return Response(200, json.dumps(list(SCHEMAS)).encode(), "application/json")
        if rest and rest[0] == "schemas" and len(rest) in (2, 3):
            return self._schema(rest[-1])
        if rest[:2] == ["archive", "download"] or rest[:2] == ["archive", "downloadwithsize"]:
            access = Access(self.store, user)
            if len(rest) == 2:
                if request.method != "POST":
                    raise HttpError(405, "POST a JSON selection to create a download catalog.")
                return catalogs.create_download(
                    self.store,
                    access,
                    await request.body(),
                    with_size=rest[1] == "downloadwithsize",
                )
            cid = rest[2]
            tail = rest[3] if len(rest) > 3 else ""
            if tail == "zip":
                return catalogs.download_catalog_zip(self.store, access, cid, request)
            if tail == "test":
                return catalogs.download_catalog_zip(
                    self.store, access, cid, request, placeholders=True
                )
            if tail in ("xml", ""):
                return catalogs.download_catalog_xml(
                    self.store, access, cid, attachment=tail == "xml"
                )
        raise HttpError(404, "The requested resource was not found.")

    def _schema(self, name: str) -> Response:
        name = name.removesuffix(".xsd")
        if name not in SCHEMAS:
            raise HttpError(404, f"No schema named {name}.")
        body = resources.files("minixnat.schemas").joinpath(f"{name}.xsd").read_bytes()
        return Response(200, body, "application/xml")


def _is_page(request: Request) -> bool:
    return not request.segments or request.segments[0] == "app"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _token_json(token: Any) -> dict[str, Any]:
    return {
        "alias": token.alias,
        "created": token.created_ms,
        "disabled": 0,
        "enabled": token.enabled,
        "estimatedExpirationTime": token.expires_ms,
        "id": abs(hash(token.alias)) % 100000,
        "secret": token.secret,
        "singleUse": False,
        "timestamp": token.created_ms,
        "validIPAddresses": [],
        "xdatUserId": token.login,
    }

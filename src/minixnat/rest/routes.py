"""The REST API's route table: which handler answers which URL.

XNAT's URLs are variable-depth (``…/scans/1,2/resources/DICOM/files/sub/a.dcm``), so a
route names a prefix: literal segments, ``{name}`` for one segment, and a final ``*`` for
whatever follows.  ``/REST`` is ``/data``, and ``/data/archive/…`` is ``/data/…``.  The first
route that matches the path and the method answers.  Authentication has already happened
(``server/auth.py``); handlers see the caller in :class:`Call`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from minixnat.http.access import Access
from minixnat.http.messages import AnyResponse, HttpError, Request, Response, text
from minixnat.importer.unpack import Limits
from minixnat.rest import (
    catalogs,
    dicomdump,
    imports,
    listings,
    reads,
    refresh,
    search,
    sharing,
    siteconfig,
    users,
    workflows,
    writes,
)
from minixnat.rest.resolve import readable_project, resolve
from minixnat.rest.tables import render
from minixnat.store import Store, User

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
# The schemas clients may fetch (``/xapi/schemas/{name}``), and the file of each.
SCHEMAS = {"xnat": "xnat.xsd", "xdat": "xdat.xsd", "pipeline/workflow": "workflow.xsd"}
REALM = 'Basic realm="XNAT"'
READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"PUT", "POST", "DELETE"})
NOT_FOUND = "The requested resource was not found."
SEARCH_BYTES = 1024 * 1024
PREFERENCES_BYTES = 64 * 1024


class Sessions(Protocol):
    """The login sessions and credential checks the REST handlers need, and the server's
    uptime (on the same clock as the sessions' expiry)."""

    def new_session(self, login: str, cookies: list[tuple[str, str]], token: str = "") -> str: ...

    def end_session(self, sid: str, cookies: list[tuple[str, str]]) -> None: ...

    def count_sessions(self, login: str) -> int: ...

    def expiration_cookie(self, cookies: list[tuple[str, str]]) -> None: ...

    def check_credentials(self, login: str, password: str) -> tuple[User | None, str]: ...

    def uptime(self) -> float: ...


@dataclass
class Call:
    """One request as a handler sees it."""

    request: Request
    store: Store
    sessions: Sessions
    user: User | None  # None: the guest
    sid: str | None
    token: str  # the alias token the caller authenticated with, if any
    cookies: list[tuple[str, str]]
    limits: Limits
    no_range: bool
    params: dict[str, str] = field(default_factory=dict)
    rest: list[str] = field(default_factory=list)

    @property
    def access(self) -> Access:
        return Access(self.store, self.user)

    def require_user(self) -> User:
        if self.user is None:
            raise HttpError(401, "The request requires user authentication", [REALM_HEADER])
        return self.user

    def write_context(self) -> writes.WriteContext:
        """Writes and the prearchive need a logged-in user; the guest gets 401."""
        user = self.require_user()
        return writes.WriteContext(self.store, self.access, user, self.store.tmp_dir, self.limits)


REALM_HEADER = ("WWW-Authenticate", REALM)
Handler = Callable[[Call], Awaitable[AnyResponse]]


@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]
    handler: Handler
    methods: frozenset[str] | None = None  # None: every method

    def match(self, segments: list[str], method: str) -> tuple[dict[str, str], list[str]] | None:
        if self.methods is not None and method not in self.methods:
            return None
        params: dict[str, str] = {}
        for i, part in enumerate(self.pattern):
            if part == "*":
                return params, segments[i:]
            if i >= len(segments):
                return None
            if part.startswith("{"):
                params[part[1:-1]] = segments[i]
            elif part != segments[i]:
                return None
        return (params, []) if len(segments) == len(self.pattern) else None


def normalise(segments: list[str]) -> list[str]:
    """``/REST`` is ``/data``; ``/data/archive/…`` is ``/data/…``."""
    if segments and segments[0] == "REST":
        segments = ["data", *segments[1:]]
    if segments[:2] == ["data", "archive"]:
        segments = ["data", *segments[2:]]
    return segments


async def dispatch(call: Call) -> AnyResponse:
    segments = normalise(call.request.segments)
    for route in _candidates(tuple(segments[:2])):
        found = route.match(segments, call.request.method)
        if found is not None:
            call.params, call.rest = found
            return await route.handler(call)
    raise HttpError(404, NOT_FOUND)


# -- sessions and tokens -------------------------------------------------------------------
async def jsession(call: Call) -> AnyResponse:
    """``/data/JSESSION``: the session id (a new one if needed); DELETE ends it."""
    if call.request.method == "DELETE":
        if call.sid:
            # The cookie is not cleared: a client that sends it again learns (401) that
            # its session is over, as with an expired one.
            call.sessions.end_session(call.sid, [])
        return text("")
    if call.sid is None:
        # No credentials: a guest session, which reads what the guest may read (XNAT with
        # requireLogin=false).
        login = call.user.login if call.user else "guest"
        call.sid = call.sessions.new_session(login, call.cookies, call.token)
        call.sessions.expiration_cookie(call.cookies)
    return text(call.sid)


async def auth_check(call: Call) -> AnyResponse:
    return text(f"User '{call.require_user().login}' is logged in")


async def auth_service(call: Call) -> AnyResponse:
    """``/data/services/auth``: a form login that answers the new session id."""
    if call.request.method not in ("PUT", "POST"):
        raise HttpError(405, "Use PUT or POST to log in.")
    form = dict(await call.request.form(limit=65536))
    login = form.get("username") or form.get("j_username") or ""
    password = form.get("password") or form.get("j_password") or ""
    found, token = call.sessions.check_credentials(login, password) if login else (None, "")
    if found is None:
        raise HttpError(401, "Authentication failed.", [REALM_HEADER])
    sid = call.sessions.new_session(found.login, call.cookies, token)
    call.sessions.expiration_cookie(call.cookies)
    return text(sid)


async def user_sessions(call: Call) -> AnyResponse:
    user = call.require_user()
    login = call.params["login"]
    if login != user.login and not user.admin:
        raise HttpError(403, "Only admins may ask about other users' sessions.")
    body = json.dumps({login: call.sessions.count_sessions(login)}).encode()
    return Response(200, body, "application/json")


async def tokens(call: Call) -> AnyResponse:
    """``/data/services/tokens/{issue[/user/U],show,validate/A/S,invalidate/A}``."""
    user = call.require_user()
    store, rest = call.store, call.rest
    action = rest[0] if rest else ""
    if action == "issue":
        login = user.login
        if len(rest) == 3 and rest[1] == "user":
            if not user.admin:
                raise HttpError(403, "Only admins may issue tokens for other users.")
            if store.get_user(rest[2]) is None:
                raise HttpError(404, f"No user {rest[2]}.")
            login = rest[2]
        return _json(_token_json(store.issue_token(login)))
    if action == "show":
        return _json([_token_json(t) for t in store.user_tokens(user.login)])
    if action == "validate" and len(rest) == 3:
        found = store.check_token(rest[1], rest[2])
        return _json({"valid": found.login if found else None})
    if action == "invalidate" and len(rest) == 2:
        token = store.get_token(rest[1])
        if token is None:
            raise HttpError(404, f"Can't find an alias token with the alias {rest[1]}")
        if token.login != user.login and not user.admin:
            raise HttpError(403, "That token belongs to another user.")
        store.invalidate_token(rest[1])
        return _json({"result": "OK"})
    raise HttpError(404, "Unknown token operation.")


def _json(body: Any) -> Response:
    return Response(200, json.dumps(body).encode(), "application/json")


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


# -- users -------------------------------------------------------------------------------
async def site_users(call: Call) -> AnyResponse:
    call.require_user()
    return users.site_users(call.store, call.request, call.params.get("login"))


async def xapi_users(call: Call) -> AnyResponse:
    call.require_user()
    return users.xapi_users(call.store, call.params.get("login"))


async def access_projects(call: Call) -> AnyResponse:
    return users.project_roles(call.store, call.user)


async def project_users(call: Call) -> AnyResponse:
    return users.project_users(call.store, call.access, call.request, call.params["project"])


async def membership(call: Call) -> AnyResponse:
    p = call.params
    return users.change_membership(
        call.store, call.access, call.request, p["project"], p["group"], p["login"]
    )


# -- sharing -----------------------------------------------------------------------------
def _shared_object(call: Call) -> list[str]:
    """The path of the shared subject or experiment: the route's path up to ``projects``."""
    segments = normalise(call.request.segments)[1:]
    end = len(segments) - (2 if "share" in call.params else 1)
    return segments[:end]


async def shares(call: Call) -> AnyResponse:
    path = _shared_object(call)
    if "share" in call.params:
        if call.request.method not in WRITE:
            raise HttpError(405, "PUT shares; DELETE unshares.")
        return sharing.change(call.store, call.access, call.request, path, call.params["share"])
    return sharing.listing(call.store, call.access, call.request, path)


SHARED_OBJECTS = [
    "data/projects/{project}/subjects/{subject}",
    "data/projects/{project}/subjects/{subject}/experiments/{experiment}",
    "data/projects/{project}/experiments/{experiment}",
    "data/subjects/{subject}",
    "data/experiments/{experiment}",
]


# -- the archive ---------------------------------------------------------------------------
async def archive_read(call: Call) -> AnyResponse:
    target = resolve(call.store, call.access, call.rest, all_files=call.request.flag("all"))
    scoped = bool(call.rest) and call.rest[0] == "projects"
    return reads.read(
        call.store, call.request, target, call.access, scoped=scoped, no_range=call.no_range
    )


async def archive_write(call: Call) -> AnyResponse:
    return await writes.handle(call.write_context(), call.request, call.rest)


async def method_not_allowed(call: Call) -> AnyResponse:
    raise HttpError(405, f"{call.request.method} is not supported by the /data API.")


async def not_found(call: Call) -> AnyResponse:
    raise HttpError(404, NOT_FOUND)


async def prearchive(call: Call) -> AnyResponse:
    return imports.prearchive(call.write_context(), call.request, call.rest)


async def import_service(call: Call) -> AnyResponse:
    return await imports.import_service(call.write_context(), call.request)


async def archive_service(call: Call) -> AnyResponse:
    return await imports.archive_service(call.write_context(), call.request)


async def prearchive_service(call: Call) -> AnyResponse:
    return imports.prearchive_service(call.write_context(), call.request, call.params["action"])


async def dicom_dump(call: Call) -> AnyResponse:
    where, parts = dicomdump.source_parts(call.request.param("src"))
    if where == "prearchive":
        files = imports.prearchive_files(call.write_context(), parts)
    else:
        files = dicomdump.archive_files(call.store, call.access, parts)
    wanted = [value for key, value in call.request.query_list if key == "field"]
    return render(dicomdump.dump(files, wanted), call.request)


async def scanners(call: Call) -> AnyResponse:
    return render(listings.scanner_table(call.store, call.access), call.request)


async def scan_types(call: Call) -> AnyResponse:
    project = None
    if "project" in call.params:
        project = readable_project(call.store, call.access, call.params["project"]).id
    table = listings.scan_type_table(call.store, call.access, call.request, project)
    return render(table, call.request)


async def refresh_catalog(call: Call) -> AnyResponse:
    call.require_user()
    return refresh.refresh_catalog(call.store, call.access, call.request)


async def unknown_service(call: Call) -> AnyResponse:
    raise HttpError(404, f"Unknown service {(call.rest or [''])[0]!r}.")


async def search_elements(call: Call) -> AnyResponse:
    if "element" in call.params:
        return search.element_fields(call.request, call.params["element"])
    return search.elements(call.store, call.access, call.request)


async def search_service(call: Call) -> AnyResponse:
    if call.request.method != "POST":
        raise HttpError(405, "POST an xdat:search document to /data/search.")
    return search.post_search(
        call.store, call.access, call.request, await call.request.body(limit=SEARCH_BYTES)
    )


async def saved_searches(call: Call) -> AnyResponse:
    document = b""
    if call.request.method == "PUT":
        document = await call.request.body(limit=SEARCH_BYTES)
    return search.saved(call.store, call.access, call.request, call.rest, document)


# -- workflows and pipelines ---------------------------------------------------------------
async def workflow_service(call: Call) -> AnyResponse:
    names = "/".join(call.rest)
    return workflows.service(call.store, call.access, call.request, names)


async def workflow_record(call: Call) -> AnyResponse:
    """``/data/workflows[/{id}]``: read a record, or (PUT) write a client's own."""
    wrk_ref = call.params.get("id", "")
    if call.request.method == "PUT":
        call.require_user()
        body = await call.request.body(limit=workflows.MAX_DOCUMENT)
        return workflows.put(call.store, call.access, call.request, body, wrk_ref)
    if wrk_ref:
        return workflows.one(call.store, call.access, call.request, wrk_ref)
    return workflows.find(call.store, call.access, call.request)


async def project_pipelines(call: Call) -> AnyResponse:
    p = call.params
    return workflows.pipelines(
        call.access, call.store, call.request, p["project"], p.get("name", "")
    )


async def archive_spec(call: Call) -> AnyResponse:
    return workflows.archive_spec(call.store, call.access, call.params["project"])


async def launch_pipeline(call: Call) -> AnyResponse:
    user = call.require_user()
    p = call.params
    return workflows.launch(
        call.store, call.access, user.login, p["project"], p["name"], p["experiment"]
    )


# -- xapi and schemas ----------------------------------------------------------------------
async def build_info(call: Call) -> AnyResponse:
    if "key" in call.params:
        return text(BUILD_INFO.get(call.params["key"], ""))
    return _json(BUILD_INFO)


async def uptime(call: Call) -> AnyResponse:
    """``/xapi/siteConfig/uptime``: how long this server has been up, as XNAT splits it."""
    minutes, seconds = divmod(int(call.sessions.uptime()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return _json({"days": days, "hours": hours, "minutes": minutes, "seconds": seconds})


async def site_config(call: Call) -> AnyResponse:
    """``/xapi/siteConfig[/{name}]``: the site preferences minixnat keeps (see siteconfig)."""
    user = call.require_user()
    name = call.params.get("name")
    if call.request.method in READ:
        if name:
            return siteconfig.preference(call.store, name)
        return siteconfig.preferences(call.store)
    if call.request.method not in ("POST", "PUT"):
        raise HttpError(405, "GET or POST the site's preferences.")
    body = await call.request.body(limit=PREFERENCES_BYTES)
    if name:
        try:
            values: dict[str, object] = {name: body.decode().strip()}
        except UnicodeDecodeError:
            raise HttpError(400, f"Send the value of {name} as UTF-8 text.") from None
    else:
        values = siteconfig.parse_object(body)
    return siteconfig.set_preferences(call.store, user, values)


async def plugins(call: Call) -> AnyResponse:
    """``/xapi/plugins``: the plugins installed, by name; minixnat has none."""
    call.require_user()
    return _json({})


async def schema_names(call: Call) -> AnyResponse:
    return _json(list(SCHEMAS))


async def schema(call: Call) -> AnyResponse:
    """``/xapi/schemas/[namespace/]name`` and ``/schemas/namespace/name.xsd``."""
    if "file" in call.params and not call.params["file"].endswith(".xsd"):
        raise HttpError(404, NOT_FOUND)
    name = (call.params.get("file") or call.params["name"]).removesuffix(".xsd")
    namespace = call.params.get("namespace", "")
    key = f"{namespace}/{name}" if f"{namespace}/{name}" in SCHEMAS else name
    if key not in SCHEMAS:
        raise HttpError(404, f"No schema named {name}.")
    body = resources.files("minixnat.schemas").joinpath(SCHEMAS[key]).read_bytes()
    return Response(200, body, "application/xml")


DOWNLOADS = ("download", "downloadwithsize")


async def create_download(call: Call) -> AnyResponse:
    if call.params["kind"] not in DOWNLOADS:
        raise HttpError(404, NOT_FOUND)
    if call.request.method != "POST":
        raise HttpError(405, "POST a JSON selection to create a download catalog.")
    return catalogs.create_download(
        call.store,
        call.access,
        await call.request.body(),
        with_size=call.params["kind"] == "downloadwithsize",
    )


async def download_catalog(call: Call) -> AnyResponse:
    if call.params["kind"] not in DOWNLOADS:
        raise HttpError(404, NOT_FOUND)
    cid, tail = call.params["id"], (call.rest[0] if call.rest else "")
    if tail == "zip":
        return catalogs.download_catalog_zip(call.store, call.access, cid, call.request)
    if tail == "test":
        return catalogs.download_catalog_zip(
            call.store, call.access, cid, call.request, placeholders=True
        )
    if tail in ("xml", "") and len(call.rest) <= 1:
        server = f"{call.request.scheme}://{call.request.headers.get('host', '127.0.0.1')}"
        return catalogs.download_catalog_xml(
            call.store, call.access, cid, attachment=tail == "xml", server=server
        )
    raise HttpError(404, NOT_FOUND)


@functools.lru_cache(maxsize=1024)
def _candidates(head: tuple[str, ...]) -> tuple[Route, ...]:
    """The routes, in table order, that a path starting with ``head`` (its first two
    segments) could match: every request would otherwise try most of the table (a file
    GET tried 37 patterns before the archive's)."""
    return tuple(route for route in ROUTES if _may_start(route.pattern, head))


def _may_start(pattern: tuple[str, ...], head: tuple[str, ...]) -> bool:
    for i, segment in enumerate(head):
        if i >= len(pattern):
            return False
        part = pattern[i]
        if part == "*":
            return True
        if not part.startswith("{") and part != segment:
            return False
    return True


def _route(path: str, handler: Handler, methods: frozenset[str] | None = None) -> Route:
    return Route(tuple(path.split("/")), handler, methods)


ROUTES: list[Route] = [
    _route("data/JSESSION", jsession),
    _route("data/auth", auth_check),
    _route("data/services/auth", auth_service),
    _route("data/services/tokens/*", tokens),
    _route("data/services/import", import_service),
    _route("data/services/archive", archive_service),
    _route("data/services/prearchive/{action}", prearchive_service),
    _route("data/services/workflows/*", workflow_service, READ),
    _route("data/services/dicomdump", dicom_dump, READ),
    _route("data/services/refresh/catalog", refresh_catalog, frozenset({"POST", "PUT"})),
    _route("data/services/*", unknown_service),
    _route("data/version", not_found),
    _route("data/search", search_service),
    _route("data/search/elements", search_elements, READ),
    _route("data/search/elements/{element}", search_elements, READ),
    _route("data/search/saved/*", saved_searches),
    _route("data/user/{login}/sessions", user_sessions),
    _route("data/prearchive/*", prearchive),
    *(_route(f"{base}/projects", shares, READ) for base in SHARED_OBJECTS),
    *(_route(f"{base}/projects/{{share}}", shares) for base in SHARED_OBJECTS),
    _route("data/users", site_users, READ),
    _route("data/users/{login}", site_users, READ),
    _route("data/projects/{project}/users", project_users, READ),
    _route("data/projects/{project}/users/{group}/{login}", membership, WRITE),
    _route("data/workflows", workflow_record, READ | {"PUT"}),
    _route("data/workflows/{id}", workflow_record, READ | {"PUT"}),
    _route("data/projects/{project}/pipelines", project_pipelines, READ),
    _route("data/projects/{project}/pipelines/{name}", project_pipelines, READ),
    _route("data/projects/{project}/archive_spec", archive_spec, READ),
    _route(
        "data/projects/{project}/pipelines/{name}/experiments/{experiment}",
        launch_pipeline,
        frozenset({"POST", "PUT"}),
    ),
    _route("data/scanners", scanners, READ),
    _route("data/scan_types", scan_types, READ),
    _route("data/projects/{project}/scan_types", scan_types, READ),
    _route("data/*", archive_write, WRITE),
    _route("data/*", archive_read, READ),
    _route("data/*", method_not_allowed),
    _route("xapi/siteConfig/buildInfo", build_info),
    _route("xapi/siteConfig/buildInfo/{key}", build_info),
    _route("xapi/siteConfig/uptime", uptime),
    _route("xapi/siteConfig", site_config),
    _route("xapi/siteConfig/{name}", site_config),
    _route("xapi/plugins", plugins, READ),
    _route("xapi/plugins/{name}", not_found, READ),
    _route("xapi/access/projects", access_projects, READ),
    _route("xapi/users", xapi_users, READ),
    _route("xapi/users/{login}", xapi_users, READ),
    _route("xapi/schemas", schema_names),
    _route("xapi/schemas/{name}", schema),
    _route("xapi/schemas/{namespace}/{name}", schema),
    _route("xapi/archive/{kind}", create_download),
    _route("xapi/archive/{kind}/{id}/*", download_catalog),
    _route("schemas/{namespace}/{file}", schema),
]

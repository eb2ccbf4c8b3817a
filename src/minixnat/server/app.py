"""The minixnat ASGI application: every request passes the same steps, in this order.

1. fault switches: ``--latency-ms`` waits, ``--error-rate`` may answer 503 (faults.py);
2. the request is parsed, and paths with traversal tricks are refused (http/messages.py);
3. authentication says who is asking (auth.py);
4. ``/`` and ``/app/…`` go to the pages (pages/), everything else to the REST API's route
   table (rest/routes.py);
5. any :class:`~minixnat.errors.MinixnatError` becomes XNAT's status page with its status,
   here and nowhere else; anything else is a bug and answers 500;
6. the response is sent (paced or cut by the fault switches) and logged (accesslog.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from http import HTTPStatus

from minixnat.errors import MinixnatError
from minixnat.http.messages import (
    AnyResponse,
    BadPath,
    HttpError,
    Receive,
    Request,
    RequestCut,
    Scope,
    Send,
    build_request,
    error_response,
)
from minixnat.importer.unpack import Limits
from minixnat.pages.render import page
from minixnat.pages.site import Pages
from minixnat.pages.visit import LoginNeeded, to_login
from minixnat.rest import catalogs, routes
from minixnat.server.accesslog import AccessLog, loggable_path
from minixnat.server.auth import Authenticator, Caller
from minixnat.server.faults import Chaos, Faults, send_response
from minixnat.server.internal import InternalApi
from minixnat.snapshots.worker import SnapshotWorker
from minixnat.store import Store
from minixnat.store.clock import Clock

log = logging.getLogger("minixnat")
BAD_PATH = "Invalid path: '..', encoded slashes, control characters and absolute paths are refused."


class App:
    """The ASGI callable.  One instance serves one archive root in one process; with
    ``serve --workers N``, each worker process has its own, and only the ``primary`` one
    runs the snapshot worker.  Call :func:`clear_leftovers` once before the first request."""

    def __init__(
        self,
        store: Store,
        faults: Faults | None = None,
        limits: Limits | None = None,
        *,
        clock: Clock | None = None,
        access_log: AccessLog | None = None,
        snapshots: bool = True,
        primary: bool = True,
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.limits = limits or Limits()
        self.chaos = Chaos(self.faults)
        self.access_log = access_log
        # Uploads are received here; clear_leftovers() empties it before a server starts.
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.auth = Authenticator(store, self.faults.session_ttl, clock)
        # Signs the pages' form tokens; kept in the archive, so forms rendered before a
        # restart still work after it.
        self.pages = Pages(
            store,
            self.auth,
            store.site_secret("pages"),
            catalogs,
            InternalApi(store, self.auth, self.limits),
        )
        # Archiving queues snapshot runs unless turned off; the worker also does runs
        # launched through the REST API, so it runs either way, in the primary process
        # only (the queue is the database: runs queued by the other worker processes of
        # ``serve --workers`` are found by its polling).
        store.auto_snapshots = snapshots
        self.snapshots = SnapshotWorker(store) if primary else None

    def close(self) -> None:
        """Stop the background work (a snapshot run under way is finished first)."""
        if self.snapshots is not None:
            self.snapshots.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.monotonic()
        await self.chaos.delay()
        cookies: list[tuple[str, str]] = []
        request: Request | None = None
        try:
            request = build_request(scope, receive)
            self.chaos.maybe_refuse()
            self.store.look_once()  # one check of the database's version per request
            if not request.segments or request.segments[0] == "app":
                response = await self._page(request, cookies)
            else:
                response = await self._rest(request, cookies)
        except RequestCut:
            # Nobody is left to answer, and nothing of the request was kept (each write
            # of a body is all or nothing): one debug line, and the access log says 499.
            path = loggable_path(request) if request else "(unreadable path)"
            log.debug("%s %s: the client went away mid-body", scope["method"], path)
            self._logged(scope, request, 499, 0, started)
            return
        except BadPath:
            response = error_response(HttpError(400, BAD_PATH))
        except MinixnatError as err:
            response = error_response(err)
        except Exception as exc:  # a server bug must still answer like XNAT, not hang
            log.exception("internal error")
            response = error_response(HttpError(500, f"Internal server error: {exc}"))
        head = request is not None and request.method == "HEAD"
        secure = scope.get("scheme") == "https"
        sent = await send_response(
            response, send, receive, cookies, self.chaos, head=head, secure=secure
        )
        self._logged(scope, request, response.status, sent, started)

    def _logged(
        self, scope: Scope, request: Request | None, status: int, sent: int, started: float
    ) -> None:
        """The request's line in the access log, if there is one."""
        if self.access_log is not None:
            path = loggable_path(request) if request else "(unreadable path)"
            client = (scope.get("client") or ("", 0))[0]
            elapsed = (time.monotonic() - started) * 1000
            self.access_log.write(client, scope["method"], path, status, sent, elapsed)

    async def _rest(self, request: Request, cookies: list[tuple[str, str]]) -> AnyResponse:
        caller = self.auth.authenticate(request)
        if caller.sid:
            self.auth.expiration_cookie(cookies)
        call = routes.Call(
            request,
            self.store,
            self.auth,
            caller.user,
            caller.sid,
            caller.token,
            cookies,
            self.limits,
            self.faults.no_range,
        )
        return await routes.dispatch(call)

    async def _page(self, request: Request, cookies: list[tuple[str, str]]) -> AnyResponse:
        """``/`` and ``/app/…``: the browser pages."""
        expired = False
        try:
            caller = self.auth.authenticate(request)
        except HttpError as err:
            if err.status != 401 or "authorization" in request.headers:
                raise  # wrong Basic credentials are answered as the API answers them
            # A dead session cookie: the browser is a guest again and forgets the cookie,
            # rather than meeting a Basic-auth prompt.
            caller, expired = Caller(None, None), True
            cookies.append(("JSESSIONID", ""))
        user, sid = caller.user, caller.sid
        if user is not None and sid is None:
            # Basic credentials open a session, as in XNAT: xnatpy's alias-token login reads
            # JSESSIONID from GET /, and the pages' forms are tied to a session.
            sid = self.auth.new_session(user.login, cookies, caller.token)
        if sid:
            self.auth.expiration_cookie(cookies)
        visit = self.pages.visit(request, user, sid, cookies, expired=expired)
        try:
            return await self.pages.handle(visit, request.segments[1:])
        except LoginNeeded:
            return to_login(visit)
        except MinixnatError as err:
            return page(
                "error.html",
                err.status,
                visit=visit,
                status=err.status,
                reason=_reason(err.status),
                message=err.message,
            )


def clear_leftovers(store: Store) -> None:
    """What a server does once as it starts, before any request: uploads are received in
    ROOT/tmp, on the archive's file system, so that storing one is a rename; anything left
    there by a previous run was never committed, so it goes.  Imports that were under way
    then are gone with it: the activity tracker says so."""
    shutil.rmtree(store.tmp_dir, ignore_errors=True)
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    store.end_interrupted()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

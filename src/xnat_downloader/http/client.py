"""One authenticated HTTP client per run, shared by every worker.

(Named a client, not a session: in this package a session is always an imaging session.)
``XnatClient`` owns an aiohttp connection pool and the XNAT login: it logs in once
(``GET /data/JSESSION`` with Basic credentials, which works for passwords and alias tokens
alike), then sends only the ``JSESSIONID`` cookie; when the server answers 401 because the
session expired it logs in again and repeats the request (once in a row: a 401 straight
after a fresh login is final; after a retry's wait the session may have expired again).
Requests wait while a login is under way, so none goes out without a session.  Every
response goes through :func:`check_response`, the single place where HTTP outcomes become
the package's exceptions.  Passwords and session ids are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import html
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from xnat_downloader._version import __version__
from xnat_downloader.errors import (
    AccessDenied,
    AuthError,
    ConnectionFailed,
    LoginPageError,
    NotFound,
    ServerError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.http.retry import RetryPolicy, classify
from xnat_downloader.throttle import Throttle

log = logging.getLogger("xnat_downloader.http")
USER_AGENT = f"xnat-downloader/{__version__}"
HTML_PREFIXES = (b"<html", b"<!doctype")
# The most of one answer that is read into memory (a listing, a document, a write's reply):
# far above any XNAT listing, far below what would exhaust a machine's memory when a
# hostile or broken server sends without end.  File bodies are streamed, never read whole.
DOCUMENT_LIMIT = 1024**3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


def loads_json(body: bytes | str) -> Any:
    """``json.loads`` for what a server sent: ValueError for anything unreadable, nesting
    too deep for the parser included (RecursionError otherwise escapes as a crash)."""
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("nested too deeply to read") from exc


async def read_capped(
    resp: aiohttp.ClientResponse, what: str, limit: int = DOCUMENT_LIMIT
) -> bytes:
    """A whole answer, read only up to ``limit`` bytes: ServerError beyond it."""
    too_big = f"the server's answer for {what} is larger than {limit // 1024**2} MiB; not read"
    if resp.content_length is not None and resp.content_length > limit:
        raise ServerError(too_big, status=resp.status, url=str(resp.url))
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1024 * 1024):
        body += chunk
        if len(body) > limit:
            raise ServerError(too_big, status=resp.status, url=str(resp.url))
    return bytes(body)


def h3_message(body: bytes) -> str:
    """The ``<h3>`` text of an XNAT (Restlet) error page (its markup dropped, its entities
    such as ``&#x27;`` read), or the first line of a text body."""
    match = re.search(rb"<h3>(.*?)</h3>", body, re.S | re.I)
    if match:
        text = re.sub(r"<[^>]*>", "", match.group(1).decode("utf-8", "replace"))
        return re.sub(r"\s+", " ", html.unescape(text)).strip()
    if body.lstrip()[:9].lower().startswith(HTML_PREFIXES):
        return ""
    return body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""


def looks_like_html(body: bytes) -> bool:
    return body.lstrip()[:9].lower().startswith(HTML_PREFIXES)


def check_response(
    status: int,
    body_start: bytes,
    url: str,
    *,
    expect_data: bool = True,
    what: str = "",
    verb: str = "read",
) -> None:
    """Raise the package exception for an HTTP outcome; return quietly on success.

    ``body_start`` is the first bytes of the body (the whole body for small responses).
    ``expect_data`` marks responses that must be data: an HTML page there is a login or
    error page, never a success.
    """
    target = what or url
    if 200 <= status < 300:
        if expect_data and looks_like_html(body_start):
            msg = (
                f"the server answered {target} with an HTML page (a login or error page), "
                "not data: check the server URL and that your session is valid"
            )
            raise LoginPageError(msg, status=status, url=url)
        return
    detail = h3_message(body_start)
    suffix = f": {detail}" if detail else ""
    if status == 401:
        raise AuthError(f"the server refused the credentials for {target} (401){suffix}")
    if status == 403:
        raise AccessDenied(f"no permission to {verb} {target} (403){suffix}")
    if status == 404:
        raise NotFound(f"{target} was not found, or is hidden from this user (404){suffix}")
    raise ServerError(f"the server answered {status} for {target}{suffix}", status=status, url=url)


@dataclass(frozen=True)
class Timeouts:
    """Seconds.  ``read`` bounds each socket read, so a stalled transfer fails, not hangs."""

    connect: float = 30.0
    read: float = 120.0


def make_ssl(verify: bool, ca_bundle: str | None) -> ssl.SSLContext | bool:
    """The connector's ``ssl``: False turns certificate checks off; a context trusts
    ``ca_bundle``; True is aiohttp's own verifying context (the system's CAs), which it
    builds as it is imported: building a second one cost every run 17 ms for nothing."""
    if not verify:
        return False
    if ca_bundle:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            msg = f"cannot use CA bundle {ca_bundle}: {exc}"
            raise UsageError(msg) from exc
    return True


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute URL, the port filled in from the scheme; a URL
    that does not parse (a server's ``http://[junk``) has an origin that matches nothing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", "", -1
    default = {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    try:
        port = parts.port or default
    except ValueError:  # a port that is not a number: matches nothing
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _elsewhere(said: str, url: str, outcome: str) -> ServerError:
    """The refusal of a URL on another server (421, Misdirected Request), naming its origin."""
    scheme, host, port = origin(url)
    return ServerError(
        f"{said} another server ({scheme}://{host}:{port}), {outcome}", status=421, url=url
    )


class XnatClient:
    """An authenticated connection pool to one XNAT server.  Use as an async context manager."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        verify: bool = True,
        ca_bundle: str | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 16,
        retry: RetryPolicy | None = None,
        login_path: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: Callable[[], aiohttp.BaseConnector] | None = None,
        scheme_guessed: bool = False,
        pacer: Throttle | None = None,
    ) -> None:
        """``url`` is the server's root (``xnat/paths.server_root`` makes one from what a
        user types); ``login_path`` is where Basic credentials buy a session cookie (GET) and
        give it back (DELETE).  ``sleep`` is every wait between tries; ``transport`` makes
        the connector the
        requests go through (default: a TCP pool of ``max_connections`` with the TLS
        settings).  Both are seams for tests: a fake resolver, an in-process server.
        ``pacer`` paces the starts of all requests, one unit each (redirects, retries and
        logins included); one may serve several clients of one server in turn."""
        self.base_url = url.rstrip("/")
        self.login_path = login_path
        self._scheme_guessed = scheme_guessed
        self.sleep = sleep  # every wait between tries goes through it (tests inject one)
        self.answered = False  # the server has answered at least once
        # Set when a request used up its retries on a server that stopped answering: later
        # requests fail at once (a dead server costs one request's retries, not every
        # file's); any answer clears it.
        self.gave_up = ""
        self.credentials = credentials
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_connections = max_connections
        self._ssl = make_ssl(verify, ca_bundle)
        self._transport = transport
        self._pacer = pacer
        self._client: aiohttp.ClientSession | None = None
        self._login_lock = asyncio.Lock()
        self._login_generation = 0
        self.request_count = 0
        self.logged_in = False

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> XnatClient:
        connector = (
            self._transport()
            if self._transport is not None
            else aiohttp.TCPConnector(
                limit=self.max_connections, ssl=self._ssl, enable_cleanup_closed=True
            )
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            auto_decompress=False,
        )
        try:
            await self.login()
        except BaseException:
            await self._client.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        try:
            if self.logged_in:
                await self._raw("DELETE", self.url(self.login_path), auth=False)
        except Exception:  # logging out is a courtesy; a dead server must not mask errors
            log.debug("logout failed", exc_info=True)
        finally:
            await self._client.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise RuntimeError("XnatClient used outside 'async with'")
        return self._client

    def on_this_server(self, url: str) -> bool:
        """Whether ``url`` (a server path, or an absolute URL) is on this client's server:
        same scheme, host and port."""
        return "://" not in url or origin(url) == origin(self.base_url)

    def _may_follow(self, target: str) -> bool:
        """A redirect stays on this server, or only moves it from http to https (as a
        server that refuses plain HTTP answers): the same host either way."""
        if self.on_this_server(target):
            return True
        scheme, host, _port = origin(target)
        base_scheme, base_host, _ = origin(self.base_url)
        return (base_scheme, scheme, host) == ("http", "https", base_host)

    def url(self, path: str) -> str:
        """Absolute URL for a server path (``/data/…``) or an absolute URL on this server.
        An absolute URL on another server (a hostile or confused listing can name one) is
        refused with ServerError (status 421), never fetched: the request path is one."""
        if "://" in path:
            if not self.on_this_server(path):
                raise _elsewhere("the server named a URL on", path, "which is never fetched")
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- authentication ---------------------------------------------------------------------
    def _basic(self) -> dict[str, str] | None:
        """The ``Authorization: Basic`` header (UTF-8, as Spring Security decodes it)."""
        creds = self.credentials
        if creds.user and creds.password is not None:
            token = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return None

    async def login(self) -> None:
        """Open a JSESSION with the credentials (once; a refusal is final: accounts lock)."""
        basic = self._basic()
        if basic is None:
            self.logged_in = False
            return
        self.client.cookie_jar.clear()
        attempt = 0
        while True:
            # The same decision as every request: a busy server (503, 429) is retried; a 401
            # never is (accounts lock).  A connection that fails is retried only once the
            # server has answered this client (a login again mid-run, through a flaky link):
            # before that it is a wrong address or a server that is down, said at once.
            try:
                status, body = await self._raw("GET", self.url(self.login_path), auth=True)
            except ConnectionFailed as exc:
                refused = isinstance(exc.__cause__, aiohttp.ClientConnectorError)
                decision = classify(self.retry, attempt, refused=refused)
                if not self.answered or decision.action != "retry":
                    raise
                log.debug("retrying the login after %s (%.1fs)", exc, decision.delay)
                await self.sleep(decision.delay)
                attempt += 1
                continue
            decision = classify(self.retry, attempt, status=status)
            if decision.action != "retry":
                break
            log.debug("retrying the login in %.1fs", decision.delay)
            await self.sleep(decision.delay)
            attempt += 1
        if status == 401:
            msg = (
                f"wrong user name or password for {self.credentials.user!r} at "
                f"{self.base_url} (tried once: XNAT locks accounts after a few failures)"
            )
            raise AuthError(msg)
        check_response(status, body, self.url(self.login_path), what="the login request")
        self.logged_in = True
        self._login_generation += 1
        log.debug("logged in to %s as %s", self.base_url, self.credentials.user)

    async def _relogin(self, generation: int) -> None:
        async with self._login_lock:
            if generation == self._login_generation:  # nobody else re-logged in meanwhile
                log.info("session expired; logging in again")
                await self.login()

    async def _after_login(self) -> None:
        """Wait while a login is under way: it empties the cookie jar first, so a request
        sent meanwhile would carry no session and be answered as a guest's (a private
        project's session 'not found', a listing without what the user may see)."""
        if self._login_lock.locked():
            async with self._login_lock:
                pass

    async def _raw(self, method: str, url: str, *, auth: bool) -> tuple[int, bytes]:
        """One request with no retries (login, logout)."""
        self.request_count += 1
        try:
            resp = await self._send(method, url, headers=self._basic() if auth else None)
            async with resp:
                self.answered = True
                return resp.status, await read_capped(resp, url)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ConnectionFailed(f"cannot reach {self.base_url}: {self._why(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"request to {self.base_url} failed: {self._why(exc)}") from exc

    def _why(self, exc: BaseException) -> str:
        # The hint reads the whole message: a long host name can push OpenSSL's words past
        # the part that is shown.
        hint = connection_hint(str(exc), self.base_url, self._scheme_guessed)
        return _reason(exc) + hint

    # -- requests ------------------------------------------------------------------------
    async def _send(self, method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """One request.  A redirect is followed (GET and HEAD, at most MAX_REDIRECTS) only
        to this server: one to another host is refused (ServerError, 421), since the server
        must not send the client, or its cookies' requests, elsewhere."""
        for _ in range(MAX_REDIRECTS + 1):
            if self._pacer is not None:
                await self._pacer.take()
            resp = await self.client.request(method, url, allow_redirects=False, **kwargs)
            if resp.status not in REDIRECTS or method not in ("GET", "HEAD"):
                return resp
            target = urljoin(str(resp.url), resp.headers.get("Location", ""))
            resp.release()
            if not self._may_follow(target):
                said = f"the server redirected {url} to"
                raise _elsewhere(said, target, "which is never followed")
            url = target
            kwargs.pop("params", None)  # the new location carries its own query
        raise ServerError(f"more than {MAX_REDIRECTS} redirects from {url}", status=421, url=url)

    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        body: Callable[[], Any] | None = None,
        what: str = "",
        expect_data: bool = True,
        ok_statuses: tuple[int, ...] = (),
        idempotent: bool = True,
        verb: str = "read",
    ) -> aiohttp.ClientResponse:
        """Send a request, retrying what may be retried, and return the open response.

        The caller must release the response (``async with`` or ``.release()``).  Statuses
        in ``ok_statuses`` are returned unchecked (e.g. 416 for a stale Range).

        ``body`` makes a fresh request body for each attempt (a file read from the start
        again), so a retried upload never sends half a file.  A request that is not
        ``idempotent`` (an import) is retried only when the server cannot have acted on it:
        a refused connection, or 429/503 with Retry-After.  ``verb`` names the action in
        a 403's message ("no permission to write …").
        """
        url = self.url(path)
        relogged = False
        attempt = 0
        while True:
            if self.gave_up:
                raise ConnectionFailed(self.gave_up)
            await self._after_login()
            generation = self._login_generation
            self.request_count += 1
            try:
                resp = await self._send(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    data=body() if body is not None else data,
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if isinstance(exc.__cause__, XnatError):
                    # Our own request body failed (a file to send changed or went away):
                    # said as itself, not as a network failure, and not retried.
                    raise exc.__cause__ from None
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                decision = classify(
                    self.retry, attempt, refused=refused, answered_before=self.answered,
                    idempotent=idempotent,
                )  # fmt: skip
                if decision.action != "retry":
                    why = f"cannot reach {self.base_url}: {self._why(exc)}"
                    if self.answered and attempt + 1 >= self.retry.attempts:
                        self.gave_up = (
                            f"the server stopped answering ({why}, {attempt + 1} tries); run "
                            "the same command again to resume"
                        )
                        raise ConnectionFailed(self.gave_up) from exc
                    raise ConnectionFailed(
                        why
                        + ("" if idempotent else " (not retried: the server may have acted on it)")
                    ) from exc
                log.debug("retrying %s after %s (%.1fs)", what or url, _reason(exc), decision.delay)
                await self.sleep(decision.delay)
                attempt += 1
                relogged = False  # the session may have expired again while we waited
                continue
            except aiohttp.ClientError as exc:  # not a network failure: nothing to retry
                why = f"request to {self.base_url} failed: {self._why(exc)}"
                raise ConnectionFailed(why) from exc
            self.answered = True
            self.gave_up = ""
            log.debug("%s %s -> %d", method, resp.url, resp.status)
            if resp.status in ok_statuses:
                return resp
            decision = classify(
                self.retry, attempt, status=resp.status,
                retry_after=resp.headers.get("Retry-After"), idempotent=idempotent,
                may_relogin=self.logged_in and not relogged,
            )  # fmt: skip
            if decision.action == "relogin":
                resp.release()
                await self._relogin(generation)
                relogged = True
                continue
            if decision.action == "retry":
                resp.release()
                log.debug(
                    "retrying %s after HTTP %s (%.1fs)", what or url, resp.status, decision.delay
                )
                await self.sleep(decision.delay)
                attempt += 1
                relogged = False  # a 401 after this wait may be a session that expired in it
                continue
            if not 200 <= resp.status < 300:
                start = await _read_some(resp)
                resp.release()
                check_response(resp.status, start, url, what=what, verb=verb)
            return resp
            # (a 2xx body is checked for HTML by the caller, which reads it)

    async def get_bytes(
        self, path: str, *, params: Mapping[str, str] | None = None, what: str = ""
    ) -> bytes:
        """A whole (small) body, retried on transport errors and checked for HTML pages."""
        attempt = 0
        while True:
            resp = await self.open("GET", path, params=params, what=what)
            try:
                body = await read_capped(resp, what or path)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                decision = classify(self.retry, attempt)
                if decision.action != "retry":
                    raise ConnectionFailed(
                        f"reading {what or path} failed: {_reason(exc)}"
                    ) from exc
                await self.sleep(decision.delay)
                attempt += 1
                continue
            finally:
                resp.release()
            check_response(resp.status, body[:512], self.url(path), what=what)
            return body

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        what: str = "",
        idempotent: bool = True,
    ) -> tuple[int, bytes]:
        """A write (PUT, POST): :meth:`open` with "write" in permission errors, and the
        whole (small) answer read.  See :meth:`open` for ``body`` and ``idempotent``."""
        resp = await self.open(
            method,
            path,
            params=params,
            headers=headers,
            body=body,
            what=what,
            idempotent=idempotent,
            verb="write",
        )
        try:
            return resp.status, await read_capped(resp, what or path)
        finally:
            resp.release()

    async def get_json(
        self, path: str, *, params: Mapping[str, str] | None = None, what: str = ""
    ) -> Any:
        query = dict(params or {})
        query.setdefault("format", "json")
        body = await self.get_bytes(path, params=query, what=what)
        try:
            return loads_json(body)
        except ValueError as exc:
            msg = f"the server's answer for {what or path} is not JSON: {body[:80]!r}"
            raise ServerError(msg, url=self.url(path)) from exc


async def _read_some(resp: aiohttp.ClientResponse, limit: int = 4096) -> bytes:
    try:
        return await resp.content.read(limit)
    except Exception:
        return b""


def connection_hint(reason: str, base_url: str, scheme_guessed: bool) -> str:
    """What to try after a connection failure (pure): the http/https mix-up, a certificate
    for another name, an expired one, one that is not trusted, a scheme that was guessed."""
    if "WRONG_VERSION_NUMBER" in reason or "wrong version number" in reason:
        return "; the server speaks plain HTTP on that port: use http:// instead of https://"
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        if "Hostname mismatch" in reason or "IP address mismatch" in reason:  # OpenSSL's
            return (
                "; its TLS certificate is for another name: use the server's name as its "
                "certificate gives it in the URL (or, knowing the risk, --insecure)"
            )
        if "certificate has expired" in reason:
            return (
                "; its TLS certificate has expired: tell the server's administrators "
                "(or, knowing the risk, --insecure)"
            )
        return (
            "; its TLS certificate is not trusted here: give its CA with --ca-bundle FILE "
            "(or, knowing the risk, --insecure)"
        )
    if scheme_guessed and base_url.startswith("https://"):
        return "; no scheme was given, so https:// was tried: write http:// if the server uses it"
    return ""


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # aiohttp says a cut request as "[Errno 32] Broken pipe" or "Can not write request body
    # for URL" (the whole URL and its query): said in words, once.
    if "Can not write request body" in text or getattr(exc, "errno", None) == errno.EPIPE:
        return "the connection was closed while the request was being sent"
    return text.splitlines()[0][:200]

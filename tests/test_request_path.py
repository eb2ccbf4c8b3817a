"""The one request path: the pure retry decision, and a session that uses it with an
injected sleep, so faults run in-process and deterministically (no real waits)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Server, start_server
from xnat_downloader.errors import AuthError, ConnectionFailed, ServerError, UsageError
from xnat_downloader.http.client import XnatClient, h3_message
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.http.retry import RetryPolicy, classify
from xnat_downloader.throttle import Throttle
from xnat_downloader.xnat.paths import LOGIN

POLICY = RetryPolicy(attempts=4, base=0.5, cap=30.0)


def test_classify_is_the_same_decision_for_every_request() -> None:
    rng = random.Random(1)
    # Refused before the server ever answered: a wrong address, said at once.
    assert classify(POLICY, 0, refused=True, answered_before=False).action == "stop"
    # Refused after it answered (a restart mid-run): retried with backoff.
    assert classify(POLICY, 0, refused=True, answered_before=True, rng=rng).action == "retry"
    # A reset of a request the server may have acted on is not sent twice.
    assert classify(POLICY, 0, idempotent=False).action == "stop"
    assert classify(POLICY, 0, refused=True, idempotent=False, rng=rng).action == "retry"
    assert classify(POLICY, 0, status=503, rng=rng).action == "retry"
    assert classify(POLICY, 0, status=503, retry_after="2").delay == 2.0
    assert classify(POLICY, 0, status=503, idempotent=False).action == "stop"
    assert classify(POLICY, 0, status=503, retry_after="1", idempotent=False).action == "retry"
    assert classify(POLICY, 0, status=401, may_relogin=True).action == "relogin"
    assert classify(POLICY, 0, status=401).action == "stop"
    assert classify(POLICY, 0, status=404).action == "stop"
    assert classify(POLICY, 3, status=503).action == "stop"  # attempts used up


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_error_pages_message_is_read_as_text() -> None:
    """Restlet's pages escape the message: a user read 'You don&#x27;t have permission'."""
    page = b"<html><body><h3>You don&#x27;t have\n <b>permission</b> &amp; so on</h3></body></html>"
    assert h3_message(page) == "You don't have permission & so on"
    assert h3_message(b"<!DOCTYPE html><p>nothing said</p>") == ""
    assert h3_message(b"plain text\nmore") == "plain text"


@pytest.mark.parametrize("credentials", [Credentials("u", "p", "test"), Credentials(None)])
def test_a_refused_port_fails_at_once_with_or_without_credentials(
    credentials: Credentials,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> XnatClient:
        xs = XnatClient(
            f"http://127.0.0.1:{closed_port()}", credentials, sleep=sleep, login_path=LOGIN
        )
        with pytest.raises(ConnectionFailed, match="cannot reach"):
            async with xs:
                await xs.get_json("/data/projects")
        return xs

    xs = asyncio.run(go())
    assert waits == []
    assert xs.request_count == 1


def test_a_busy_server_is_waited_for_through_the_injected_sleep(
    serve: Callable[..., Server],
) -> None:
    started = serve("--error-rate", "1.0")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> None:
        xs = XnatClient(started.url, Credentials(None), sleep=sleep, retry=POLICY, login_path=LOGIN)
        async with xs:
            with pytest.raises(ServerError, match=r"\b503\b"):
                await xs.get_json("/data/projects")

    asyncio.run(go())
    assert waits == [1.0, 1.0, 1.0]  # Retry-After: 1, three times, then it gives up


def test_a_server_that_stops_answering_costs_one_requests_retries_not_every_requests(
    archive: Path,
) -> None:
    """The server answers, then dies: the next request retries (through the injected sleep)
    until its tries are used up; every request after it fails at once, without a try, with
    one message saying to run again.  Started again, a new session works."""
    server = start_server(archive)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> XnatClient:
        xs = XnatClient(server.url, Credentials("admin", "admin", "test"), sleep=sleep,
                        retry=POLICY, login_path=LOGIN)  # fmt: skip
        async with xs:
            assert await xs.get_json("/data/projects")
            server.stop()
            with pytest.raises(ConnectionFailed, match="the server stopped answering") as first:
                await xs.get_json("/data/projects")
            assert len(waits) == POLICY.attempts - 1
            sent = xs.request_count
            for _ in range(5):
                with pytest.raises(ConnectionFailed) as later:
                    await xs.get_json("/data/projects/DEMO01/subjects")
                assert str(later.value) == str(first.value)
            assert xs.request_count == sent  # nothing more was tried
            assert len(waits) == POLICY.attempts - 1
            assert str(first.value).endswith("run the same command again to resume")
        return xs

    asyncio.run(go())


class FakeClock:
    """A clock that only the injected sleep moves (to the end of the longest wait under
    way, as real time would), and records every wait."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        until = self.now + seconds
        await asyncio.sleep(0)  # others waiting at the same moment ask now
        self.now = max(self.now, until)


def test_a_throttle_of_one_spaces_request_starts_in_the_order_asked() -> None:
    clock = FakeClock()
    pacer = Throttle(4, burst=1, clock=clock, sleep=clock.sleep)  # 0.25 s apart
    starts: list[float] = []

    async def request() -> None:
        await pacer.take()
        starts.append(clock.now)

    async def go() -> None:
        await asyncio.gather(*(request() for _ in range(3)))  # three ask together
        clock.now += 5.0  # a quiet while: the next one goes at once
        await request()

    asyncio.run(go())
    assert starts == pytest.approx([100.0, 100.25, 100.5, 105.5])
    # Kept across event loops (a Connection's, used by one API call after another).
    asyncio.run(go())
    assert starts[4:] == pytest.approx([105.75, 106.0, 106.25, 111.25])
    with pytest.raises(UsageError, match="positive"):
        Throttle(0)


def test_every_request_of_a_client_goes_through_its_pacer(shared_server: Server) -> None:
    """Login, listings and a file: each start waits its turn on the (fake) clock, which the
    server's view confirms: it answered every one of them."""
    server = shared_server
    clock = FakeClock()
    pacer = Throttle(2, burst=1, clock=clock, sleep=clock.sleep)
    started: list[float] = []
    take = pacer.take

    async def recorded(amount: float = 1) -> None:
        await take(amount)
        started.append(clock.now)

    pacer.take = recorded  # type: ignore[method-assign]

    async def go() -> int:
        async with XnatClient(
            server.url, Credentials("admin", "admin"), login_path=LOGIN, pacer=pacer
        ) as xs:
            for _ in range(3):
                await xs.get_json("/data/projects", what="projects")
            return xs.request_count

    count = asyncio.run(go())
    assert count >= 4  # the login and three listings
    assert len(started) >= count
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(started))


class ExpiringSessions:
    """A stand-in XNAT in the test's own event loop: ``GET /data/JSESSION`` with Basic
    credentials opens session ``s1``, ``s2``, …; ``GET /data/projects`` answers from
    ``script`` (a status per call; ``None`` means "as the session decides": 200 for the
    live session, 401 for a dead one, and, as XNAT answers a guest asking for a private
    project's data, 404 for a request with no session).  ``expire()`` kills the live
    session; ``hold_logins`` keeps the next login waiting until ``release`` is set;
    ``drop_logins`` closes the connection of that many logins without an answer."""

    def __init__(self, script: list[int | None]) -> None:
        self.script = script
        self.live = ""
        self.logins = 0
        self.cookies_seen: list[str] = []
        self.login_started = asyncio.Event()
        self.hold_logins = False
        self.release = asyncio.Event()
        self.drop_logins = 0

    def expire(self) -> None:
        self.live = ""

    async def login(self, request: web.Request) -> web.Response:
        assert request.headers.get("Authorization", "").startswith("Basic ")
        self.logins += 1
        self.login_started.set()
        if self.drop_logins:
            self.drop_logins -= 1
            assert request.transport is not None
            request.transport.close()  # no answer at all: the client sees the connection go
            return web.Response()
        if self.hold_logins:
            await self.release.wait()
        self.live = f"s{self.logins}"
        response = web.Response(text=self.live)
        response.set_cookie("JSESSIONID", self.live)
        return response

    async def projects(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get("JSESSIONID", "")
        self.cookies_seen.append(cookie)
        status = self.script.pop(0) if self.script else None
        if status is None:
            status = 404 if not cookie else 200 if cookie == self.live else 401
        if status == 200:
            return web.json_response({"ResultSet": {"Result": [{"ID": "P1"}]}})
        headers = {"Retry-After": "1"} if status == 503 else {}
        return web.Response(status=status, text=f"<h3>status {status}</h3>", headers=headers)

    @contextlib.asynccontextmanager
    async def client(self, sleep: Callable[[float], Awaitable[None]]) -> AsyncIterator[XnatClient]:
        """This server running, and a client logged in to it that waits with ``sleep``."""
        async with (
            self.running() as url,
            XnatClient(
                url, Credentials("u", "p", "test"), sleep=sleep, retry=POLICY, login_path=LOGIN
            ) as xs,
        ):
            yield xs

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get(LOGIN, self.login)
        app.router.add_get("/data/projects", self.projects)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


def test_a_session_that_expires_again_while_a_retry_waits_is_logged_in_to_again() -> None:
    """401 (expired), a fresh login, 503 with Retry-After, then 401 again: the session died
    during the wait, so the client logs in again rather than calling the credentials
    refused.  A 401 straight after a fresh login stays final (no login loop)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def fetch(server: ExpiringSessions) -> Any:
        async with server.client(sleep) as xs:
            return await xs.get_json("/data/projects")

    recovers = ExpiringSessions([401, 503, 401, None])
    assert asyncio.run(fetch(recovers)) == {"ResultSet": {"Result": [{"ID": "P1"}]}}
    assert recovers.logins == 3  # the first login and one after each 401
    assert recovers.cookies_seen == ["s1", "s2", "s2", "s3"]
    assert waits == [1.0]

    refused = ExpiringSessions([401, 401])
    with pytest.raises(AuthError, match="401"):
        asyncio.run(fetch(refused))
    assert refused.logins == 2


def test_no_request_goes_out_without_a_session_while_a_login_is_under_way() -> None:
    """One request finds the session expired and logs in again; a request started while
    that login is under way waits for it and goes with the new session, instead of going
    with none and being answered as a guest (404 for a private project's data)."""
    server = ExpiringSessions([])

    async def go() -> list[Any]:
        async with server.client(asyncio.sleep) as xs:
            server.expire()
            server.hold_logins = True
            server.login_started.clear()
            first = asyncio.create_task(xs.get_json("/data/projects"))
            await server.login_started.wait()  # the relogin has begun, and is held
            second = asyncio.create_task(xs.get_json("/data/projects"))
            await asyncio.sleep(0.2)  # room for the second request to go out, if it may
            server.release.set()
            return list(await asyncio.gather(first, second))

    results = asyncio.run(go())
    assert results == [{"ResultSet": {"Result": [{"ID": "P1"}]}}] * 2
    assert server.logins == 2
    assert "" not in server.cookies_seen  # no request went without a session
    assert server.cookies_seen == ["s1", "s2", "s2"]


def test_a_login_again_through_a_dropped_connection_is_retried_but_a_first_one_is_not() -> None:
    """Mid-run, the session expires and the login that follows loses its connection three times:
    the server has answered this client before, so the login is tried again (after a wait
    each time) and the request completes.  A first login whose connection drops is said at
    once: before any answer it is a wrong address or a server that is down."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def mid_run() -> Any:
        async with server.client(sleep) as xs:
            server.expire()
            server.drop_logins = 3
            return await xs.get_json("/data/projects")

    server = ExpiringSessions([])
    assert asyncio.run(mid_run()) == {"ResultSet": {"Result": [{"ID": "P1"}]}}
    assert server.logins == 5  # the first, three dropped, the one that opened s5
    assert server.cookies_seen == ["s1", "s5"]
    # aiohttp itself sends once more when a kept-alive connection closes under a request;
    # every other drop is our retry, each after a wait.
    assert 1 <= len(waits) <= 3

    async def first() -> None:
        async with server.client(sleep):
            pass

    server = ExpiringSessions([])
    server.drop_logins = 3
    waits.clear()
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        asyncio.run(first())
    assert server.logins <= 2  # (aiohttp's own second send, as above)
    assert waits == []

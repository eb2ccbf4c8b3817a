"""Fault tests that need no minixnat and no real waits: an aiohttp app in this process
plays the server, and the client's sleep is injected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from xnat_downloader.errors import AuthError, ServerError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.http.retry import RetryPolicy


async def serve(
    app: web.Application, credentials: Credentials, work: Any
) -> tuple[Any, list[float]]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    try:
        client = XnatClient(
            str(server.make_url("")), credentials, sleep=sleep, retry=RetryPolicy(attempts=4)
        )
        async with client:
            return await work(client), waits
    finally:
        await server.close()


def test_retry_after_is_honoured_then_the_answer_used() -> None:
    calls = 0

    async def projects(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.Response(status=503, headers={"Retry-After": "3"})
        return web.json_response({"ResultSet": {"Result": [{"ID": "P1"}]}})

    app = web.Application()
    app.router.add_get("/data/projects", projects)
    doc, waits = asyncio.run(
        serve(app, Credentials(None), lambda xs: xs.get_json("/data/projects"))
    )
    assert doc["ResultSet"]["Result"] == [{"ID": "P1"}]
    assert waits == [3.0, 3.0]
    assert calls == 3


def test_a_server_that_stays_busy_is_given_up_on_after_the_policy() -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_get("/data/projects", busy)

    async def work(xs: XnatClient) -> None:
        with pytest.raises(ServerError):
            await xs.get_json("/data/projects")

    _, waits = asyncio.run(serve(app, Credentials(None), work))
    assert waits == [1.0, 1.0, 1.0]  # four attempts, three waits


def test_a_wrong_password_is_tried_once_and_never_retried() -> None:
    logins = 0

    async def jsession(request: web.Request) -> web.Response:
        nonlocal logins
        logins += 1
        return web.Response(status=401)

    async def logout(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/data/JSESSION", jsession)
    app.router.add_delete("/data/JSESSION", logout)

    async def go() -> None:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            client = XnatClient(str(server.make_url("")), Credentials("u", "wrong", "test"))
            with pytest.raises(AuthError, match="tried once"):
                async with client:
                    pass
        finally:
            await server.close()

    asyncio.run(go())
    assert logins == 1

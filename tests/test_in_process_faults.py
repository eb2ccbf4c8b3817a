"""Fault tests that need no minixnat and no real waits: an aiohttp app in this process
plays the server, and the client's sleep is injected."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
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


def test_the_transport_is_injectable_a_fake_host_reaches_an_in_process_server() -> None:
    """With a connector whose resolver maps a made-up host name to the test server, the
    client talks to ``http://xnat.invalid`` without DNS or a real network."""
    from aiohttp.abc import AbstractResolver

    async def projects(request: web.Request) -> web.Response:
        return web.json_response({"ResultSet": {"Result": [{"ID": request.host}]}})

    app = web.Application()
    app.router.add_get("/data/projects", projects)

    async def go() -> Any:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()

        class ToTestServer(AbstractResolver):
            async def resolve(self, host: str, port: int = 0, family: int = 0) -> Any:
                assert host == "xnat.invalid"
                return [{"hostname": host, "host": "127.0.0.1", "port": server.port,
                         "family": family, "proto": 0, "flags": 0}]  # fmt: skip

            async def close(self) -> None:
                return None

        try:
            client = XnatClient(
                "http://xnat.invalid",
                Credentials(None),
                transport=lambda: aiohttp.TCPConnector(resolver=ToTestServer()),
            )
            async with client:
                return await client.get_json("/data/projects")
        finally:
            await server.close()

    doc = asyncio.run(go())
    assert doc["ResultSet"]["Result"][0]["ID"].startswith("xnat.invalid")

"""Fault tests that need no minixnat and no real waits: an aiohttp app in this process
plays the server, and the client's sleep is injected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from xnat_downloader.errors import AuthError, ServerError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.http.retry import RetryPolicy
from xnat_downloader.transfer import localfs
from xnat_downloader.xnat.paths import LOGIN


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
            str(server.make_url("")),
            credentials,
            sleep=sleep,
            retry=RetryPolicy(attempts=4),
            login_path=LOGIN,
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
            client = XnatClient(
                str(server.make_url("")), Credentials("u", "wrong", "test"), login_path=LOGIN
            )
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
                login_path=LOGIN,
            )
            async with client:
                return await client.get_json("/data/projects")
        finally:
            await server.close()

    doc = asyncio.run(go())
    assert doc["ResultSet"]["Result"][0]["ID"].startswith("xnat.invalid")


def test_a_body_cut_short_is_resumed_with_range_in_process(tmp_path: Any) -> None:
    """The download engine against an in-process server that drops the first response
    half-way: the file is resumed from where it stopped (a Range request), verified, and
    the wait before the second try goes through the injected sleep."""
    import hashlib

    from xnat_downloader.transfer.engine import EngineOptions, run_jobs
    from xnat_downloader.transfer.events import Event
    from xnat_downloader.transfer.jobs import Job, Status
    from xnat_downloader.transfer.state import State

    body = bytes(range(256)) * 4096  # 1 MiB
    uri = "/data/experiments/E1/scans/1/resources/DICOM/files/a.dcm"
    ranges: list[str | None] = []

    async def file(request: web.Request) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        ranges.append(wanted)
        if wanted is None:
            response = web.StreamResponse(headers={"Content-Length": str(len(body))})
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops half-way
            return response
        start = int(wanted.removeprefix("bytes=").split("-")[0])
        headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        return web.Response(status=206, body=body[start:], headers=headers)

    app = web.Application()
    app.router.add_get(uri, file)
    events: list[Event] = []

    async def work(xs: XnatClient) -> Any:
        state = State(tmp_path)
        try:
            job = Job(uri, "a.dcm", len(body), hashlib.md5(body).hexdigest())
            return await run_jobs(xs, [job], tmp_path, state, events.append, EngineOptions())
        finally:
            state.close()

    outcomes, waits = asyncio.run(serve(app, Credentials(None), work))
    assert [o.status for o in outcomes] == [Status.VERIFIED]
    assert (tmp_path / "a.dcm").read_bytes() == body
    assert ranges[0] is None
    assert ranges[1] is not None
    assert ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").split("-")[0]) > 0  # resumed, not restarted
    assert len(waits) == 1


def test_workflow_states_fall_back_to_one_request_per_session() -> None:
    """A server whose project-wide workflow query fails (404, as on some XNAT versions) is
    asked per session; a session with no record (404) is absent; the answers are read from
    XNAT's item documents."""
    import threading

    from xnat_downloader.api.connection import Connection
    from xnat_downloader.api.download import session_workflows
    from xnat_downloader.xnat.model import Session

    asked: list[str] = []

    async def workflows(request: web.Request) -> web.Response:
        asked.append(request.query_string)
        if request.match_info["names"] != "%" or "experiment" not in request.query:
            raise web.HTTPNotFound(text="Unable to find workflow entry")
        if request.query["experiment"] == "E2":
            raise web.HTTPNotFound(text="Unable to find workflow entry")
        fields = {
            "ID": "E1",
            "pipeline_name": "xnat_tools/AutoRun.xml",
            "status": "Failed",
            "step_description": "dcm2nii",
            "launch_time": "2026-01-02 03:04:05.000",
        }
        return web.json_response({"items": [{"data_fields": fields}]})

    app = web.Application()
    app.router.add_get("/data/services/workflows/{names}", workflows)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        sessions = [
            Session(eid, eid, "P", "S", "S", None, "xnat:mrSessionData") for eid in ("E1", "E2")
        ]
        states = session_workflows(
            Connection(f"http://127.0.0.1:{port}", Credentials(None)), sessions
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
    assert set(states) == {"E1"}
    assert states["E1"].pipeline == "AutoRun"
    assert states["E1"].status == "Failed"
    assert not states["E1"].complete
    assert sum("project=P" in q for q in asked) == 1
    assert sum("experiment=" in q for q in asked) == 2


def test_an_answer_is_read_only_up_to_the_limit() -> None:
    """A listing or document is read into memory only up to a limit: a longer answer, its
    length said or streamed without one, is a ServerError, not the machine's memory."""
    from xnat_downloader.errors import ServerError
    from xnat_downloader.http.client import read_capped

    async def said(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(50):
            await response.write(b"y" * 1000)
        return response

    app = web.Application()
    app.router.add_get("/said", said)
    app.router.add_get("/streamed", streamed)

    async def go() -> list[str]:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        errors = []
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("/said", "/streamed"):
                    async with session.get(server.make_url(path)) as resp:
                        assert len(await read_capped(resp, path, limit=100_000)) in (5000, 50_000)
                    async with session.get(server.make_url(path)) as resp:
                        with pytest.raises(ServerError) as refused:
                            await read_capped(resp, path, limit=4000)
                        errors.append(str(refused.value))
        finally:
            await server.close()
        return errors

    errors = asyncio.run(go())
    assert len(errors) == 2
    assert all("is larger than" in e and "not read" in e for e in errors)


def test_a_server_that_stops_answering_ends_the_run_after_one_requests_tries(
    tmp_path: Any,
) -> None:
    """After the first file the server hangs up on every request.  The second file's
    request spends its tries (the injected sleep counts the waits); every file after it
    fails at once, without reaching the server, saying to run again; nothing is retried
    twice over (the engine used to loop around the request path's own tries)."""
    import hashlib

    from xnat_downloader.transfer.engine import EngineOptions, run_jobs
    from xnat_downloader.transfer.jobs import Job, Status
    from xnat_downloader.transfer.modes import Mode
    from xnat_downloader.transfer.state import State

    body = b"x" * 1000
    served: list[str] = []

    async def file(request: web.Request) -> web.StreamResponse:
        served.append(request.path)
        if len(served) > 1:
            assert request.transport is not None
            request.transport.close()  # gone: no answer
        return web.Response(body=body)

    app = web.Application()
    folder = "/data/experiments/E1/scans/1/resources/R/files"
    app.router.add_get(folder + "/{name}", file)
    md5 = hashlib.md5(body).hexdigest()
    jobs = [Job(f"{folder}/f{i}", f"f{i}", len(body), md5) for i in range(6)]

    async def work(xs: XnatClient) -> Any:
        state = State(tmp_path)
        try:
            options = EngineOptions(jobs=1, mode=Mode.FILES)
            return await run_jobs(xs, jobs, tmp_path, state, lambda event: None, options)
        finally:
            state.close()

    outcomes, waits = asyncio.run(serve(app, Credentials(None), work))
    assert [o.job.local for o in outcomes if o.status == Status.VERIFIED] == ["f0"]
    failed = [o for o in outcomes if o.status == Status.FAILED]
    assert len(failed) == 5
    assert all("the server stopped answering" in o.error for o in failed), failed
    # The first file, then only the second's tries (aiohttp itself sends a request again
    # once when a kept-alive connection turns out closed): no other file reached it.
    assert served[0].endswith("/f0")
    assert {path.rsplit("/", 1)[1] for path in served[1:]} == {"f1"}
    assert len(waits) == 3


def test_a_whole_write_interrupted_before_its_rename_keeps_the_old_file_and_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports and manifests are written aside and renamed; Ctrl-C or SIGTERM between the
    two once left the copy aside behind (only a failed write removed it)."""
    target = tmp_path / "report.jsonl"
    target.write_text("before\n")

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("xnat_downloader.transfer.localfs.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        localfs.write_whole(target, "after\n")
    assert target.read_text() == "before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.jsonl"]


def test_the_token_file_interrupted_before_its_rename_leaves_no_copy_of_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`slurm` writes the tasks' alias token aside, then renames it; interrupted between
    the two, the copy aside (a secret) once stayed on disk."""
    from xnat_downloader.api import cluster

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("xnat_downloader.api.cluster.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cluster._write_token(tmp_path, "https://xnat.example.org", "alias", "secret")
    assert list(tmp_path.iterdir()) == []


def test_subjects_from_a_csv_when_the_server_stops_answering_part_way() -> None:
    """The first subject is created; then the server hangs up on every request.  The row
    whose request spent its tries fails with the reason, the rows after it fail unsent
    (without reaching the server, saying to run again), and the run ends with a result per
    row instead of an error that says nothing of which subjects were made."""
    from xnat_downloader.api.subjects import put_subjects
    from xnat_downloader.plan.upload import parse_subjects

    served: list[str] = []

    async def subject(request: web.Request) -> web.StreamResponse:
        served.append(request.match_info["label"])
        if len(served) > 1:
            assert request.transport is not None
            request.transport.close()  # gone: no answer
        return web.Response(status=201)

    app = web.Application()
    app.router.add_put("/data/projects/P/subjects/{label}", subject)
    rows, errors = parse_subjects("label,gender\nS1,male\nS2,female\nS3,female\nS4,male\n")
    assert errors == []
    results, waits = asyncio.run(
        serve(app, Credentials(None), lambda xs: put_subjects(xs, "P", rows))
    )
    assert [(r.label, r.status) for r in results] == [
        ("S1", "created"), ("S2", "failed"), ("S3", "failed"), ("S4", "failed"),
    ]  # fmt: skip
    assert "stopped answering" in results[1].message
    assert all(r.message.startswith("not sent:") for r in results[2:])
    assert set(served) == {"S1", "S2"}  # S3 and S4 never reached the server
    assert len(waits) == 3  # S2's four tries, once


def test_archives_hashed_during_the_login_stop_when_the_login_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first archives are hashed while the client logs in.  When the login is refused,
    that hashing stops at its next check and the refusal is the error; without being
    stopped it would run its full minute after the upload had given up."""
    import threading
    import time
    import zipfile

    from xnat_downloader import aio
    from xnat_downloader.api import upload as upload_api
    from xnat_downloader.api.connection import Connection

    hashing, stopped = threading.Event(), threading.Event()

    def slow_members(path: Path) -> list[tuple[str, int, str]]:
        hashing.set()
        for _ in range(6000):
            try:
                aio.check_abandoned()
            except aio.Abandoned:
                stopped.set()
                raise
            time.sleep(0.01)
        return []

    monkeypatch.setattr(upload_api, "archive_members", slow_members)
    session = tmp_path / "S1.zip"
    with zipfile.ZipFile(session, "w") as zf:
        zf.writestr("S1/scans/1/resources/DICOM/files/1.dcm", b"not read")

    async def login(request: web.Request) -> web.Response:
        while not hashing.is_set():  # refused once the hashing is under way
            await asyncio.sleep(0.01)
        return web.Response(status=401)

    async def run() -> None:
        app = web.Application()
        app.router.add_get(LOGIN, login)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            conn = Connection(str(server.make_url("")), Credentials("u", "wrong"))
            with pytest.raises(AuthError, match="wrong user name or password"):
                await upload_api.upload_async(conn, [session], "P")
            # Stopped by the time the upload has raised, not when this loop ends.
            assert stopped.wait(5)
        finally:
            await server.close()

    asyncio.run(run())

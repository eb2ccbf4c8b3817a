"""minixnat's server-side promises beyond the API's shapes: login sessions and tokens, an
injectable clock, names refused at the door, quiet disconnects, the access log, concurrent
writers, and the consistency check."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import io
import json
import os
import socket
import stat
import subprocess
import threading
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from minixnat.http.messages import BadPath, parse_cookies, split_path
from minixnat.server.app import App
from minixnat.server.faults import Faults
from minixnat.store import Store, StoreError
from minixnat.store.db import LOOK_LASTS_S
from minixnat.store.names import check_name, control_characters
from minixnat.testing import start
from tests.conftest import BIN, Server, start_server
from tests.test_minixnat_api import _admin
from tests.test_minixnat_writes import ADMIN, call, dicom_md5s, server_md5s, session_zip


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "minixnat", "check", "--root", str(root)], capture_output=True, text=True
    )


# -- sessions, tokens, guests ---------------------------------------------------------------
def test_alias_token_session_ends_with_its_token(serve: Any) -> None:
    server: Server = serve()
    token = call(server, "GET", "/data/services/tokens/issue").json()
    browser = requests.Session()
    sid = browser.get(
        server.url + "/data/JSESSION", auth=(token["alias"], token["secret"]), timeout=30
    ).text
    assert browser.cookies["JSESSIONID"] == sid
    assert browser.get(server.url + "/data/projects", timeout=30).status_code == 200
    assert call(server, "GET", f"/data/services/tokens/invalidate/{token['alias']}").ok
    # The cookie alone, no credentials: the session died with its token.
    assert browser.get(server.url + "/data/projects", timeout=30).status_code == 401
    # A password session of the same user lives on.
    other = requests.Session()
    other.get(server.url + "/data/JSESSION", auth=ADMIN, timeout=30)
    assert other.get(server.url + "/data/projects", timeout=30).status_code == 200


def test_guest_session_reads_public_projects(serve: Any, archive: Path) -> None:
    _admin(archive, "project", "access", "DEMO02", "public")
    server: Server = serve()
    guest = requests.Session()
    sid = guest.get(server.url + "/data/JSESSION", timeout=30)
    assert sid.status_code == 200
    assert guest.cookies["JSESSIONID"] == sid.text
    listed = guest.get(server.url + "/data/projects?format=json", timeout=30)
    assert listed.status_code == 200
    assert [r["ID"] for r in listed.json()["ResultSet"]["Result"]] == ["DEMO02"]
    assert guest.get(server.url + "/data/projects/DEMO01", timeout=30).status_code == 404
    assert guest.put(server.url + "/data/projects/DEMO02/subjects/X", timeout=30).status_code == 401


class HandClock:
    """A clock the test moves: session expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000 + self.now


def asgi_get(app: App, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, in-process."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not getattr(receive, "done", False):
            receive.done = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    for k, v in start["headers"]:
        if k == b"set-cookie":
            head.setdefault("cookies", "")
            head["cookies"] += v.decode() + "\n"
    return start["status"], head, b"".join(m.get("body", b"") for m in sent[1:])


def test_session_expiry_follows_the_injected_clock(archive: Path) -> None:
    clock = HandClock()
    store = Store(archive)
    try:
        app = App(store, Faults(session_ttl=60), clock=clock)
        basic = "Basic " + base64.b64encode(b"admin:admin").decode()
        status, head, body = asgi_get(app, "/data/JSESSION", {"Authorization": basic})
        assert status == 200
        cookie = {"Cookie": f"JSESSIONID={body.decode()}"}
        clock.now += 59  # idle, but not long enough
        assert asgi_get(app, "/data/projects", cookie)[0] == 200
        clock.now += 59  # each use restarts the idle time
        assert asgi_get(app, "/data/projects", cookie)[0] == 200
        clock.now += 61
        status, head, _ = asgi_get(app, "/data/projects", cookie)
        assert status == 401
        assert head["www-authenticate"].startswith("Basic")
    finally:
        store.close()


def test_uptime_follows_the_injected_clock(archive: Path) -> None:
    clock = HandClock()
    store = Store(archive)
    try:
        app = App(store, Faults(), clock=clock)
        basic = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
        clock.now += 2 * 86400 + 3 * 3600 + 4 * 60 + 5
        status, _head, body = asgi_get(app, "/xapi/siteConfig/uptime", basic)
        assert status == 200
        assert json.loads(body) == {"days": 2, "hours": 3, "minutes": 4, "seconds": 5}
    finally:
        store.close()


def test_hidden_projects_do_not_leak_through_put(serve: Any, archive: Path) -> None:
    _admin(archive, "user", "add", "eve", "--password", "pw")
    _admin(archive, "project", "access", "DEMO02", "protected")
    server: Server = serve()
    eve = ("eve", "pw")
    hidden = call(server, "PUT", "/data/projects/DEMO01", auth=eve)  # private, not hers
    visible = call(server, "PUT", "/data/projects/DEMO02", auth=eve)  # protected, not hers
    assert hidden.status_code == visible.status_code == 403
    assert "conflicts" not in hidden.text
    assert hidden.text.replace("DEMO01", "X") == visible.text.replace("DEMO02", "X")
    assert call(server, "PUT", "/data/projects/EVES", auth=eve).status_code == 200


# -- names refused at the door --------------------------------------------------------------
@given(st.text(max_size=40))
def test_control_characters_are_found_exactly(text: str) -> None:
    expected = [c for c in text if unicodedata.category(c) == "Cc"]
    assert len(control_characters(text)) == len(expected)
    if expected:
        with pytest.raises(StoreError, match="control characters"):
            check_name("label", text)
        with pytest.raises(BadPath):
            split_path("/data/projects/" + "".join(f"%{b:02X}" for b in text.encode()))
    else:
        check_name("label", text)


def test_names_with_control_characters_get_400_and_change_nothing(
    serve: Any, archive: Path
) -> None:
    server: Server = serve()
    assert call(server, "PUT", "/data/projects/NEW").ok
    res = "/data/projects/NEW/resources/R"
    assert call(server, "PUT", f"{res}/files/a%0D%0Ab.txt", data=b"x").status_code == 400
    assert call(server, "PUT", "/data/projects/NEW/subjects/S%0A1").status_code == 400
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("bad\nname.txt", b"evil")
    extract = call(server, "PUT", f"{res}/files/up.zip?extract=true", data=buf.getvalue())
    assert extract.status_code == 400
    # A refused extract leaves no empty resource behind.
    assert call(server, "GET", f"{res}?format=json").status_code == 404
    body = session_zip(archive, "DEMO01_S001_MR1")
    bad_label = call(
        server,
        "POST",
        "/data/services/import?PROJECT_ID=NEW&dest=/archive&EXPT_LABEL=a%01b",
        data=body,
        headers={"Content-Type": "application/zip"},
    )
    assert bad_label.status_code == 400
    assert "control characters" in bad_label.text
    subjects = call(server, "GET", "/data/projects/NEW/subjects?format=json").json()
    assert subjects["ResultSet"]["Result"] == []
    deep = call(server, "POST", "/xapi/archive/download", data=b"[" * 100_000)
    assert deep.status_code == 400
    server.stop()
    assert check(archive).returncode == 0


def test_cookie_pairs_are_read_one_by_one() -> None:
    assert parse_cookies('JSESSIONID=AB12; theme="dark blue"') == {
        "JSESSIONID": "AB12",
        "theme": "dark blue",
    }
    # A bad pair costs only itself; of one name twice, the later wins.
    assert parse_cookies("junk; =x; $Version=1; JSESSIONID=A, JSESSIONID=B") == {"JSESSIONID": "B"}


# -- disconnects, the access log -------------------------------------------------------------
def test_disconnect_mid_body_is_quiet(archive: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = start_server(archive, "--conn-mbps", "0.2", "--access-log", str(log), stderr=True)
    url, proc = server.url, server.process
    assert proc.stderr is not None
    try:
        host, port = url.removeprefix("http://").split(":")
        auth = base64.b64encode(b"admin:admin").decode()
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                path = "/data/projects/DEMO01/experiments/DEMO01_S001_MR1/scans/ALL/files"
                sock.sendall(
                    f"GET {path}?format=zip HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Basic {auth}\r\n\r\n".encode()
                )
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        secret = "S3cretValueThatMustNotBeLogged"
        call(server, "GET", f"/data/services/tokens/validate/alias/{secret}")
        call(server, "GET", f"/data/projects?password={secret}")
        assert call(server, "GET", "/data/projects").ok  # still serving
        # A header that claims another client does not change who the log says it was.
        spoofed = {"X-Forwarded-For": "10.9.8.7"}
        assert call(server, "GET", "/data/projects/DEMO01", headers=spoofed).ok
    finally:
        server.stop()
    errors = proc.stderr.read()
    assert "Traceback" not in errors, errors
    lines = log.read_text().splitlines()
    assert secret not in log.read_text()
    zips = [ln for ln in lines if "format=zip" in ln or "/files?" in ln]
    assert len(zips) == 3
    assert any("/data/services/tokens/validate/alias/*** 200" in ln for ln in lines)
    plain = [ln.split() for ln in lines if " GET /data/projects 200 " in ln]
    assert len(plain) == 1
    assert plain[0][1] == "127.0.0.1"
    assert int(plain[0][5]) > 0  # bytes
    assert float(plain[0][6]) >= 0  # milliseconds
    claimed = [ln.split() for ln in lines if " GET /data/projects/DEMO01 200 " in ln]
    assert [row[1] for row in claimed] == ["127.0.0.1"]


def test_bodies_cut_on_purpose_are_cut_without_a_traceback(archive: Path) -> None:
    """``--drop-rate`` is a switch an operator turns on: each cut shows on the wire (a body
    shorter than its Content-Length), not as an application error with its traceback on
    the server's stderr."""
    server = start_server(archive, "--drop-rate", "1", "--chaos-seed", "4", stderr=True)
    proc = server.process
    assert proc.stderr is not None
    files = "/data/projects/DEMO01/experiments/DEMO01_S001_MR1/scans/ALL/files"
    try:
        listing = call(server, "GET", files, params={"format": "json"})
        for row in listing.json()["ResultSet"]["Result"][:3]:
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                call(server, "GET", row["URI"])  # its body ends short of its Content-Length
        assert call(server, "GET", "/data/projects").ok  # still serving
    finally:
        server.stop()
    errors = proc.stderr.read()
    assert "Traceback" not in errors, errors
    assert "Exception in ASGI application" not in errors, errors


def test_head_sends_no_body_and_builds_none(serve: Any, tmp_path: Path) -> None:
    """A HEAD of a file or of a zip answers the head a GET would, and the access log says
    no body byte went out: the file is not read, the zip not built, only to be dropped."""
    log = tmp_path / "access.log"
    server: Server = serve("--access-log", str(log))
    scans = "/data/projects/DEMO01/experiments/DEMO01_S001_MR1/scans/ALL/files"
    rows = call(server, "GET", scans, params={"format": "json"}).json()["ResultSet"]["Result"]
    file_uri, size = rows[0]["URI"], int(rows[0]["Size"])
    for path, params in ((file_uri, {}), (scans, {"format": "zip"})):
        got = requests.head(server.url + path, params=params, auth=ADMIN, timeout=30)
        assert got.status_code == 200, (path, got.status_code)
        assert got.content == b""
    assert requests.head(server.url + file_uri, auth=ADMIN, timeout=30).headers[
        "Content-Length"
    ] == str(size)
    assert len(call(server, "GET", file_uri).content) == size
    server.stop()
    lines = [ln.split() for ln in log.read_text().splitlines()]
    heads = [ln for ln in lines if ln[2] == "HEAD"]
    assert len(heads) == 3
    assert [ln[5] for ln in heads] == ["0", "0", "0"]
    gets = [ln for ln in lines if ln[2] == "GET" and ln[3] == file_uri]
    assert [ln[5] for ln in gets] == [str(size)]


# -- file bodies from the page cache (os.sendfile) ------------------------------------------
class _Sendfile:
    """os.sendfile as the server calls it, counted when it writes to a socket (not a file
    copy): bytes carried, and whether the socket was ever full (BlockingIOError)."""

    def __init__(self) -> None:
        self.carried: list[int] = []
        self.full = threading.Event()
        self.real = os.sendfile

    def __call__(self, out: int, in_: int, offset: int, count: int) -> int:
        try:
            n = self.real(out, in_, offset, count)
        except BlockingIOError:
            self.full.set()
            raise
        if stat.S_ISSOCK(os.fstat(out).st_mode):
            self.carried.append(n)
        return n


def _read_response(stream: Any, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length from a socket's file object (the answer
    to a HEAD request, ``head``, has none of the body it describes)."""
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, b"" if head else stream.read(int(headers["content-length"]))


def _put_files(url: str, files: dict[str, bytes]) -> str:
    res = "/data/projects/NEW/resources/FILES"
    assert requests.put(url + "/data/projects/NEW", auth=ADMIN, timeout=60).ok
    for name, data in files.items():
        assert requests.put(f"{url}{res}/files/{name}", data=data, auth=ADMIN, timeout=60).ok
    return res


def test_file_bodies_go_from_the_page_cache_whole_and_in_order(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File GETs on one keep-alive connection, two of them pipelined, ranges and a HEAD
    among them: every body byte for byte, each response where it belongs, and the file
    bodies carried by sendfile (not read into the server's memory)."""
    sendfile = _Sendfile()
    monkeypatch.setattr(os, "sendfile", sendfile)
    files = {"small.bin": os.urandom(3000), "mid.bin": os.urandom(300 * 1024), "one.bin": b"x"}
    server = start(archive)
    try:
        res = _put_files(server.url, files)
        host, port = server.url.removeprefix("http://").split(":")
        auth = base64.b64encode(b"admin:admin").decode()

        def get(name: str, *extra: str, method: str = "GET") -> bytes:
            lines = [f"{method} {res}/files/{name} HTTP/1.1", "Host: x", *extra]
            return ("\r\n".join([*lines, f"Authorization: Basic {auth}"]) + "\r\n\r\n").encode()

        with socket.create_connection((host, int(port))) as sock:
            stream = sock.makefile("rb")
            for _ in range(3):
                for name, data in files.items():
                    sock.sendall(get(name))
                    assert _read_response(stream)[::2] == (200, data)
            sock.sendall(get("mid.bin", "Range: bytes=1000-200999") + get("small.bin"))
            status, headers, body = _read_response(stream)
            assert (status, body) == (206, files["mid.bin"][1000:201000])
            assert headers["content-range"] == f"bytes 1000-200999/{300 * 1024}"
            assert _read_response(stream)[::2] == (200, files["small.bin"])
            sock.sendall(get("mid.bin", method="HEAD"))
            status, headers, _ = _read_response(stream, head=True)
            assert (status, headers["content-length"]) == (200, str(300 * 1024))
            sock.sendall(get("small.bin"))  # nothing of the HEAD's file came after its head
            assert _read_response(stream)[::2] == (200, files["small.bin"])
    finally:
        server.stop()
    assert sum(sendfile.carried) >= 3 * (3000 + 300 * 1024) + 200000 + 3000


def test_a_body_the_socket_cannot_take_at_once_arrives_whole(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader slower than the file: sendfile fills the socket, the rest of the body goes
    the ordinary way behind it, and the client gets every byte once, in order."""
    sendfile = _Sendfile()
    monkeypatch.setattr(os, "sendfile", sendfile)
    big = os.urandom(24 * 1024 * 1024)
    server = start(archive)
    try:
        res = _put_files(server.url, {"big.bin": big})
        host, port = server.url.removeprefix("http://").split(":")
        auth = base64.b64encode(b"admin:admin").decode()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect((host, int(port)))
            sock.sendall(
                f"GET {res}/files/big.bin HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Basic {auth}\r\n\r\n".encode()
            )
            assert sendfile.full.wait(timeout=60)  # nothing read yet: the socket filled up
            status, _, body = _read_response(sock.makefile("rb"))
    finally:
        server.stop()
    assert status == 200
    assert body == big
    assert 0 < sum(sendfile.carried) < len(big)


# -- concurrent writers ----------------------------------------------------------------------
def test_concurrent_writers_stay_correct(serve: Any, archive: Path) -> None:
    server: Server = serve()
    assert call(server, "PUT", "/data/projects/NEW").ok
    res = "/data/projects/NEW/resources/SHARED"
    errors: list[str] = []

    def upload(i: int) -> None:
        r = call(server, "PUT", f"{res}/files/f{i:02d}.txt", data=f"file {i}".encode() * 100)
        if not r.ok:
            errors.append(f"{i}: {r.status_code} {r.text[:200]}")

    def imports(session: str) -> None:
        r = call(
            server,
            "POST",
            "/data/services/import?PROJECT_ID=NEW&dest=/archive",
            data=session_zip(archive, session),
            headers={"Content-Type": "application/zip"},
        )
        if not r.ok:
            errors.append(f"{session}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    threads += [
        threading.Thread(target=imports, args=(s,)) for s in ("DEMO01_S001_MR1", "DEMO01_S001_MR2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    listed = call(server, "GET", f"{res}/files?format=json").json()["ResultSet"]["Result"]
    assert sorted(r["Name"] for r in listed) == [f"f{i:02d}.txt" for i in range(16)]
    for session in ("DEMO01_S001_MR1", "DEMO01_S001_MR2"):
        uri = f"/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/{session}"
        assert server_md5s(server, uri) == dicom_md5s(archive, session)
    subjects = call(server, "GET", "/data/projects/NEW/subjects?format=json").json()
    assert len(subjects["ResultSet"]["Result"]) == 1  # both imports found one subject
    server.stop()
    assert check(archive).returncode == 0


# -- the consistency check -------------------------------------------------------------------
def test_check_names_each_problem_and_serve_refuses(archive: Path) -> None:
    done = check(archive)
    assert done.returncode == 0
    assert done.stdout.strip().endswith(", 0 problems")
    files = sorted((archive / "archive").rglob("*.dcm"))
    files[0].unlink()
    with open(files[1], "ab") as f:
        f.write(b"x")
    data = files[2].read_bytes()
    files[2].write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, other bytes
    (archive / "archive" / "DEMO01" / "stray.txt").write_text("?")
    done = check(archive)
    assert done.returncode == 1
    out = done.stdout
    assert f"missing: {files[0].relative_to(archive).as_posix()}" in out
    assert f"size: {files[1].relative_to(archive).as_posix()}" in out
    assert f"md5: {files[2].relative_to(archive).as_posix()}" in out
    assert "untracked: archive/DEMO01/stray.txt" in out
    assert out.strip().endswith(", 4 problems")
    quick = subprocess.run(
        [BIN / "minixnat", "check", "--root", str(archive), "--quick"],
        capture_output=True,
        text=True,
    )
    assert quick.returncode == 1
    assert "md5:" not in quick.stdout  # sizes only
    refused = subprocess.run(
        [BIN / "minixnat", "serve", "--root", str(archive), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "inconsistent" in refused.stderr
    assert "minixnat check --root" in refused.stderr
    assert "minixnat listening" not in refused.stdout


def test_start_server_fixture_archive_is_consistent(archive: Path) -> None:
    assert start_server  # the demo archive every test starts from passes the check
    assert check(archive).returncode == 0


def test_version() -> None:
    done = subprocess.run([BIN / "minixnat", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip().startswith("minixnat ")


def test_a_folder_that_is_no_archive_is_refused_with_how_to_make_an_empty_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "new"
    refused = subprocess.run(
        [BIN / "minixnat", "serve", "--root", str(root), "--port", "0"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert f"'minixnat demo-data {root}' (add --projects 0 for an empty one)" in refused.stderr
    assert "Traceback" not in refused.stderr
    made = subprocess.run([BIN / "minixnat", "demo-data", str(root), "--projects", "0"])
    assert made.returncode == 0
    server = start_server(root)
    try:
        assert call(server, "GET", "/data/projects").json()["ResultSet"]["Result"] == []
        assert call(server, "GET", "/data/users/admin").ok
    finally:
        server.stop()


# -- lookups remembered while the database is unchanged --------------------------------------
def test_remembered_answers_last_until_any_connection_writes(archive: Path) -> None:
    store, other = Store(archive), Store(archive)
    try:
        calls: list[str] = []

        def look() -> str:
            calls.append("computed")
            project = store.get_project("DEMO01")
            assert project is not None
            return project.name

        first = store.remembered(("name",), look)
        assert store.remembered(("name",), look) == first
        assert len(calls) == 1
        # A write through this connection...
        store.update_row("projects", "id", "DEMO01", {"name": "Renamed here"})
        assert store.remembered(("name",), look) == "Renamed here"
        assert len(calls) == 2
        # ...and through another one (another process would be the same) are both seen.
        other.update_row("projects", "id", "DEMO01", {"name": "Renamed elsewhere"})
        assert store.remembered(("name",), look) == "Renamed elsewhere"
        assert len(calls) == 3

        def failing() -> str:
            calls.append("failed")
            raise StoreError("no")

        for _ in range(2):
            with pytest.raises(StoreError):
                store.remembered(("bad",), failing)
        assert calls.count("failed") == 2  # an error is never remembered
    finally:
        store.close()
        other.close()


def test_lookups_are_remembered_and_a_long_request_sees_later_changes(archive: Path) -> None:
    """The path lookups ask SQLite once while nothing changes; a request that began before
    another process's change sees it once it has run for LOOK_LASTS_S."""
    store, other = Store(archive), Store(archive)
    try:
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)  # counting the queries

        def request() -> tuple[str, str]:
            store.look_once()
            first = store.get_project("DEMO01")
            again = store.get_project("DEMO01")
            assert first is again  # answered from memory: no second query
            assert len([s for s in statements if "FROM projects" in s]) == 1
            other.update_row("projects", "id", "DEMO01", {"name": "Changed meanwhile"})
            time.sleep(LOOK_LASTS_S * 2)
            later = store.get_project("DEMO01")
            assert first is not None
            assert later is not None
            return first.name, later.name

        before, after = contextvars.copy_context().run(request)
        assert before != "Changed meanwhile"
        assert after == "Changed meanwhile"
    finally:
        store.close()
        other.close()


def test_file_gets_follow_every_change_made_elsewhere(archive: Path) -> None:
    """Served from two processes: a file replaced through one, and a project made private
    by another program, are seen by the very next request to either."""
    _admin(archive, "user", "add", "mia", "--password", "pw")  # not a member of DEMO01
    _admin(archive, "project", "access", "DEMO01", "public")
    server = start_server(archive, "--workers", "2")
    try:
        mia = ("mia", "pw")
        base = f"{server.url}/data/projects/DEMO01/resources/NOTES/files/a.txt"
        assert call(server, "PUT", "/data/projects/DEMO01/resources/NOTES").status_code == 200
        for version in (b"one", b"two", b"three"):
            put = requests.put(
                base, params={"inbody": "true", "overwrite": "true"}, data=version, auth=ADMIN,
                timeout=30,
            )  # fmt: skip
            assert put.status_code == 200, put.text
            # New connections each time: both workers answer some of them.
            for _ in range(6):
                got = requests.get(base, auth=mia, timeout=30)
                assert got.status_code == 200
                assert got.content == version
        _admin(archive, "project", "access", "DEMO01", "private")
        for _ in range(6):
            assert requests.get(base, auth=mia, timeout=30).status_code in (403, 404)
    finally:
        server.stop()


def test_file_paths_resolve_alike_from_memory_and_afresh(
    serve: Any, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file GET remembers its folder's resolution and its resource's rows: a resource
    labelled ``files``, a file named ``files``, a file under a folder called ``files``, and
    a second user who may not read the project all get what a fresh lookup gives."""
    _admin(archive, "user", "add", "mia", "--password", "pw")  # not a member of DEMO01
    server: Server = serve()
    res = f"{server.url}/data/projects/DEMO01/resources"
    bodies = {
        f"{res}/files/files/a.txt": b"in the resource called files",
        f"{res}/R/files/files": b"a file called files",
        f"{res}/R/files/sub/files/b.txt": b"under a folder called files",
        f"{res}/R/files/c.txt": b"plain",
    }
    for url, data in bodies.items():
        put = requests.put(url, params={"inbody": "true"}, data=data, auth=ADMIN, timeout=30)
        assert put.status_code == 200, (url, put.text)
    for _ in range(2):  # the second time from memory
        for url, data in bodies.items():
            got = requests.get(url, auth=ADMIN, timeout=30)
            assert (got.status_code, got.content) == (200, data), url
            assert requests.get(url, auth=("mia", "pw"), timeout=30).status_code == 404
        assert requests.get(f"{res}/R/files/nope.txt", auth=ADMIN, timeout=30).status_code == 404
        missing = requests.get(f"{res}/NOPE/files/c.txt", auth=ADMIN, timeout=30)
        assert missing.status_code == 404
    server.stop()

    # A resource past the size of the remembered index is asked file by file.
    monkeypatch.setattr("minixnat.store.files.INDEX_AT_MOST", 1)
    store = Store(archive)
    try:
        app = App(store, Faults())
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
        for url in (f"{res}/R/files/c.txt", f"{res}/R/files/files"):
            status, _head, body = asgi_get(app, url.removeprefix(server.url), auth)
            assert (status, body) == (200, bodies[url])
        status, _head, _body = asgi_get(app, "/data/projects/DEMO01/resources/R/files/x", auth)
        assert status == 404
        assert store._file_index(store.resources_named("project", "DEMO01", "R")[0].pk) is None
    finally:
        store.close()

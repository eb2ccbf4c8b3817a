"""minixnat killed in the middle of a write, then restarted: every write is all or nothing.

A server with a crash planted in its file journal (tests/crashing_minixnat.py) dies at a
chosen step of an import, an extract upload, an overwrite and a delete; real ``kill -9``
at random moments covers the steps in between.  After each restart the invariants hold:
``minixnat check`` passes, the session or resource is whole (every file, the right MD5s)
or absent, and sending the same data again succeeds without ``overwrite``.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import BIN, Server, children_of, start_server, wait_gone
from tests.test_minixnat_writes import ADMIN, call, dicom_md5s, server_md5s, session_zip

SESSION = "DEMO01_S001_MR1"
URI = f"/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/{SESSION}"
IMPORT = "/data/services/import?PROJECT_ID=NEW&dest=/archive"
RESOURCE = "/data/projects/NEW/resources/STATS"
# The session zip holds 9 DICOM files: die before the first, in the middle, before the last.
CRASH_POINTS = ["rename:0", "rename:4", "rename:8", "applied", "finish"]


def crashing_server(root: Path, point: str, *, snapshots: bool = False) -> subprocess.Popen[str]:
    """A server that dies at ``point``; no snapshots unless asked for (a snapshot run's own
    file moves would meet the crash planted for the request)."""
    command = [sys.executable, "-m", "tests.crashing_minixnat", "serve", "--root", str(root)]
    proc = subprocess.Popen(
        [*command, "--port", "0", *([] if snapshots else ["--no-snapshots"])],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CRASH_AT": point},
        cwd=Path(__file__).parent.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("minixnat listening on http://"), line
    proc.url = line.rsplit(" ", 1)[1]  # type: ignore[attr-defined]
    return proc


def send_until_killed(proc: subprocess.Popen[str], method: str, path: str, **kw: object) -> None:
    """The request meets the planted crash: no answer, and the server is gone."""
    url = proc.url + path  # type: ignore[attr-defined]
    with pytest.raises(requests.ConnectionError):
        requests.request(method, url, auth=ADMIN, timeout=60, **kw)  # type: ignore[arg-type]
    assert proc.wait(timeout=30) == 137


def assert_consistent(root: Path) -> None:
    done = subprocess.run(
        [BIN / "minixnat", "check", "--root", str(root)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(", 0 problems")
    assert not list((root / "journal").glob("*")) if (root / "journal").exists() else True
    assert not [p for p in (root / "archive").rglob("*") if p.name.endswith(".bak")]


def session_state(server: Server, expected: list[str]) -> str:
    """'absent' or 'whole'; anything in between fails the test."""
    found = call(server, "GET", f"{URI}?format=json")
    if found.status_code == 404:
        subjects = call(server, "GET", "/data/projects/NEW/subjects?format=json").json()
        assert subjects["ResultSet"]["Result"] == [], "a subject was left without its session"
        return "absent"
    assert found.status_code == 200
    assert server_md5s(server, URI) == expected
    scans = call(server, "GET", f"{URI}/scans?format=json").json()["ResultSet"]["Result"]
    assert len(scans) == 3
    return "whole"


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_import_killed_is_whole_or_absent_and_resends(new_project: Path, point: str) -> None:
    archive = new_project
    body = session_zip(archive, SESSION)
    expected = dicom_md5s(archive, SESSION)
    proc = crashing_server(archive, point)
    send_until_killed(proc, "POST", IMPORT, data=body, headers={"Content-Type": "application/zip"})

    server = start_server(archive)  # recovers at start-up
    try:
        assert_consistent(archive)
        state = session_state(server, expected)
        assert state == ("whole" if point == "finish" else "absent")
        if state == "absent":
            again = call(
                server, "POST", IMPORT, data=body, headers={"Content-Type": "application/zip"}
            )
            assert again.status_code == 200, again.text
            assert session_state(server, expected) == "whole"
        assert_consistent(archive)
    finally:
        server.stop()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def resource_md5s(server: Server) -> dict[str, str]:
    found = call(server, "GET", f"{RESOURCE}/files?format=json")
    if found.status_code == 404:
        return {}
    return {r["Name"]: r["digest"] for r in found.json()["ResultSet"]["Result"]}


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {Path(n).name: hashlib.md5(d).hexdigest() for n, d in files.items()}


@pytest.mark.parametrize("point", ["rename:0", "rename:3", "applied", "finish"])
def test_extract_and_overwrite_killed(new_project: Path, point: str) -> None:
    archive = new_project
    old = {f"sub/f{i}.txt": f"old {i}".encode() for i in range(6)}
    new = {f"sub/f{i}.txt": f"new contents {i}".encode() for i in range(6)}
    extract = f"{RESOURCE}/files/up.zip?extract=true"

    # A new resource from an extracted zip: the resource and all its files, or nothing.
    proc = crashing_server(archive, point)
    send_until_killed(proc, "PUT", extract, data=_zip(old))
    server = start_server(archive)
    try:
        assert_consistent(archive)
        got = resource_md5s(server)
        assert got in ({}, _md5s(old)), got
        if point != "finish":
            assert call(server, "GET", f"{RESOURCE}?format=json").status_code == 404
            assert call(server, "PUT", extract, data=_zip(old)).status_code == 200
        assert resource_md5s(server) == _md5s(old)
    finally:
        server.stop()

    # Overwriting every file: the old set or the new set, never a mixture.
    proc = crashing_server(archive, point)
    send_until_killed(proc, "PUT", extract + "&overwrite=true", data=_zip(new))
    server = start_server(archive)
    try:
        assert_consistent(archive)
        assert resource_md5s(server) == (_md5s(new) if point == "finish" else _md5s(old))
        for name, data in (new if point == "finish" else old).items():
            got = call(server, "GET", f"{RESOURCE}/files/{name}")
            assert got.content == data
    finally:
        server.stop()


@pytest.mark.parametrize("point", ["rename:0", "rename:2", "applied", "finish"])
def test_delete_killed_is_whole_or_gone(new_project: Path, point: str) -> None:
    archive = new_project
    body = session_zip(archive, SESSION)
    expected = dicom_md5s(archive, SESSION)
    server = start_server(archive)
    assert call(server, "POST", IMPORT, data=body, headers={"Content-Type": "application/zip"}).ok
    server.stop()

    proc = crashing_server(archive, point)
    send_until_killed(proc, "DELETE", URI)
    server = start_server(archive)
    try:
        assert_consistent(archive)
        found = call(server, "GET", f"{URI}?format=json")
        if point == "finish":
            assert found.status_code == 404
            assert not (archive / "archive" / "NEW" / "arc001" / SESSION).exists()
        else:
            assert found.status_code == 200
            assert server_md5s(server, URI) == expected
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flags", "senders", "seed"),
    [((), 1, 4), (("--workers", "2"), 2, 7)],
    ids=["one process", "two workers"],
)
def test_random_kills_during_imports(
    new_project: Path, flags: tuple[str, ...], senders: int, seed: int
) -> None:
    """Real SIGKILLs at random moments of a larger import (bounded: four rounds); with two
    workers, two imports at once, and no worker outlives the killed server."""
    archive = new_project
    body = _bundle(archive)
    rng = random.Random(seed)
    for _ in range(4):
        server = start_server(archive, *flags)
        workers = children_of(server.process.pid)

        def send(url: str = server.url) -> None:
            try:  # answered or cut off: the archive must be consistent either way
                requests.post(
                    url + IMPORT + "&overwrite=delete",
                    data=body,
                    auth=ADMIN,
                    headers={"Content-Type": "application/zip"},
                    timeout=60,
                )
            except requests.ConnectionError:
                pass

        threads = [threading.Thread(target=send) for _ in range(senders)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.6))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert wait_gone(workers) == []
        for thread in threads:
            thread.join(timeout=60)
        assert_consistent(archive)
    server = start_server(archive, *flags)
    try:
        assert_consistent(archive)
        for session in ("DEMO01_S001_MR1", "DEMO01_S001_MR2"):
            uri = f"/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/{session}"
            if call(server, "GET", f"{uri}?format=json").status_code == 200:
                assert server_md5s(server, uri) == dicom_md5s(archive, session)
    finally:
        server.stop()


def test_random_kills_while_snapshots_are_made(new_project: Path) -> None:
    """``serve`` as it runs by default, snapshots on: SIGKILLs at random moments of imports
    and of the snapshot runs after them.  The archive stays consistent, and after a restart
    every run finishes with exactly one set of pictures per scan."""
    archive = new_project
    body = _bundle(archive)
    rng = random.Random(7)
    for _ in range(4):
        server = start_server(archive, snapshots=True)
        try:
            call(server, "POST", IMPORT + "&overwrite=delete", data=body,
                 headers={"Content-Type": "application/zip"})  # fmt: skip
        except requests.ConnectionError:
            pass
        time.sleep(rng.uniform(0.0, 0.4))  # within the run (it takes about a second)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert_consistent(archive)
    server = start_server(archive, snapshots=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            runs = call(server, "GET", "/data/services/workflows/WebBasedQCImageCreator",
                        params={"project": "NEW", "format": "json"}).json()  # fmt: skip
            states = [r["status"] for r in runs["ResultSet"]["Result"]]
            if states and all(s == "Complete" for s in states):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        for session in ("DEMO01_S001_MR1", "DEMO01_S001_MR2"):
            uri = f"/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/{session}"
            dicom = call(server, "GET", f"{uri}/scans/ALL/resources/DICOM/files?format=json")
            assert sorted(r["digest"] for r in dicom.json()["ResultSet"]["Result"]) == (
                dicom_md5s(archive, session)
            )
            for scan in call(server, "GET", f"{uri}/scans?format=json").json()["ResultSet"][
                "Result"
            ]:
                pictures = call(
                    server, "GET", f"{uri}/scans/{scan['ID']}/resources/SNAPSHOTS/files?format=json"
                ).json()["ResultSet"]["Result"]
                assert sorted(p["file_content"] for p in pictures) == ["ORIGINAL", "THUMBNAIL"]
    finally:
        server.stop()
    assert_consistent(archive)


def _bundle(archive: Path) -> bytes:
    """A bundle zip of two session zips."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for session in ("DEMO01_S001_MR1", "DEMO01_S001_MR2"):
            zf.writestr(f"{session}.zip", session_zip(archive, session))
    return buf.getvalue()

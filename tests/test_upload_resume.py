"""Uploads that finish however they were interrupted (issue 14): ``kill -9`` of the client
at several points of an upload of a downloaded tree, then the same command again; identical
and conflicting re-uploads; sessions that would collide.

The server's access log tells the test where the client is; the client is a real process,
killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tests.conftest import BIN, Server, start_server
from tests.standins import PassThrough, serve
from tests.test_download import ENV, cli, local_files

ADMIN = ("admin", "admin")


def api(server: Server, path: str) -> list[dict[str, str]]:
    answer = requests.get(f"{server.url}{path}", auth=ADMIN, timeout=30)
    answer.raise_for_status()
    rows: list[dict[str, str]] = answer.json()["ResultSet"]["Result"]
    return rows


@pytest.fixture
def tree(archive: Path, tmp_path: Path) -> Path:
    """DEMO01 as a download (DICOM, NIFTI and session resources), to upload elsewhere."""
    server = start_server(archive)
    try:
        out = tmp_path / "download"
        code, text, _ = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(out))
        assert code == 0, text
    finally:
        server.stop()
    return out / "DEMO01"


def upload_process(server: Server, tree: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BIN / "xnat-downloader", "upload", "-w", server.url, "-p", "COPY", str(tree), "-j", "1"],
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def kill_when(proc: subprocess.Popen[str], log: Path, wanted: str, skip: int = 0) -> bool:
    """SIGKILL the client once the access log shows ``wanted`` (after ``skip`` earlier
    matches); False if the upload finished first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum(1 for line in lines if wanted in line) > skip:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError(f"no {wanted!r} in the access log within two minutes")


def server_state(server: Server) -> tuple[list[str], Counter[str], dict[str, str]]:
    """(session labels, MD5s of every file of every session, scan types by session/scan)."""
    labels = sorted(r["label"] for r in api(server, "/data/projects/COPY/experiments"))
    digests: Counter[str] = Counter()
    types: dict[str, str] = {}
    for label in labels:
        base = f"/data/projects/COPY/experiments/{label}"
        for scan in api(server, f"{base}/scans"):
            types[f"{label}/{scan['ID']}"] = scan["type"]
        for resource_path in (f"{base}/scans/ALL/files", f"{base}/resources/ALL/files"):
            answer = requests.get(
                f"{server.url}{resource_path}?format=json", auth=ADMIN, timeout=30
            )
            if answer.status_code == 404:
                continue  # a session with no resources of its own
            digests.update(r["digest"] for r in answer.json()["ResultSet"]["Result"])
    return labels, digests, types


def expected_state(tree: Path) -> tuple[list[str], Counter[str], dict[str, str]]:
    labels = sorted({p.parent.name for p in tree.glob("*/*/scans")})
    digests = Counter(
        hashlib.md5(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file() and "/assessors/" not in p.as_posix()
    )
    types = {}
    for folder in tree.glob("*/*/scans/*"):
        scan_id, _, scan_type = folder.name.partition("-")
        types[f"{folder.parent.parent.name}/{scan_id}"] = scan_type
    return labels, digests, types


# Where the client dies: during the first import (the server is slowed down), after an import
# and before its resources, during the resource uploads, and during the scan-type updates.
KILL_POINTS = [
    ("POST /data/services/import", 0),
    ("/resources/", 0),
    ("/resources/", 3),
    ("/scans/", 0),
]


@pytest.mark.parametrize(("wanted", "skip"), KILL_POINTS)
def test_killed_upload_finishes_when_run_again(
    serve: object, archive: Path, tree: Path, tmp_path: Path, wanted: str, skip: int
) -> None:
    log = tmp_path / "access.log"
    server = start_server(archive, "--access-log", str(log), "--latency-ms", "30")
    try:
        assert requests.put(f"{server.url}/data/projects/COPY", auth=ADMIN, timeout=30).ok
        proc = upload_process(server, tree)
        if wanted.startswith("/scans/"):
            wanted = "_xnatdl_incomplete/scans/1?"  # the first scan-type PUT
        killed = kill_when(proc, log, wanted, skip)
        assert killed, "the upload finished before the planned kill"
        # Right after the kill, no session looks finished unless it is: every session
        # under its own label holds all its DICOM files.
        labels_now = [r["label"] for r in api(server, "/data/projects/COPY/experiments")]
        want_labels, _, _ = expected_state(tree)
        for label in labels_now:
            if label in want_labels:
                ours = list(tree.glob(f"*/{label}/scans/*/resources/DICOM/files/*"))
                there = api(
                    server,
                    f"/data/projects/COPY/experiments/{label}/scans/ALL/resources/DICOM/files",
                )
                assert len(there) == len(ours), f"{label} looks finished but is not"
        code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(tree))
        assert code == 0, err
        files = len(local_files(tree)) - len(list(tree.rglob("assessors/*/*/*/files/*")))
        assert out.splitlines()[-1].endswith(" 0 failed")
        labels, digests, types = server_state(server)
        want_labels, want_digests, want_types = expected_state(tree)
        assert labels == want_labels  # exactly one copy of each session, no staging label
        assert digests == want_digests  # every file exactly once
        assert types == want_types
        assert files > 0
    finally:
        server.stop()


def test_conflicting_reupload_is_one_line_per_session(
    archive: Path, tree: Path, tmp_path: Path
) -> None:
    server = start_server(archive)
    try:
        assert requests.put(f"{server.url}/data/projects/COPY", auth=ADMIN, timeout=30).ok
        code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(tree))
        assert code == 0, err
        # The same sessions with other content: one DICOM file of each replaced by another's.
        other = tmp_path / "other" / tree.name
        shutil.copytree(tree, other)
        sessions = sorted(other.glob("*/*/scans"))
        for scans in sessions:
            files = sorted(scans.glob("*/resources/DICOM/files/*"))
            label = scans.parent.name
            donor = sorted(p for p in tree.rglob("*.dcm") if p.parts[-7] != label)[0]
            shutil.copyfile(donor, files[0])
        code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(other))
        assert code == 1
        failed = [line for line in err.splitlines() if line.startswith("failed:")]
        assert len(failed) == len(sessions), err
        assert all("--overwrite" in line and "other content" in line for line in failed)
        assert " 0 failed" not in out.splitlines()[-1]
    finally:
        server.stop()


def test_sessions_that_would_collide_are_refused_before_sending(
    archive: Path, tree: Path, tmp_path: Path
) -> None:
    server = start_server(archive)
    try:
        assert requests.put(f"{server.url}/data/projects/COPY", auth=ADMIN, timeout=30).ok
        session = sorted(tree.glob("*/*/scans"))[0].parent
        twin = tmp_path / "twin" / "OTHER_SUBJECT" / session.name
        shutil.copytree(session, twin)
        code, _, err = cli(
            "upload", "-w", server.url, "-p", "COPY", str(session.parent), str(twin.parent)
        )
        assert code == 2
        assert f"would both become session {session.name}" in err
        assert api(server, "/data/projects/COPY/experiments") == []
    finally:
        server.stop()


def test_resume_is_reported_as_skipped_not_resent(archive: Path, tree: Path) -> None:
    """An identical re-upload sends no import at all."""
    log_free = start_server(archive)
    try:
        assert requests.put(f"{log_free.url}/data/projects/COPY", auth=ADMIN, timeout=30).ok
        assert cli("upload", "-w", log_free.url, "-p", "COPY", str(tree))[0] == 0
        code, _, err = cli("upload", "-w", log_free.url, "-p", "COPY", str(tree))
        assert code == 0
        assert "session:" not in err  # no import answered with a session: none was sent
        code, out, _ = cli("upload", "-w", log_free.url, "-p", "COPY", "--json", str(tree))
        assert code == 0
        report = json.loads(out)
        # Every file counts as already there (skipped, and verified), none as sent.
        assert report["files"] == report["skipped"] == report["verified"] > 0
        assert len(err.splitlines()) < 15  # a handful of lines, not one per file
        # -v says what happened to each session.
        code, _, err = cli("upload", "-w", log_free.url, "-p", "COPY", "-v", str(tree))
        assert code == 0
        for label in expected_state(tree)[0]:
            assert f"session {label}: on the server as {label} (same" in err
    finally:
        log_free.stop()


_ = sys  # the client runs as a real process (BIN), never in-process, for the kill tests


def test_one_plan_for_the_whole_upload(archive: Path, tree: Path) -> None:
    """One Planned event whose totals cover every file sent (imports and other resources),
    so a display shows one bar and never more done than planned."""
    from xnat_downloader import api
    from xnat_downloader.api import upload as uploads
    from xnat_downloader.cli.progress import Tally
    from xnat_downloader.http.credentials import Credentials
    from xnat_downloader.transfer.events import Event, Planned

    server = start_server(archive)
    try:
        assert requests.put(f"{server.url}/data/projects/COPY", auth=ADMIN, timeout=30).ok
        events: list[Event] = []
        tally = Tally()

        def sink(event: Event) -> None:
            events.append(event)
            tally.update(event)
            assert tally.done <= tally.files

        conn = api.Connection(server.url, Credentials("admin", "admin", "test"))
        report = uploads.upload(conn, [tree], "COPY", sink=sink, jobs=3)
        assert report.ok
        plans = [e for e in events if isinstance(e, Planned)]
        assert len(plans) == 1
        assert tally.done == tally.files == plans[0].files
    finally:
        server.stop()


def finishes_when_sent_again(server: Server, tree: Path) -> None:
    """The same upload, straight to the server this time: exit 0, exactly the tree there."""
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(tree))
    assert code == 0, err
    assert server_state(server) == expected_state(tree)


def upload_through(standin: type[PassThrough], server: Server, tree: Path) -> tuple[int, str, str]:
    """Upload ``tree`` into a fresh project COPY through ``standin`` (a proxy in front of
    ``server``): exit status, stdout, stderr."""
    proxy, stop = serve(standin)
    try:
        requests.put(f"{server.url}/data/projects/COPY", auth=ADMIN, timeout=30)
        return cli("upload", "-w", proxy, "-p", "COPY", str(tree))
    finally:
        stop()


def test_an_import_the_server_only_pretends_to_take_fails_whole_and_a_rerun_finishes(
    archive: Path, tree: Path
) -> None:
    """A hostile or broken server: the import service answers the URI of a session and keeps
    nothing, or answers a login page. Every file of the session fails, the other resources'
    files too (counted, never sent), the run ends exit 1 with its done line (no traceback,
    no error for the missing session); the same upload to the real server then finishes."""
    server = start_server(archive)
    first = sorted(p.parent.name for p in tree.glob("*/*/scans"))[0]

    class Liar(PassThrough):
        upstream = server.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if "/services/import" not in path:
                return False
            query = parse_qs(urlparse(path).query)
            label = query["EXPT_LABEL"][0]
            subject = query["SUBJECT_ID"][0]
            uri = f"/data/archive/projects/COPY/subjects/{subject}/experiments/{label}\n"
            if label.startswith(first):
                self.reply(200, b"<html><body><form>Log in</form></body></html>", "text/html")
            else:
                self.reply(200, uri.encode())
            return True

    try:
        files = sum(1 for p in tree.rglob("*") if p.is_file() and "/assessors/" not in str(p))
        code, out, err = upload_through(Liar, server, tree)
        assert code == 1, err
        assert out.splitlines()[-1] == f"done: {files} files, 0 bytes, 0 verified, {files} failed"
        assert "was answered with an HTML page (a login or error page)" in err
        assert "not on the server with the MD5 that was sent" in err
        assert "error:" not in err
        assert api(server, "/data/projects/COPY/experiments") == []
        finishes_when_sent_again(server, tree)
    finally:
        server.stop()


def test_a_session_that_appears_during_the_upload_is_not_blamed_on_missing_overwrite(
    archive: Path, tree: Path
) -> None:
    """Another upload creates the session between this upload's look and its import (the
    stand-in does it just before passing the import on): the server's 409 is explained as
    that, with the advice to run again (not to add --overwrite), and a re-run finishes."""
    server = start_server(archive)

    class Racer(PassThrough):
        upstream = server.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if "/services/import" in path:
                query = parse_qs(urlparse(path).query)
                subject, label = query["SUBJECT_ID"][0], query["EXPT_LABEL"][0]
                requests.put(f"{server.url}/data/projects/COPY/subjects/{subject}", auth=ADMIN,
                             timeout=30)  # fmt: skip
                made = requests.put(
                    f"{server.url}/data/projects/COPY/subjects/{subject}/experiments/{label}",
                    params={"xsiType": "xnat:mrSessionData"}, auth=ADMIN, timeout=30,
                )  # fmt: skip
                assert made.ok, made.text
            return False

    try:
        code, _, err = upload_through(Racer, server, tree)
        assert code == 1, err
        refusals = [line for line in err.splitlines() if " 409 " in line]
        assert refusals
        assert all(
            line.endswith("(it appeared while this upload ran: run the same command again)")
            for line in refusals
        ), refusals
        assert "--overwrite" not in err
        finishes_when_sent_again(server, tree)
    finally:
        server.stop()


def test_a_connection_dropped_part_way_fails_that_session_alone_and_a_rerun_finishes(
    archive: Path, tree: Path
) -> None:
    """The server drops the connection of one session's import in mid-body, and refuses
    another session's scan-type update (a step after its files were verified): each of the
    two sessions fails, once, naming the re-run that finishes it; the other sessions are
    imported and verified; the run ends with its done line and exit 1 (not an error that
    abandons the imports in flight); the same upload then finishes."""
    server = start_server(archive)
    sessions = sorted(p.parent.name for p in tree.glob("*/*/scans"))
    cut_import, cut_types = sessions[0], sessions[-1]
    assert cut_import != cut_types

    class Dropper(PassThrough):
        upstream = server.url

        def do_POST(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            label = query.get("EXPT_LABEL", [""])[0]
            if "/services/import" in self.path and label.startswith(cut_import):
                self.rfile.read(64 * 1024)  # some of the body, then the connection is gone
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.do_write()

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            # The session under its staging label, setting the type of a scan: refused
            # outright (a connection dropped here would be retried, as it may be).
            if f"/experiments/{cut_types}" in path and "/scans/" in path:
                self.reply(400, b"the stand-in refuses this scan type")
                return True
            return False

    try:
        code, out, err = upload_through(Dropper, server, tree)
        assert code == 1, err
        assert "error:" not in err
        failed = [line for line in err.splitlines() if line.startswith("failed:")]
        assert len(failed) == 2, err
        assert all("run the same command again to finish it" in line for line in failed)
        assert any(cut_import in line for line in failed), failed
        assert any(cut_types in line for line in failed), failed
        done = out.splitlines()[-1]
        assert done.startswith("done: "), out
        assert not done.endswith(" 0 failed"), done
        there = {r["label"] for r in api(server, "/data/projects/COPY/experiments")}
        assert set(sessions) - {cut_import, cut_types} <= there
        assert cut_types not in there  # still under its staging label, not looking finished
        # Not listed as a session this upload made; where its part is, said as a note.
        assert not [x for x in err.splitlines() if x.startswith("session:") and cut_types in x]
        assert any(
            x.startswith("note: ") and "not finished" in x and f"{cut_types}_xnatdl" in x
            for x in err.splitlines()
        ), err
        finishes_when_sent_again(server, tree)
    finally:
        server.stop()

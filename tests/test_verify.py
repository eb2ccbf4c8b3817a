"""``xnat-downloader verify``: a download checked later, on disk and against the server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, start_server
from tests.standins import PassThrough, elsewhere, serve
from tests.test_download import cli

ADMIN = ("admin", "admin")


def test_verify_finds_every_kind_of_problem(tmp_path: Path, archive: Path) -> None:
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        code, text, err = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(out))
        assert code == 0, err
        code, text, err = cli("verify", "-o", str(out))
        assert code == 0, err
        files = len(
            [p for p in out.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts]
        )
        assert text.strip().splitlines()[-1] == (
            f"verify: {files} files, {files} ok, 0 missing, 0 changed, 0 extra, 0 gone from server"
        )
        # An md5sum -c list that md5sum accepts.
        listing = tmp_path / "sums.md5"
        assert cli("verify", "-o", str(out), "--offline", "--write-md5sum", str(listing))[0] == 0
        checked = subprocess.run(["md5sum", "-c", "--quiet", str(listing)], cwd=out,
                                 capture_output=True, text=True)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert len(listing.read_text().splitlines()) == files
        # A list that cannot be written: one clear line, not a traceback.
        nowhere = tmp_path / "no-such-dir" / "sums.md5"
        code, text, err = cli("verify", "-o", str(out), "--offline", "--write-md5sum",
                              str(nowhere))  # fmt: skip
        assert code == 1, err
        assert err.startswith(f"error: cannot write {nowhere}: No such file or directory"), err
        assert "Traceback" not in err
        # Damage: one file changed with its size and mtime kept, one deleted, one added,
        # and one removed on the server.
        dicoms = sorted(out.rglob("*.dcm"))
        changed, missing = dicoms[0], dicoms[1]
        stat = changed.stat()
        data = bytearray(changed.read_bytes())
        data[-1] ^= 0xFF
        changed.write_bytes(bytes(data))
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        missing.unlink()
        (out / "DEMO01" / "notes.txt").write_text("mine")
        gone = dicoms[2]
        rel = gone.relative_to(out).as_posix()
        manifest = json.loads((out / ".xnat-downloader" / "manifest.json").read_text())
        uri = next(f["uri"] for f in manifest["files"] if f["local"] == rel)
        assert requests.delete(server.url + uri, auth=ADMIN, timeout=30).ok
        code, text, err = cli("verify", "-o", str(out))
        assert code == 1
        lines = text.splitlines()
        assert f"changed: {changed.relative_to(out).as_posix()}" in lines
        assert f"missing: {missing.relative_to(out).as_posix()}" in lines
        assert "extra: DEMO01/notes.txt" in lines
        assert f"gone from server: {rel}" in lines
        assert lines[-1] == (
            f"verify: {files} files, {files - 2} ok, 1 missing, 1 changed, 1 extra, "
            "1 gone from server"
        )
        # Offline: the disk only; JSON: one document.
        code, text, _ = cli("verify", "-o", str(out), "--offline", "--json")
        assert code == 1
        document = json.loads(text)
        assert document["gone_from_server"] == []
        assert document["missing"] == [missing.relative_to(out).as_posix()]
    finally:
        server.stop()
    # The server recorded in DIR is gone: one line naming it and --offline, exit 2.
    code, text, err = cli("verify", "-o", str(out))
    assert code == 2
    assert err.startswith(f"error: cannot reach {server.url}"), err
    assert f"it is the server recorded in {out}: add --offline to check without it" in err


def test_a_check_without_a_login_does_not_take_hidden_files_for_gone(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server answers 'not found' to a visitor who is not logged in for what a guest may
    not see, as for what was deleted: verify said every file of a private project was
    gone from the server (exit 1).  Now it says the check cannot be made that way."""
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                           "-o", str(out))  # fmt: skip
        assert code == 0, err
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no ~/.xnatPass
        monkeypatch.delenv("NETRC", raising=False)
        code, text, err = cli("verify", "-o", str(out), env={})
        assert code == 2
        assert "gone from server" not in text
        assert "answers 'not found' for" in err
        assert "whether they are gone cannot be told" in err
        assert "(-u USER, $XNAT_USER or ~/.netrc), or check without the server (--offline)" in err
        code, text, _ = cli("verify", "-o", str(out), "--offline", env={})
        assert code == 0
        code, text, _ = cli("verify", "-o", str(out))  # logged in
        assert code == 0
        assert text.strip().endswith(" 0 gone from server")
    finally:
        server.stop()


def test_verify_needs_a_download(tmp_path: Path) -> None:
    code, _, err = cli("verify", "-o", str(tmp_path))
    assert code == 2
    assert "holds no download" in err


def _corrupt(path: Path, *, keep_mtime: bool) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_reruns_trust_cheaply_and_checksum_checks_all(tmp_path: Path, archive: Path) -> None:
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        args = ("download", "-w", server.url, "-p", "DEMO01", "-o", str(out))
        assert cli(*args)[0] == 0
        dicoms = sorted(out.rglob("*.dcm"))
        touched, hidden = dicoms[0], dicoms[1]
        good_touched, good_hidden = touched.read_bytes(), hidden.read_bytes()
        _corrupt(touched, keep_mtime=False)  # an ordinary edit: the mtime moves
        _corrupt(hidden, keep_mtime=True)  # same size, mtime put back
        code, text, err = cli(*args)
        assert code == 0, err
        assert text.splitlines()[-1].endswith(" 0 failed")
        assert touched.read_bytes() == good_touched  # noticed by its mtime, fetched again
        assert hidden.read_bytes() != good_hidden  # trusted by size and mtime
        assert cli("verify", "-o", str(out), "--offline")[0] == 1  # verify finds it
        code, text, err = cli(*args, "--checksum")
        assert code == 0, err
        assert hidden.read_bytes() == good_hidden  # --checksum hashed it and fetched it again
        assert cli("verify", "-o", str(out))[0] == 0
    finally:
        server.stop()


def test_space_is_checked_before_the_first_byte(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from xnat_downloader.transfer.decide import SPACE_MARGIN, bytes_to_fetch, space_shortfall

    assert bytes_to_fetch([10, 20, None], [None, 5, None]) == 25
    assert space_shortfall(100, 100 + SPACE_MARGIN) == 0
    assert space_shortfall(100, 50 + SPACE_MARGIN) == 50
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**6, 10**6, 1000))
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(out))
        assert code == 2
        assert "not enough space on the file system of" in err
        assert "--no-space-check" in err
        assert not [p for p in out.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts]
        code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(out),
                           "--no-space-check")  # fmt: skip
        assert code == 0, err
    finally:
        server.stop()


def test_sessions_without_a_project(tmp_path: Path, archive: Path) -> None:
    """-s alone finds the sessions' projects in one listing; a label in two projects, or in
    none, is a clear error."""
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        code, _, err = cli("download", "-w", server.url, "-s", "DEMO02_S001_MR1",
                           "-s", "DEMO01_S002_CT2", "-o", str(out))  # fmt: skip
        assert code == 0, err
        sessions = {p.parent.name for p in out.glob("*/*/*/scans")}
        assert sessions == {"DEMO02_S001_MR1", "DEMO01_S002_CT2"}
        code, _, err = cli("download", "-w", server.url, "-s", "NO_SUCH", "-o", str(out))
        assert code == 2
        assert "no project you can see holds session NO_SUCH" in err
        # The same label in a second project: ambiguous.
        requests.put(f"{server.url}/data/projects/DEMO02/subjects/X", auth=ADMIN, timeout=30)
        made = requests.put(
            f"{server.url}/data/projects/DEMO02/subjects/X/experiments/DEMO01_S002_CT2",
            params={"xsiType": "xnat:ctSessionData"}, auth=ADMIN, timeout=30,
        )  # fmt: skip
        assert made.status_code == 201
        code, _, err = cli("download", "-w", server.url, "-s", "DEMO01_S002_CT2", "-o", str(out))
        assert code == 2
        assert "DEMO01_S002_CT2 is in DEMO01, DEMO02" in err
    finally:
        server.stop()


@pytest.mark.parametrize(
    "odd", ["odd:not-a-file-uri", "http://[::1/data/experiments/X/scans/1/resources/R/files/a"]
)
def test_no_silent_gaps(tmp_path: Path, archive: Path, odd: str) -> None:
    """A listing row the client cannot use (a URI that names no file, or one that does not
    even parse), and a named session that is not there, are failures with a reason: never
    'done: … 0 failed' with something missing, never a traceback."""
    server = start_server(archive)
    spoiled: list[str] = []

    class Proxy(PassThrough):
        upstream = server.url

        def edit(self, path: str, answer: requests.Response) -> bytes:
            if "/scans/ALL/files" not in path or "format=json" not in path or spoiled:
                return answer.content
            doc = answer.json()
            rows = doc["ResultSet"]["Result"]
            spoiled.append(rows[0]["Name"])
            rows[0]["URI"] = odd
            return json.dumps(doc).encode()

    url, stop = serve(Proxy)
    try:
        out = tmp_path / "dl"
        code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                              "-s", "NO_SUCH_SESSION", "-o", str(out))  # fmt: skip
        assert code == 1, err
        assert spoiled
        done = text.splitlines()[-1]
        assert done.endswith(" 2 failed"), err
        assert odd in err
        assert "NO_SUCH_SESSION" in err
        assert "Traceback" not in err
    finally:
        stop()
        server.stop()


def failed_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("failed: ")]


def test_a_listing_that_names_another_server_sends_the_client_nowhere(
    tmp_path: Path, archive: Path
) -> None:
    """A server whose file listing names URLs on another host (hostile, or confused by a
    proxy): none of them is fetched, in per-file or zip mode; each of those files fails,
    named, with the reason; the rest of the selection is fetched and verified."""
    server = start_server(archive)
    other, asked, stop_other = elsewhere()
    moved: list[str] = []

    class Proxy(PassThrough):
        upstream = server.url

        def edit(self, path: str, answer: requests.Response) -> bytes:
            if "/scans/ALL/files" not in path or "format=json" not in path:
                return answer.content
            doc = answer.json()
            for row in doc["ResultSet"]["Result"]:
                if "/scans/1/" in row["URI"]:  # scan 1's files are said to be elsewhere
                    moved.append(row["Name"])
                    row["URI"] = other + row["URI"]
            return json.dumps(doc).encode()

    url, stop = serve(Proxy)
    try:
        for mode in ("files", "zip"):
            moved.clear()
            code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                                  "--transfer", mode, "-o", str(tmp_path / mode))  # fmt: skip
            assert code == 1, err
            assert moved
            assert text.splitlines()[-1].endswith(f" {len(moved)} failed"), (mode, text)
            failed = failed_lines(err)
            assert len(failed) == len(moved)
            assert all("names a file on another server" in line for line in failed)
            assert asked == []
    finally:
        stop()
        stop_other()
        server.stop()


def test_a_body_longer_than_listed_is_not_written_on(tmp_path: Path, archive: Path) -> None:
    """A hostile server's body that runs past the size its listing gives: per file, an
    endless-looking body is cut at the listed size, the file fails, named, and nothing of
    it stays; in a zip, a member that inflates past its listed size (a zip bomb) stops the
    zip, and the file is fetched on its own and verified.  Either way the client stops
    reading long before the server stops sending."""
    import zlib

    server = start_server(archive)
    flood = 64 * 1024 * 1024  # what the hostile server would send of each overlong body
    sent: dict[str, int] = {}
    target: list[str] = ["", ""]  # [flood the file?, its name]

    class Proxy(PassThrough):
        upstream = server.url
        protocol_version = "HTTP/1.1"

        def intercept(self, path: str) -> bool:
            plain = path.split("?")[0]
            if target[0] and plain.endswith("/files/" + target[1]) and "zip" not in path:
                self._flood("file", b"A" * 65536)
                return True
            if "/scans/1/resources/" in plain and plain.endswith("/files") and "zip" in path:
                self._zip_bomb()
                return True
            return False

        def _flood(self, what: str, piece: bytes, head: bytes = b"") -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            sent[what] = 0
            try:
                if head:
                    self.wfile.write(head)
                while sent[what] < flood:
                    self.wfile.write(piece)
                    sent[what] += len(piece)
            except OSError:
                pass  # the client hung up: what this test wants

        def _zip_bomb(self) -> None:
            # One local header for the scan's first file, then deflate data that goes on
            # and on (no sizes in the header: a streamed member).  Random bytes, so that
            # what is sent is what would be written: a client without the limit would write
            # all of it, and the proxy would get to send all of it.
            name = target[1].encode()
            header = (b"PK\x03\x04" + bytes([20, 0, 8, 0, 8, 0]) + b"\0" * 16
                      + len(name).to_bytes(2, "little") + b"\0\0" + name)  # fmt: skip
            squeeze = zlib.compressobj(1, zlib.DEFLATED, -15)
            piece = squeeze.compress(os.urandom(1024 * 1024)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
            self._flood("zip", piece, header)

    url, stop = serve(Proxy)
    session = "/data/projects/DEMO01/experiments/DEMO01_S001_MR1"
    rows = requests.get(f"{server.url}{session}/scans/1/resources/DICOM/files",
                        params={"format": "json"}, auth=("admin", "admin"), timeout=30
                        ).json()["ResultSet"]["Result"]  # fmt: skip
    first = sorted(rows, key=lambda r: r["Name"])[0]
    target[:] = ["flood it", first["Name"]]
    try:
        out = tmp_path / "files"
        code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                              "--scan-type", "T1w", "--resource", "DICOM", "--transfer",
                              "files", "-o", str(out))  # fmt: skip
        assert code == 1, err
        assert text.splitlines()[-1].endswith(" 1 failed"), text
        assert f"the server sent more than the {first['Size']} bytes it lists" in err
        assert not list(out.rglob(first["Name"] + "*"))
        assert sent["file"] < flood

        target[0] = ""  # the file itself now passes through; its zip is the bomb
        code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                              "--scan-type", "T1w", "--resource", "DICOM", "--transfer", "zip",
                              "-o", str(tmp_path / "zip"))  # fmt: skip
        assert code == 0, err
        assert text.splitlines()[-1].endswith(" 0 failed"), text
        assert sent["zip"] < flood
    finally:
        stop()
        server.stop()


def test_redirects_are_followed_only_on_the_same_server(tmp_path: Path, archive: Path) -> None:
    """A redirect to another path of the same server is followed (the file verifies); one
    to another host is not (that file fails, named, and the other host hears nothing)."""
    server = start_server(archive)
    other, asked, stop_other = elsewhere()

    class Proxy(PassThrough):
        upstream = server.url

        def intercept(self, path: str) -> bool:
            if "/files/" not in path or "format=" in path:
                return False
            if "/scans/1/" in path:
                self.redirect(other + path)
                return True
            if not path.startswith("/moved"):
                self.redirect("/moved" + path)  # relative: this server
                return True
            self.path = path.removeprefix("/moved")
            return False

    url, stop = serve(Proxy)
    try:
        out = tmp_path / "dl"
        code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                              "--transfer", "files", "-o", str(out))  # fmt: skip
        assert code == 1, err
        failed = failed_lines(err)
        assert failed
        assert all("/scans/1-" in line and "another server" in line for line in failed), failed
        total = int(text.splitlines()[-1].split()[1])
        assert text.splitlines()[-1].endswith(
            f"{total - len(failed)} verified, {len(failed)} failed"
        )
        assert list(out.rglob("*.dcm"))  # the other scans' files came by the same-server detour
        assert asked == []
    finally:
        stop()
        stop_other()
        server.stop()


def test_a_zip_without_end_is_stopped(tmp_path: Path, archive: Path) -> None:
    """A resource's zip that goes on and on with members the listing does not name (junk
    from a hostile or broken server) is stopped once it runs well past what its files
    hold; the files are then fetched one by one and verified."""
    import struct
    import zlib

    server = start_server(archive)
    flood = 64 * 1024 * 1024
    sent = [0]

    class Proxy(PassThrough):
        upstream = server.url

        def intercept(self, path: str) -> bool:
            plain = path.split("?")[0]
            if not ("/scans/1/resources/" in plain and plain.endswith("/files") and "zip" in path):
                return False
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Connection", "close")
            self.end_headers()
            junk = os.urandom(64 * 1024)
            crc = zlib.crc32(junk)  # whole, well-formed members: only their number is wrong
            try:
                while sent[0] < flood:
                    name = f"junk/{sent[0]}.bin".encode()
                    head = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc,
                                       len(junk), len(junk), len(name), 0)  # fmt: skip
                    self.wfile.write(head + name + junk)
                    sent[0] += len(head) + len(name) + len(junk)
            except OSError:
                pass  # the client hung up
            return True

    url, stop = serve(Proxy)
    try:
        code, text, err = cli("download", "-w", url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                              "--scan-type", "T1w", "--resource", "DICOM", "--transfer", "zip",
                              "-o", str(tmp_path / "dl"))  # fmt: skip
        assert code == 0, err
        assert text.splitlines()[-1].endswith(" 0 failed"), text
        assert sent[0] < flood
    finally:
        stop()
        server.stop()


@pytest.mark.parametrize("transfer", ["zip", "files"])
def test_a_folder_that_cannot_be_written_fails_its_files_not_the_run(
    tmp_path: Path, archive: Path, transfer: str
) -> None:
    """A scan's folder that cannot be made (a file stands where it goes): that scan's files
    fail, each with the reason, the rest are verified, no traceback, exit 1; once the way
    is clear a re-run finishes.  From a zip (whose member cannot be written: the zip stops
    and its files are fetched one by one) as from per-file GETs."""
    server = start_server(archive)
    try:
        out = tmp_path / "dl"
        base = ["-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1", "-o", str(out)]
        code, text, _ = cli("download", *base, "--dry-run", "--json")
        planned = [row["local"] for row in json.loads(text)]
        blocked = next(p for p in planned if "/scans/" in p).rsplit("/", 1)[0]
        (out / blocked).parent.mkdir(parents=True)
        (out / blocked).write_text("in the way")
        code, text, err = cli("download", *base, "--transfer", transfer)
        assert code == 1, err
        assert "Traceback" not in err
        stuck = [p for p in planned if p.startswith(blocked + "/")]
        assert stuck
        assert (
            text.strip()
            .splitlines()[-1]
            .endswith(f"{len(planned) - len(stuck)} verified, {len(stuck)} failed")
        )
        assert any(f"failed: {p}: cannot write {out / p}" in err for p in stuck), err
        (out / blocked).unlink()
        code, text, err = cli("download", *base, "--transfer", transfer)
        assert code == 0, err
        assert text.strip().splitlines()[-1].endswith(f"{len(planned)} verified, 0 failed")
    finally:
        server.stop()


def test_a_damaged_state_database_is_named_with_the_way_out(
    shared_server: Server, tmp_path: Path
) -> None:
    """A state database that is no longer one (cut short, overwritten) is named by
    download and verify with what to do, no traceback; moved aside as the message says,
    the next run re-checks the files already there against the server's MD5 and keeps
    them. A run report cut off mid-line makes status count that run unfinished."""
    out = tmp_path / "out"
    base = ["download", "-w", shared_server.url, "-p", "DEMO01", "-o", str(out)]
    code, _, err = cli(*base, "--json")
    assert code == 0, err
    database = out / ".xnat-downloader" / "state.sqlite"
    good = database.read_bytes()
    for spoil in (b"not a database at all" * 10, good[:2000]):
        database.write_bytes(spoil)
        for command in (base, ["verify", "-o", str(out), "--offline"]):
            code, _, err = cli(*command)
            assert code in (1, 2), err
            assert "Traceback" not in err
            assert f"the state database {database} is damaged" in err
            assert f"mv {database} {database}.damaged" in err
    database.rename(database.with_name("state.sqlite.damaged"))
    code, printed, err = cli(*base, "--json")
    assert code == 0, err
    doc = json.loads(printed)
    assert doc["failed"] == 0
    assert doc["verified"] == doc["files"]
    report = Path(doc["report"])
    report.write_text(report.read_text()[:-20])  # the last line cut short
    code, printed, err = cli("status", "-o", str(out), "--json")
    assert "Traceback" not in err
    assert [r["state"] for r in json.loads(printed)["runs"]] == ["unfinished"]
    code, printed, err = cli("status", "-o", str(out))
    assert code == 1, err
    assert printed.splitlines()[-1].startswith(
        "status: 1 run, 0 done, 0 failed, 0 running, 1 unfinished"
    )

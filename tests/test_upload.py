"""``xnat-downloader upload`` against a running minixnat: the round trip, imports of every
kind, resource files (parallel, resumable, verified), subjects from CSV, and bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server
from tests.standins import PassThrough, serve
from tests.test_download import cli, local_files
from tests.test_minixnat_api import _admin

ADMIN = ("admin", "admin")


def demographics(item: dict[str, Any]) -> dict[str, Any]:
    """The demographics child of a subject's JSON item, as XNAT nests it."""
    child = next(c for c in item["children"] if c["field"] == "demographics")
    fields: dict[str, Any] = child["items"][0]["data_fields"]
    return fields


def put(server: Server, path: str) -> int:
    return requests.put(server.url + path, auth=ADMIN, timeout=30).status_code


@pytest.fixture
def server(serve: Callable[..., Server], archive: Path) -> Server:
    _admin(archive, "user", "add", "cole", "--password", "pw")
    _admin(archive, "project", "member", "DEMO01", "cole", "collaborator")
    started = serve()
    assert put(started, "/data/projects/COPY") == 200
    return started


def scan_dicoms(archive: Path, session: str) -> list[Path]:
    return sorted((archive / "archive" / "DEMO01" / "arc001" / session / "SCANS").glob("*/DICOM/*"))


def md5s(paths: list[Path]) -> list[str]:
    return sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in paths)


def session_md5s(server: Server, project: str, session: str) -> list[str]:
    rows = requests.get(
        f"{server.url}/data/projects/{project}/experiments/{session}/scans/ALL/files?format=json",
        auth=ADMIN,
        timeout=30,
    ).json()["ResultSet"]["Result"]
    return sorted(r["digest"] for r in rows)


def test_round_trip_download_upload_download(server: Server, tmp_path: Path) -> None:
    """Issue 5, item 7: same files, same MD5s, same structure."""
    first = tmp_path / "first"
    code, out, _ = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(first))
    assert code == 0, out
    code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(first / "DEMO01"))
    assert code == 0, err
    # Each session is named by its own label, not the staging label it was imported under.
    sessions = {p.parent.name for p in (first / "DEMO01").glob("*/*/scans")}
    named = {line.rsplit("/", 1)[1] for line in err.splitlines() if line.startswith("session: ")}
    assert named == sessions
    files = len(local_files(first / "DEMO01"))
    assert out.splitlines()[-1].startswith(f"done: {files} files, ")
    assert out.splitlines()[-1].endswith(f"{files} verified, 0 failed")
    second = tmp_path / "second"
    code, _, _ = cli("download", "-w", server.url, "-p", "COPY", "-o", str(second))
    assert code == 0
    assert local_files(second / "COPY") == local_files(first / "DEMO01")
    # A second upload of the same tree: every session is already there with the same
    # content, so nothing is sent and everything verifies; one note per session.
    code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(first / "DEMO01"))
    assert code == 0, err
    assert out.splitlines()[-1].endswith(f"{files} verified, 0 failed")
    assert err.count("is already on the server, verified") == len(sessions)
    assert f"{files} were already on the server" in err  # all of them, not only extras
    # Nothing moved, so no rate (it once said "0 B/s").
    summary = next(line for line in err.splitlines() if "were already on the server" in line)
    assert re.fullmatch(rf"{files} files \(.+\) in \d+\.\d+ s; {files} were already .+", summary)
    assert "failed:" not in err
    code, out, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--overwrite", str(first / "DEMO01")
    )
    assert code == 0, err
    assert out.splitlines()[-1].endswith(f"{files} verified, 0 failed")


def _session_zip(archive: Path, session: str, folder: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in scan_dicoms(archive, session):
            scan = path.parent.parent.name
            zf.write(path, f"{folder}/scans/{scan}/resources/DICOM/files/{path.name}")
    return buf.getvalue()


def test_archive_kinds(server: Server, archive: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "one.zip"
    zipped.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "Z1"))
    tgz = tmp_path / "two.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for path in scan_dicoms(archive, "DEMO01_S001_MR2"):
            tf.add(path, f"T1/scans/{path.parent.parent.name}/resources/DICOM/files/{path.name}")
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("a.zip", _session_zip(archive, "DEMO01_S002_CT2", "B1"))
        zf.writestr("b.zip", _session_zip(archive, "DEMO01_S002_MR1", "B2"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in scan_dicoms(archive, "DEMO01_S001_MR1"):
        shutil.copy(path, flat / f"{path.parent.parent.name}_{path.name}")
    code, out, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--subject", "subA", str(zipped), str(tgz),
        str(bundle),
    )  # fmt: skip
    assert code == 0, err
    assert md5s(scan_dicoms(archive, "DEMO01_S001_MR1")) == session_md5s(server, "COPY", "Z1")
    assert md5s(scan_dicoms(archive, "DEMO01_S001_MR2")) == session_md5s(server, "COPY", "T1")
    assert md5s(scan_dicoms(archive, "DEMO01_S002_CT2")) == session_md5s(server, "COPY", "B1")
    assert "session: /data/archive/projects/COPY/subjects/subA/experiments/B2" in err
    sent = ("DEMO01_S001_MR1", "DEMO01_S001_MR2", "DEMO01_S002_CT2", "DEMO01_S002_MR1")
    n = sum(len(scan_dicoms(archive, s)) for s in sent)
    assert out.splitlines()[-1].startswith(f"done: {n} files, ")
    assert out.splitlines()[-1].endswith(f"{n} verified, 0 failed")
    # A folder of DICOM is zipped while it streams; the server sorts it by the headers.
    code, out, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--subject", "subF", "--session", "F1",
        str(flat),
    )  # fmt: skip
    assert code == 0, err
    assert md5s(list(flat.iterdir())) == session_md5s(server, "COPY", "F1")
    # The prearchive: sent, not yet verifiable, exit 0, and listed there.
    code, out, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--dest", "prearchive", "--session", "P1",
        str(zipped),
    )  # fmt: skip
    assert code == 0, err
    assert "prearchive" in err
    rows = requests.get(f"{server.url}/data/prearchive/projects/COPY", auth=ADMIN, timeout=30)
    assert [r["name"] for r in rows.json()["ResultSet"]["Result"]] == ["P1"]


def test_the_same_archive_sent_again_is_verified_not_refused(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """An archive the importer names from its own contents (no --session), sent again: its
    session is found by the archive's study UID (before it is sent, or on the server's
    409) and compared by content: the same → "already on the server, verified", exit 0, nothing
    failed; some files gone from the server → sent again to add them; other content → one
    line naming --overwrite, exit 1."""
    zipped = tmp_path / "one.zip"
    zipped.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "Z7"))
    sent = ["upload", "-w", server.url, "-p", "COPY", "--subject", "subZ", str(zipped)]
    code, _, err = cli(*sent)
    assert code == 0, err
    wanted = md5s(scan_dicoms(archive, "DEMO01_S001_MR1"))
    assert session_md5s(server, "COPY", "Z7") == wanted

    def sent_through(standin: type[PassThrough]) -> tuple[int, str, str]:
        """The same upload, through ``standin`` in front of the server."""
        proxy, stop = serve(standin)
        try:
            return cli("upload", "-w", proxy, *sent[3:])
        finally:
            stop()

    # Sent again: its study is found on the server before it goes, so the archive is
    # compared, not sent whole again to be told 409 (a re-run over a slow link).
    imports: list[str] = []

    class Recorder(PassThrough):
        upstream = server.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if "/services/import" in path:
                imports.append(path)
            return False

    code, out, err = sent_through(Recorder)
    assert code == 0, err
    assert imports == []
    assert "one.zip: session Z7 is already on the server, verified" in err
    assert out.splitlines()[-1].endswith(f"{len(wanted)} verified, 0 failed")
    # A server whose first listing of study UIDs leaves them out (the look before sending
    # finds nothing): the archive is sent, the 409 is not the end, and the session is
    # found and compared then.
    listings: list[str] = []

    class Forgets(PassThrough):
        upstream = server.url

        def edit(self, path: str, answer: requests.Response) -> bytes:
            if "columns=ID%2Clabel%2CUID" in path or "columns=ID,label,UID" in path:
                listings.append(path)
                if len(listings) == 1:
                    doc = answer.json()
                    for row in doc["ResultSet"]["Result"]:
                        row.pop("UID", None)
                    return json.dumps(doc).encode()
            return answer.content

    code, out, err = sent_through(Forgets)
    assert code == 0, err
    assert len(listings) == 2, listings
    assert "one.zip: session Z7 is already on the server, verified" in err
    # The same study in a zip of another folder is another session (as the importer makes
    # it), not "already on the server": it is sent.
    renamed = tmp_path / "renamed.zip"
    renamed.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "Z8"))
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", "--subject", "subZ",
                       str(renamed))  # fmt: skip
    assert code == 0, err
    assert "is already on the server, verified" not in err
    assert session_md5s(server, "COPY", "Z8") == wanted
    # Files gone from the server (an interrupted earlier run): the archive fills them in.
    rows = requests.get(f"{server.url}/data/projects/COPY/experiments/Z7/scans/ALL/files",
                        params={"format": "json"}, auth=ADMIN, timeout=30).json()  # fmt: skip
    gone = rows["ResultSet"]["Result"][0]["URI"]
    assert requests.delete(server.url + gone, auth=ADMIN, timeout=30).ok
    code, out, err = cli(*sent)
    assert code == 0, err
    assert session_md5s(server, "COPY", "Z7") == wanted
    # The same study with other bytes: refused once, with the flag that replaces them.
    rebuilt = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped) as zf, zipfile.ZipFile(rebuilt, "w") as out_zip:
        names = zf.namelist()
        for name in names:
            data = zf.read(name)
            if name == names[-1]:
                data = data[:-10] + b"0123456789"  # the last file's last pixels, not its header
            out_zip.writestr(name, data)
    code, out, err = cli("upload", "-w", server.url, "-p", "COPY", "--subject", "subZ",
                         str(rebuilt))  # fmt: skip
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, err
    assert "session Z7 is already in COPY with other content" in failed[0]
    assert "add --overwrite" in failed[0]
    assert session_md5s(server, "COPY", "Z7") == wanted


def test_a_zip_with_a_damaged_member_fails_alone(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """A zip whose listing reads but whose data does not is found when its files are
    hashed, just before it would be sent: that session fails, named, with nothing of it on
    the server; the other archives of the upload are imported and verified."""
    good = tmp_path / "good.zip"
    good.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "G1"))
    damaged = bytearray(_session_zip(archive, "DEMO01_S001_MR2", "D1"))
    with zipfile.ZipFile(io.BytesIO(bytes(damaged))) as zf:
        first = zf.infolist()[0]
    start = first.header_offset + 30 + len(first.filename.encode())  # its data, stored
    damaged[start + 1000 : start + 1010] = b"0123456789"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(damaged))
    code, out, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--subject", "subD", str(good), str(bad)
    )  # fmt: skip
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, err
    assert "bad.zip" in failed[0]
    assert "not a readable" in failed[0]
    assert "nothing from it was sent" in failed[0]
    assert md5s(scan_dicoms(archive, "DEMO01_S001_MR1")) == session_md5s(server, "COPY", "G1")
    gone = requests.get(f"{server.url}/data/projects/COPY/experiments/D1", auth=ADMIN, timeout=30)
    assert gone.status_code == 404
    n = len(scan_dicoms(archive, "DEMO01_S001_MR1"))
    assert out.splitlines()[-1].endswith(f"{n} verified, 1 failed")


def test_bodies_of_known_size_go_with_their_length_not_chunked(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """An archive and a resource file are sent with a Content-Length of their size (some
    proxies in front of XNAT refuse chunked request bodies; chunking also costs a copy of
    every byte); a folder, zipped while it streams, has no size until it is sent."""
    zipped = tmp_path / "one.zip"
    zipped.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "L1"))
    loose = tmp_path / "notes.txt"
    loose.write_bytes(b"n" * 70_000)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in scan_dicoms(archive, "DEMO01_S001_MR2")[:3]:
        shutil.copy(path, flat / path.name)
    seen: list[tuple[str, str | None, str | None]] = []

    class Recorder(PassThrough):
        upstream = server.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            framing = (self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))
            seen.append((f"{method} {path.split('?')[0]}", *framing))
            return False

    proxy, stop = serve(Recorder)
    try:
        code, _, err = cli("upload", "-w", proxy, "-p", "COPY", "--subject", "subL", str(zipped))
        assert code == 0, err
        code, _, err = cli("upload", "-w", proxy, "-p", "COPY", "--subject", "subL",
                           "--session", "L2", str(flat))  # fmt: skip
        assert code == 0, err
        code, _, err = cli("upload", "-w", proxy, "-p", "COPY", "--subject", "subL",
                           "--resource", "NOTES", str(loose))  # fmt: skip
        assert code == 0, err
    finally:
        stop()
    imports = [(length, te) for what, length, te in seen if what.endswith("/services/import")]
    assert imports == [(str(zipped.stat().st_size), None), (None, "chunked")]
    puts = [(length, te) for what, length, te in seen if what.endswith("/notes.txt")]
    assert puts == [("70000", None)]


def test_an_archive_that_changes_while_it_is_sent_fails_alone(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """The request announced the archive's size; the file is cut short just as it starts
    to go. That session fails, named, as a local file that changed (not as a network
    failure), and nothing of it is kept; the other archive is imported and verified."""
    from xnat_downloader.api.connection import Connection
    from xnat_downloader.api.upload import upload
    from xnat_downloader.http.credentials import Credentials
    from xnat_downloader.transfer.events import Event, FileStarted

    good = tmp_path / "good.zip"
    good.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "K1"))
    cut = tmp_path / "cut.zip"
    whole = _session_zip(archive, "DEMO01_S001_MR2", "K2")
    cut.write_bytes(whole)

    def sink(event: Event) -> None:
        if isinstance(event, FileStarted) and event.local == "cut.zip":
            cut.write_bytes(whole[: len(whole) // 2])

    conn = Connection(server.url, Credentials("admin", "admin", "test"))
    report = upload(conn, [good, cut], "COPY", subject="subK", sink=sink, jobs=1)
    failed = {o.error for o in report.outcomes if o.status == "failed"}
    assert len(failed) == 1, failed
    (error,) = failed
    assert f"{cut} changed while it was being sent" in error
    assert "run the same command again" in error
    assert md5s(scan_dicoms(archive, "DEMO01_S001_MR1")) == session_md5s(server, "COPY", "K1")
    gone = requests.get(f"{server.url}/data/projects/COPY/experiments/K2", auth=ADMIN, timeout=30)
    assert gone.status_code == 404


def test_a_file_of_a_folder_that_goes_away_while_it_is_sent_is_named(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """A folder is zipped while it streams; one of its files is deleted just as it starts
    to go. The session fails naming that file (not as a network failure, as it was), and
    nothing of it is kept; a folder sent whole before it stands."""
    from xnat_downloader.api.connection import Connection
    from xnat_downloader.api.upload import upload
    from xnat_downloader.http.credentials import Credentials
    from xnat_downloader.transfer.events import Event, FileStarted

    folders = []
    for session, name in (("DEMO01_S001_MR1", "keep"), ("DEMO01_S001_MR2", "lose")):
        folder = tmp_path / name
        folder.mkdir()
        for path in scan_dicoms(archive, session):
            shutil.copy(path, folder / f"{path.parent.parent.name}_{path.name}")
        folders.append(folder)
    victim = sorted(folders[1].iterdir())[-1]

    def sink(event: Event) -> None:
        if isinstance(event, FileStarted) and event.local.startswith("lose/"):
            victim.unlink()

    conn = Connection(server.url, Credentials("admin", "admin", "test"))
    kept = upload(conn, [folders[0]], "COPY", subject="subV", session="V1")
    assert kept.ok
    report = upload(conn, [folders[1]], "COPY", subject="subV", session="V2", sink=sink)
    failed = {o.error for o in report.outcomes if o.status == "failed"}
    assert failed == {f"cannot read {victim} (No such file or directory) while it was being sent"}
    assert md5s(list(folders[0].iterdir())) == session_md5s(server, "COPY", "V1")
    gone = requests.get(f"{server.url}/data/projects/COPY/experiments/V2", auth=ADMIN, timeout=30)
    assert gone.status_code == 404


def test_a_connection_cut_in_mid_body_is_named_as_that(
    server: Server, archive: Path, tmp_path: Path
) -> None:
    """The server reads the first 64 KiB of a large import and closes the connection: the
    failure says so in words (not aiohttp's message with the whole URL and its query), for
    that archive alone, with the re-run that finishes it."""
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("B1/padding.bin", os.urandom(16 * 1024 * 1024))

    class Cutter(PassThrough):
        upstream = server.url

        def do_POST(self) -> None:
            if "/services/import" not in self.path:
                self.do_write()
                return
            self.rfile.read(64 * 1024)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    proxy, stop = serve(Cutter)
    try:
        code, _, err = cli("upload", "-w", proxy, "-p", "COPY", "--subject", "subB", str(big))
    finally:
        stop()
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, err
    assert failed[0].startswith("failed: big.zip: ")
    assert "the connection was closed while the request was being sent" in failed[0]
    assert "run the same command again" in failed[0]
    assert "import-handler" not in err


def test_bad_uploads(server: Server, archive: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "C1")[:5000])
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(truncated))
    assert code == 2  # read locally first: nothing is sent
    assert "not a readable" in err
    junk, empty = tmp_path / "junk.zip", tmp_path / "empty.zip"
    junk.write_bytes(b"not an archive at all\n" * 100)
    empty.write_bytes(b"")
    for path, said in ((junk, "(neither a zip nor a tar file, or cut short)"),
                       (empty, "is empty (0 bytes)")):  # fmt: skip
        code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(path))
        assert code == 2, err
        assert err.startswith(f"error: {path} ")
        assert said in err
        assert err.endswith("nothing from it was sent\n")
        assert len(err.splitlines()) == 1  # not tarfile's list of what it tried
    notdicom = tmp_path / "notes"
    notdicom.mkdir()
    (notdicom / "a.txt").write_text("hello")
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", "--subject", "x", str(notdicom))
    assert code == 1
    assert "not DICOM" in err
    assert "(--ignore-unparsable leaves out the files that are not DICOM)" in err
    # With the flag, a folder of DICOM files and a stray note imports the DICOM files.
    dicoms = scan_dicoms(archive, "DEMO01_S001_MR1")[:3]
    for path in dicoms:
        (notdicom / path.name).write_bytes(path.read_bytes())
    assert cli("project", "create", "-w", server.url, "NOTES")[0] == 0
    code, out, err = cli("upload", "-w", server.url, "-p", "NOTES", "--subject", "x",
                         "--session", "NOTES1", "--ignore-unparsable", str(notdicom))  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[-1].endswith("3 verified, 0 failed")
    assert "1 of its files were not imported" in err
    odd = tmp_path / "file.dcm"
    odd.write_bytes(b"x")
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(odd))
    assert code == 2
    assert "--resource" in err
    zipped = tmp_path / "ok.zip"
    zipped.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "OK1"))
    code, _, err = cli("upload", "-w", server.url, "-p", "NOSUCH", str(zipped))
    assert code == 2
    assert "NOSUCH" in err
    # Wrong twice: what the server refuses (the login, then the project) is said before
    # what is wrong here, though the archives are read while the server is asked.
    code, _, err = cli("upload", "-w", server.url, "-p", "NOSUCH", str(truncated))
    assert code == 2
    assert err.rstrip().endswith(
        f"create it with: xnat-downloader project create -w {server.url} NOSUCH"
    )  # the one piece of advice, not followed by a generic one
    stranger = {"XNAT_USER": "stranger", "XNAT_PASS": "pw"}
    code, _, err = cli("upload", "-w", server.url, "-p", "NOSUCH", str(truncated), env=stranger)
    assert code == 2
    assert "wrong user name or password for 'stranger'" in err
    env = {"XNAT_USER": "cole", "XNAT_PASS": "pw"}
    code, _, err = cli("upload", "-w", server.url, "-p", "DEMO01", str(zipped), env=env)
    assert code == 2
    assert "permission" in err
    code, _, err = cli("upload", "-w", server.url, "-p", "COPY", str(tmp_path / "missing.zip"))
    assert code == 2
    assert "no such file" in err
    # A folder with a broken link and a pipe in it (a pipe would block whoever reads it):
    # refused before anything is read or sent, each named; the same for dicom-send.
    odd_tree = tmp_path / "odd"
    odd_tree.mkdir()
    (odd_tree / "ok.dcm").write_bytes(scan_dicoms(archive, "DEMO01_S001_MR1")[0].read_bytes())
    (odd_tree / "broken.dcm").symlink_to(tmp_path / "nowhere")
    os.mkfifo(odd_tree / "pipe.dcm")
    for argv in (("upload", "-w", server.url, "-p", "COPY", "--subject", "x", str(odd_tree)),
                 ("dicom-send", "--to", "AE@127.0.0.1:9", str(odd_tree))):  # fmt: skip
        code, _, err = cli(*argv)
        assert code == 2, err
        assert err.startswith(f"error: 2 entries under {odd_tree} cannot be read as files"), err
        assert f"{odd_tree / 'broken.dcm'}, {odd_tree / 'pipe.dcm'}" in err
    # Nothing of the refused uploads reached the archive.
    listing = requests.get(f"{server.url}/data/projects/COPY/experiments", auth=ADMIN, timeout=30)
    assert listing.json()["ResultSet"]["Result"] == []


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--resource", "R", "--dest", "prearchive"],
            "not through the import service: leave out --dest",
        ),
        (
            ["--resource", "R", "--importer", "SI", "--ignore-unparsable"],
            "leave out --importer, --ignore-unparsable",
        ),
        (["--scan", "1"], "--scan names the scan whose resource --resource fills"),
        (["--session", "S"], "a subjects .csv names its own subjects: leave out --session"),
    ],
)
def test_flags_an_upload_would_ignore_are_refused_before_any_request(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """They were ignored: a resource upload said nothing of --dest prearchive, a subjects
    .csv nothing of --session.  Nothing listens on the address, so a refusal that came
    after a request would read differently."""
    table = tmp_path / "subjects.csv"
    table.write_text("label\nS1\n")
    target = table if "--session" in flags else tmp_path / "a.zip"
    target.touch()
    code, _, err = cli("upload", "-w", "http://127.0.0.1:9", "-p", "P", *flags, str(target))
    assert code == 2
    assert said in err


def test_resource_upload_parallel_resumable_verified(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "derived"
    (src / "sub").mkdir(parents=True)
    for i in range(12):
        (src / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    (src / "sub" / "deep.json").write_text('{"a": 1}')
    (src / ".hidden").write_text("never sent")
    assert put(server, "/data/projects/COPY/subjects/s1") == 201
    args = ("upload", "-w", server.url, "-p", "COPY", "--subject", "s1", "--resource", "STATS")
    code, out, err = cli(*args, "-j", "6", str(src))
    assert code == 0, err
    assert out.splitlines()[-1].startswith("done: 13 files, ")
    assert out.splitlines()[-1].endswith("13 verified, 0 failed")
    base = f"{server.url}/data/projects/COPY/subjects/s1/resources/STATS/files"
    rows = requests.get(base, auth=ADMIN, timeout=30).json()["ResultSet"]["Result"]
    remote = {r["URI"].split("/files/", 1)[1]: r["digest"] for r in rows}
    expected = {
        p.relative_to(src).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in src.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert remote == expected
    # A re-run sends nothing: every file is already there with the same MD5.
    code, out, err = cli(*args, str(src))
    assert code == 0
    assert "13 were already on the server" in err
    # A changed local file is refused without --overwrite, then replaced with it.
    (src / "f00.txt").write_text("changed")
    code, out, err = cli(*args, str(src))
    assert code == 1
    assert "f00.txt" in err
    assert "--overwrite" in err
    code, out, err = cli(*args, "--overwrite", str(src))
    assert code == 0, err
    assert requests.get(f"{base}/f00.txt", auth=ADMIN, timeout=30).text == "changed"
    # The owner must exist.
    code, _, err = cli(
        "upload", "-w", server.url, "-p", "COPY", "--subject", "nobody", "--resource", "X",
        str(src),
    )  # fmt: skip
    assert code == 2
    assert "nobody" in err


def test_subjects_from_csv(server: Server, tmp_path: Path) -> None:
    sheet = tmp_path / "subjects.csv"
    sheet.write_text(
        "\ufefflabel,gender,dob,handedness,site\r\n"
        "p001,M,1970-01-02,right,Leeds\r\n"
        "p002,female,,left,York\r\n"
        "p003,robot,,,\r\n"
        "bad label,M,,,\r\n"
        "p004,F,31/12/1999,,\r\n"
        "p001,F,,,\r\n",
        encoding="utf-8",
    )
    code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(sheet))
    assert code == 1
    assert out.splitlines()[-1] == "done: 6 subjects, 2 created, 0 updated, 4 failed"
    assert "subjects.csv:4: p003: gender 'robot'" in err
    assert "subjects.csv:5:" in err
    assert "subjects.csv:6: p004: date of birth" in err
    assert "subjects.csv:7: p001: the label repeats line 2" in err
    item = requests.get(
        f"{server.url}/data/projects/COPY/subjects/p001?format=json", auth=ADMIN, timeout=30
    ).json()["items"][0]
    assert demographics(item)["gender"] == "male"
    assert demographics(item)["dob"] == "1970-01-02"
    custom = next(c for c in item["children"] if c["field"] == "fields/field")["items"]
    assert custom[0]["data_fields"] == {"name": "site", "field": "Leeds", "subject_id": item[
        "data_fields"]["ID"]}  # fmt: skip
    # Fixed rows can be sent again: existing subjects are updated, not duplicated.
    sheet.write_text("label,yob\np001,1970\np003,1980\n")
    code, out, _ = cli("upload", "-w", server.url, "-p", "COPY", str(sheet))
    assert code == 0
    assert out.splitlines()[-1] == "done: 2 subjects, 1 created, 1 updated, 0 failed"
    # XNAT's other demographics go where XNAT keeps them (not into custom fields), any case
    # of the column name, each checked for its kind of value.
    sheet.write_text("label,Age,Race,EducationDesc,weight,height\n"
                     "p005,42,Asian,MSc,70.5,180\np006,forty,,,,\np007,,,,heavy,\n")  # fmt: skip
    code, out, err = cli("upload", "-w", server.url, "-p", "COPY", str(sheet))
    assert code == 1
    assert out.splitlines()[-1] == "done: 3 subjects, 1 created, 0 updated, 2 failed"
    assert "subjects.csv:3: p006: age 'forty' is not a whole number" in err
    assert "subjects.csv:4: p007: weight 'heavy' is not a number" in err
    item = requests.get(
        f"{server.url}/data/projects/COPY/subjects/p005?format=json", auth=ADMIN, timeout=30
    ).json()["items"][0]
    assert {k: str(demographics(item)[k]) for k in ("age", "race", "educationDesc")} == {
        "age": "42", "race": "Asian", "educationDesc": "MSc"}  # fmt: skip
    assert float(demographics(item)["weight"]) == 70.5
    assert not [c for c in item["children"] if c["field"] == "fields/field"]


def test_uploads_survive_server_errors(
    serve: Callable[..., Server], archive: Path, tmp_path: Path
) -> None:
    """503s with Retry-After are retried, for resource files and for imports alike."""
    flaky = serve("--error-rate", "0.25", "--chaos-seed", "5")
    src = tmp_path / "files"
    src.mkdir()
    for i in range(10):
        (src / f"{i}.bin").write_bytes(bytes([i]) * 5000)
    code, out, err = cli(
        "upload", "-w", flaky.url, "-p", "DEMO01", "--resource", "EXTRA", "-j", "4", str(src)
    )
    assert code == 0, err
    assert out.splitlines()[-1].endswith("10 verified, 0 failed")
    zipped = tmp_path / "s.zip"
    zipped.write_bytes(_session_zip(archive, "DEMO01_S001_MR1", "FLAKY1"))
    code, out, err = cli(
        "upload", "-w", flaky.url, "-p", "DEMO01", "--subject", "DEMO01_S001", str(zipped)
    )
    assert code == 0, err
    assert md5s(scan_dicoms(archive, "DEMO01_S001_MR1")) == session_md5s(flaky, "DEMO01", "FLAKY1")

"""minixnat's write side over real HTTP: object creation, files, deletes, permissions, the
import service (zip, tar.gz, bundles, flat DICOM), the prearchive, and hostile uploads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server
from tests.test_minixnat_api import _admin

ADMIN = ("admin", "admin")


def demographics(item: dict[str, Any]) -> dict[str, Any]:
    """The demographics child of a subject's JSON item, as XNAT nests it."""
    child = next(c for c in item["children"] if c["field"] == "demographics")
    fields: dict[str, Any] = child["items"][0]["data_fields"]
    return fields


def call(
    server: Server, method: str, path: str, auth: tuple[str, str] | None = ADMIN, **kw: object
) -> requests.Response:
    return requests.request(method, server.url + path, auth=auth, timeout=60, **kw)  # type: ignore[arg-type]


def session_zip(archive: Path, session: str, *, folder: str | None = None) -> bytes:
    """Seed 004's layout, from a demo session's DICOM files on disk."""
    buf = io.BytesIO()
    base = archive / "archive" / "DEMO01" / "arc001" / session / "SCANS"
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(base.glob("*/DICOM/*")):
            scan = path.parent.parent.name
            zf.write(path, f"{folder or session}/scans/{scan}/resources/DICOM/files/{path.name}")
        zf.writestr(f"{folder or session}/scans/1/resources/SNAPSHOTS/files/x.gif", b"GIF89a")
    return buf.getvalue()


def dicom_md5s(archive: Path, session: str) -> list[str]:
    base = archive / "archive" / "DEMO01" / "arc001" / session / "SCANS"
    return sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in base.glob("*/DICOM/*"))


def server_md5s(server: Server, uri: str) -> list[str]:
    rows = call(server, "GET", f"{uri}/scans/ALL/files?format=json").json()["ResultSet"]["Result"]
    return sorted(r["digest"] for r in rows)


@pytest.fixture
def writable(serve: Callable[..., Server], archive: Path) -> tuple[Server, Path]:
    _admin(archive, "user", "add", "mia", "--password", "pw")
    _admin(archive, "user", "add", "cole", "--password", "pw")
    _admin(archive, "project", "member", "DEMO01", "mia", "member")
    _admin(archive, "project", "member", "DEMO01", "cole", "collaborator")
    server = serve()
    assert call(server, "PUT", "/data/projects/NEW?xnat:projectData/name=New").status_code == 200
    return server, archive


def test_object_creation_status_codes(writable: tuple[Server, Path]) -> None:
    server, _ = writable
    assert call(server, "PUT", "/data/projects/NEW").status_code == 200  # exists: an update
    made = call(
        server,
        "PUT",
        "/data/projects/NEW/subjects/s1?gender=F&dob=1970-05-04&handedness=left"
        "&xnat:subjectData/fields/field[name=site]/field=Leeds",
    )
    assert made.status_code == 201
    assert made.text.startswith("XNAT_S")
    again = call(server, "PUT", "/data/projects/NEW/subjects/s1?yob=1970")
    assert (again.status_code, again.text) == (200, made.text)
    item = call(server, "GET", "/data/projects/NEW/subjects/s1?format=json").json()["items"][0]
    assert demographics(item)["gender"] == "female"
    assert demographics(item)["dob"] == "1970-05-04"
    fields = next(c for c in item["children"] if c["field"] == "fields/field")["items"]
    assert fields[0]["data_fields"]["name"] == "site"
    assert fields[0]["data_fields"]["field"] == "Leeds"
    bad = call(server, "PUT", "/data/projects/NEW/subjects/s2?gender=maybe")
    assert bad.status_code == 400
    assert "gender" in bad.text
    assert call(server, "PUT", "/data/projects/NEW/subjects/bad%20label").status_code == 417
    exp = call(
        server, "PUT", "/data/projects/NEW/subjects/s1/experiments/e1?xsiType=xnat:mrSessionData"
    )
    assert exp.status_code == 201
    assert exp.text.startswith("XNAT_E")
    scan = "/data/projects/NEW/subjects/s1/experiments/e1/scans/3"
    assert call(server, "PUT", f"{scan}?xsiType=xnat:mrScanData&type=T1w").status_code == 200
    assert call(server, "PUT", f"{scan}?xsiType=xnat:ctScanData").status_code == 409
    res = f"{scan}/resources/NIFTI"
    assert call(server, "PUT", f"{res}?format=NIFTI").status_code == 200
    assert call(server, "PUT", res).status_code == 409  # Specified resource already exists.
    rows = call(server, "GET", f"{scan}/resources?format=json").json()["ResultSet"]["Result"]
    assert [(r["label"], r["format"]) for r in rows] == [("NIFTI", "NIFTI")]


def test_file_upload_forms_duplicates_extract_and_delete(writable: tuple[Server, Path]) -> None:
    server, _ = writable
    call(server, "PUT", "/data/projects/NEW/subjects/s1")
    res = "/data/projects/NEW/subjects/s1/resources/NOTES"
    # Raw body with inbody=true (pyxnat), a known Content-Type (xnatpy), multipart (the UI).
    assert call(server, "PUT", f"{res}/files/a/one.txt?inbody=true", data=b"one").status_code == 200
    r = call(
        server,
        "POST",
        f"{res}/files/two.txt",
        data=b"two",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200
    r = call(server, "POST", f"{res}/files", files={"f": ("three.txt", b"three")})
    assert r.status_code == 200
    listing = call(server, "GET", f"{res}/files?format=json").json()["ResultSet"]["Result"]
    got = {row["URI"].split("/files/", 1)[1]: row["digest"] for row in listing}
    assert got == {
        "a/one.txt": hashlib.md5(b"one").hexdigest(),
        "two.txt": hashlib.md5(b"two").hexdigest(),
        "three.txt": hashlib.md5(b"three").hexdigest(),
    }
    # XNAT 1.8 keeps an existing file unless overwrite=true, and says so in a 200.
    dup = call(server, "PUT", f"{res}/files/two.txt?inbody=true", data=b"changed")
    assert dup.status_code == 200
    assert json.loads(dup.text) == {"duplicates": ["two.txt"]}
    assert call(server, "GET", f"{res}/files/two.txt").content == b"two"
    call(server, "PUT", f"{res}/files/two.txt?inbody=true&overwrite=true", data=b"changed")
    assert call(server, "GET", f"{res}/files/two.txt").content == b"changed"
    # No data at all is a 400, as XNAT's "didn't provide any data".
    assert call(server, "PUT", f"{res}/files/empty.txt?inbody=true").status_code == 400
    # extract=true unpacks relative to the resource root; zip-slip members are refused.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("sub/x.txt", b"x")
        zf.writestr("y.txt", b"y")
    r = call(server, "PUT", f"{res}/files/bundle.zip?extract=true&inbody=true", data=buf.getvalue())
    assert r.status_code == 200
    assert call(server, "GET", f"{res}/files/sub/x.txt").content == b"x"
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", b"evil")
    r = call(server, "PUT", f"{res}/files/e.zip?extract=true&inbody=true", data=evil.getvalue())
    assert r.status_code == 400
    assert not list(server.root.rglob("escape.txt"))
    # DELETE a file, a folder, the resource.
    assert call(server, "DELETE", f"{res}/files/a/one.txt").status_code == 200
    assert call(server, "DELETE", f"{res}/files/a/one.txt").status_code == 404
    assert call(server, "DELETE", f"{res}/files/sub/").status_code == 200
    assert call(server, "GET", f"{res}/files/sub/x.txt").status_code == 404
    assert call(server, "DELETE", res).status_code == 200
    assert call(server, "GET", f"{res}/files?format=json").status_code == 404


def test_write_permissions(writable: tuple[Server, Path]) -> None:
    server, _ = writable
    mia, cole = ("mia", "pw"), ("cole", "pw")
    base = "/data/projects/DEMO01/subjects"
    assert call(server, "PUT", f"{base}/m1", auth=mia).status_code == 201  # member writes
    assert call(server, "PUT", f"{base}/c1", auth=cole).status_code == 403  # collaborator
    assert call(server, "PUT", f"{base}/g1", auth=None).status_code == 401  # guest
    assert call(server, "PUT", "/data/projects/NEW/subjects/x", auth=mia).status_code == 404
    assert call(server, "DELETE", f"{base}/m1", auth=mia).status_code == 403  # members can't
    assert call(server, "DELETE", f"{base}/m1").status_code == 200  # owners (admin) can
    zipped = session_zip(server.root, "DEMO01_S001_MR1", folder="X1")
    r = call(
        server,
        "POST",
        "/data/services/import?PROJECT_ID=DEMO01&dest=/archive",
        auth=cole,
        data=zipped,
        headers={"Content-Type": "application/zip"},
    )
    assert r.status_code == 403


def test_delete_session_removes_files(writable: tuple[Server, Path]) -> None:
    server, archive = writable
    folder = archive / "archive" / "DEMO01" / "arc001" / "DEMO01_S001_MR1"
    assert folder.exists()
    r = call(
        server, "DELETE", "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    )
    assert r.status_code == 200
    assert not folder.exists()
    assert (
        call(server, "GET", "/data/projects/DEMO01/experiments/DEMO01_S001_MR1").status_code == 404
    )


def _import(
    server: Server, body: bytes, query: str, ctype: str = "application/zip"
) -> requests.Response:
    return call(
        server, "POST", f"/data/services/import?{query}", data=body, headers={"Content-Type": ctype}
    )


def test_import_zip_to_archive_keeps_bytes_and_builds_from_headers(
    writable: tuple[Server, Path],
) -> None:
    server, archive = writable
    r = _import(server, session_zip(archive, "DEMO01_S001_MR1"), "PROJECT_ID=NEW&dest=/archive")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/uri-list")
    uri = "/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    assert r.text == uri + "\r\n"
    assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
    scans = call(server, "GET", f"{uri}/scans?format=json").json()["ResultSet"]["Result"]
    assert {s["xsiType"] for s in scans} == {"xnat:mrScanData"}
    assert all(s["series_description"] and s["type"] == s["series_description"] for s in scans)
    # Other resource folders (SNAPSHOTS) are ignored, as seed 004 says.
    resources = call(server, "GET", f"{uri}/scans/ALL/resources?format=json").json()
    assert {r["label"] for r in resources["ResultSet"]["Result"]} == {"DICOM"}
    session = call(server, "GET", f"{uri}?format=json").json()["items"][0]
    assert session["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert session["data_fields"]["UID"]
    # The same session again without overwrite: 409, archive unchanged.
    again = _import(server, session_zip(archive, "DEMO01_S001_MR1"), "PROJECT_ID=NEW&dest=/archive")
    assert again.status_code == 409
    assert "overwrite" in again.text
    ok = _import(
        server,
        session_zip(archive, "DEMO01_S001_MR1"),
        "PROJECT_ID=NEW&dest=/archive&overwrite=append",
    )
    assert ok.status_code == 200
    assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
    # overwrite=true (as xnat4tests sends it) adds to the session as append does; a value
    # that is neither a mode nor a yes or no is refused, naming the modes.
    zipped = session_zip(archive, "DEMO01_S001_MR1")
    assert _import(server, zipped, "PROJECT_ID=NEW&dest=/archive&overwrite=True").status_code == 200
    assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
    bad = _import(server, zipped, "PROJECT_ID=NEW&dest=/archive&overwrite=sometimes")
    assert bad.status_code == 400
    assert "append" in bad.text
    assert "sometimes" in bad.text


def test_import_tar_gz_flat_dicom_and_bundle(writable: tuple[Server, Path]) -> None:
    server, archive = writable
    # A tar.gz of a flat folder of DICOM: sorted by the headers; xnatpy sends x-tar for it.
    buf = io.BytesIO()
    base = archive / "archive" / "DEMO01" / "arc001" / "DEMO01_S002_CT2" / "SCANS"
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(base.glob("*/DICOM/*")):
            tf.add(path, f"flat/{path.parent.parent.name}_{path.name}")
    r = _import(
        server,
        buf.getvalue(),
        "project=NEW&subject=flat1&session=CT1&dest=/archive/projects/NEW",
        "application/x-tar",
    )
    assert r.status_code == 200, r.text
    uri = r.text.strip()
    assert uri == "/data/archive/projects/NEW/subjects/flat1/experiments/CT1"
    assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S002_CT2")
    scans = call(server, "GET", f"{uri}/scans?format=json").json()["ResultSet"]["Result"]
    assert sorted(s["ID"] for s in scans) == ["1", "2", "3"]  # from SeriesNumber
    assert {s["xsiType"] for s in scans} == {"xnat:ctScanData"}
    # A bundle: a zip of session zips, each a session of its own.
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("a.zip", session_zip(archive, "DEMO01_S001_MR1", folder="B1"))
        zf.writestr("b.zip", session_zip(archive, "DEMO01_S001_MR2", folder="B2"))
    r = _import(server, bundle.getvalue(), "PROJECT_ID=NEW&SUBJECT_ID=bund&dest=/archive")
    assert r.status_code == 200, r.text
    assert sorted(r.text.split("\r\n")[:-1]) == [
        "/data/archive/projects/NEW/subjects/bund/experiments/B1",
        "/data/archive/projects/NEW/subjects/bund/experiments/B2",
    ]


@pytest.mark.parametrize(
    ("body", "query", "status", "words"),
    [
        (b"PK\x03\x04 truncated", "", 400, "corrupt"),
        (b"not an archive at all", "", 400, "not a readable zip"),
        ("non-dicom", "&import-handler=DICOM-zip", 400, "not DICOM"),
        ("ecat", "&import-handler=DICOM-zip", 400, "ECAT"),
        ("slip", "", 400, "outside"),
        ("bomb", "", 400, "zip bomb"),
        ("good", "&import-handler=XAR", 400, "XAR"),
        ("good", "&import-handler=nonsense", 404, "Unknown importer"),
        ("good", "NOPE", 404, "NOPE"),
    ],
)
def test_bad_imports_leave_nothing(
    writable: tuple[Server, Path], body: bytes | str, query: str, status: int, words: str
) -> None:
    server, archive = writable
    if body == "good":
        data = session_zip(archive, "DEMO01_S001_MR1", folder="BAD1")
    elif isinstance(body, str):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            good = session_zip(archive, "DEMO01_S001_MR1", folder="BAD1")
            with zipfile.ZipFile(io.BytesIO(good)) as inner:
                for name in inner.namelist()[:2]:
                    zf.writestr(name, inner.read(name))
            if body == "non-dicom":
                zf.writestr("BAD1/scans/1/resources/DICOM/files/notes.txt", b"hello")
            elif body == "ecat":
                zf.writestr("BAD1/scans/9/resources/ECAT/files/a.v", b"MATRIX72v" + b"\0" * 500)
            elif body == "slip":
                zf.writestr("../../../etc/evil.dcm", b"x")
            elif body == "bomb":
                zf.writestr("BAD1/scans/1/resources/DICOM/files/zeros.dcm", b"\0" * (80 << 20))
        data = buf.getvalue()
    else:
        data = body
    before = call(server, "GET", "/data/projects/NEW/experiments?format=json").json()
    project, extra = ("NOPE", "") if query == "NOPE" else ("NEW", query)
    r = _import(server, data, f"PROJECT_ID={project}&dest=/archive{extra}")
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower()
    after = call(server, "GET", "/data/projects/NEW/experiments?format=json").json()
    assert after == before
    assert not (archive / "archive" / "NEW" / "arc001").exists()
    assert not [p for p in (archive / "tmp").rglob("*") if p.is_file()]
    # With Ignore-Unparsable the non-DICOM file is left out and the rest goes in.
    if body == "non-dicom":
        query = "PROJECT_ID=NEW&dest=/archive&import-handler=DICOM-zip&Ignore-Unparsable=true"
        r = _import(server, data, query)
        assert r.status_code == 200, r.text
        # With no importer named it is XNAT 1.8's session importer (SI), which leaves out
        # what is not DICOM by itself.
        r = _import(server, data, "PROJECT_ID=NEW&dest=/archive&EXPT_LABEL=SI1")
        assert r.status_code == 200, r.text
        assert r.text.strip().endswith("/experiments/SI1")


def test_a_body_the_client_stops_sending_is_kept_nowhere(
    writable: tuple[Server, Path], tmp_path: Path
) -> None:
    """A client that goes away part-way through its body (a killed upload): the server
    once stored what had arrived of an ``inbody`` PUT as the whole file, listed with that
    part's size and MD5.  Now nothing of the request is kept, for a file PUT, a multipart
    upload and an import alike; the import's record says it was cut off."""
    server, archive = writable
    host, port = server.url.removeprefix("http://").split(":")
    auth = base64.b64encode(b"admin:admin").decode()
    boundary = "cutcutcut"
    cases = [
        ("PUT", "/data/projects/NEW/resources/R/files/x.bin?inbody=true",
         "application/octet-stream"),
        ("POST", "/data/projects/NEW/resources/R2/files",
         f"multipart/form-data; boundary={boundary}"),
        ("POST", "/data/services/import?PROJECT_ID=NEW&dest=/archive", "application/zip"),
    ]  # fmt: skip
    part = session_zip(archive, "DEMO01_S001_MR1", folder="CUT1")[:50_000]
    for method, path, ctype in cases:
        head = part
        if ctype.startswith("multipart"):
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                    f"filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    ).encode() + part  # fmt: skip
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(head) * 20}\r\n\r\n".encode()
                + head
            )
            time.sleep(0.3)  # the server has read what came, and waits for the rest
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        activity = call(server, "GET", "/app/activity?format=json").json()["activities"]
        if activity and activity[0]["state"] == "failed":
            break
        time.sleep(0.1)
    for resource in ("R", "R2"):
        listed = call(server, "GET", f"/data/projects/NEW/resources/{resource}/files?format=json")
        assert listed.status_code == 404 or listed.json()["ResultSet"]["Result"] == []
    sessions = call(server, "GET", "/data/projects/NEW/experiments?format=json").json()
    assert sessions["ResultSet"]["Result"] == []
    assert not [p for p in (archive / "archive" / "NEW").rglob("*") if p.is_file()]
    assert not [p for p in (archive / "tmp").rglob("*") if p.is_file()]
    assert activity[0]["message"] == "The upload was cut off."


def test_prearchive_flow(writable: tuple[Server, Path]) -> None:
    server, archive = writable
    # A project set to keep uploads in the prearchive (a new one archives them, as XNAT's).
    assert call(server, "PUT", "/data/projects/NEW/prearchive_code/0").status_code == 200
    r = _import(server, session_zip(archive, "DEMO01_S001_MR1", folder="PRE1"), "PROJECT_ID=NEW")
    assert r.status_code == 200, r.text
    uri = r.text.strip()
    assert uri.startswith("/data/prearchive/projects/NEW/")
    rows = call(server, "GET", "/data/prearchive/projects?format=json").json()["ResultSet"]
    assert "totalRecords" not in rows
    row = rows["Result"][0]
    assert (row["status"], row["name"], row["url"]) == ("READY", "PRE1", uri[5:])
    assert (
        call(server, "GET", "/data/prearchive/projects", auth=("cole", "pw")).json()["ResultSet"][
            "Result"
        ]
        == []
    )  # collaborators see no prearchive
    scans = call(server, "GET", f"{uri}/scans?format=json").json()["ResultSet"]["Result"]
    assert sorted(s["ID"] for s in scans) == ["1", "2", "3"]
    # Archiving a session whose label is taken is a CONFLICT, and the row says so.
    assert call(server, "PUT", "/data/projects/NEW/subjects/s9").status_code == 201
    made = "/data/projects/NEW/subjects/s9/experiments/PRE1?xsiType=xnat:mrSessionData"
    assert call(server, "PUT", made).status_code == 201
    clash = call(server, "POST", f"/data/services/archive?src={uri[5:]}")
    assert clash.status_code == 409
    one = call(server, "GET", f"{uri}?format=json").json()["ResultSet"]["Result"][0]
    assert one["status"] == "CONFLICT"
    done = call(server, "POST", f"/data/services/archive?src={uri[5:]}&session=PRE1b&subject=s9")
    assert done.status_code == 200, done.text
    assert done.text == "/data/archive/projects/NEW/subjects/s9/experiments/PRE1b\r\n"
    assert server_md5s(server, done.text.strip()) == dicom_md5s(archive, "DEMO01_S001_MR1")
    assert call(server, "GET", f"{uri}?format=json").status_code == 404  # gone from prearchive
    # Move and delete.
    r = _import(server, session_zip(archive, "DEMO01_S001_MR2", folder="PRE2"), "PROJECT_ID=NEW")
    src = r.text.strip()[5:]
    moved = call(server, "POST", f"/data/services/prearchive/move?src={src}&newProject=DEMO01")
    assert moved.status_code == 200
    rows = call(server, "GET", "/data/prearchive/projects/DEMO01").json()["ResultSet"]["Result"]
    assert [r["name"] for r in rows] == ["PRE2"]
    gone = call(server, "POST", f"/data/services/prearchive/delete?src={rows[0]['url']}")
    assert gone.status_code == 200
    assert call(server, "GET", "/data/prearchive/projects").json()["ResultSet"]["Result"] == []
    assert not list((archive / "prearchive").rglob("*.dcm"))


@pytest.mark.clients
def test_xnatpy_upload_and_import(writable: tuple[Server, Path], tmp_path: Path) -> None:
    import xnat

    server, archive = writable
    with xnat.connect(server.url, user="admin", password="admin", no_parse_model=False) as s:
        project = s.projects["NEW"]
        subject = s.classes.SubjectData(parent=project, label="py1")
        session = s.classes.MrSessionData(parent=subject, label="pyses")
        # xnatpy names a new scan by its type (its lookup field) in the PUT URL.
        scan = s.classes.MrScanData(parent=session, type="T1")
        resource = s.classes.ResourceCatalog(parent=scan, label="NIFTI", format="NIFTI")
        local = tmp_path / "t1.nii.gz"
        local.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 40)
        resource.upload(str(local), "t1.nii.gz")
        files = (
            s.projects["NEW"]
            .subjects["py1"]
            .experiments["pyses"]
            .scans["T1"]
            .resources["NIFTI"]
            .files
        )
        assert list(files.keys()) == ["t1.nii.gz"]
        got = tmp_path / "back.nii.gz"
        files["t1.nii.gz"].download(str(got))
        assert got.read_bytes() == local.read_bytes()
        zipped = tmp_path / "session.zip"
        zipped.write_bytes(session_zip(archive, "DEMO01_S001_MR1", folder="PYIMP"))
        made = s.services.import_(str(zipped), project="NEW", subject="py2", destination="/archive")
        assert made.label == "PYIMP"
        uri = "/data/archive/projects/NEW/subjects/py2/experiments/PYIMP"
        assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
        pre = s.services.import_(str(zipped), project="NEW", subject="py3", experiment="PYPRE",
                                 destination="/prearchive")  # fmt: skip
        assert pre.status == "READY"
        archived = pre.archive()
        assert archived.label == "PYPRE"


def test_import_ignores_other_resources_of_seed_layout(writable: tuple[Server, Path]) -> None:
    """Seed 004: only DICOM and ECAT resources are read; NIFTI (even gzipped, which looks
    like an archive), SNAPSHOTS and the session's own resources are left out, not refused."""
    server, archive = writable
    base = archive / "archive" / "DEMO01" / "arc001" / "DEMO01_S001_MR1" / "SCANS"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(base.glob("*/DICOM/*")):
            scan = path.parent.parent.name
            zf.write(path, f"SESS/scans/{scan}/resources/DICOM/files/{path.name}")
        gz = io.BytesIO()
        with tarfile.open(fileobj=gz, mode="w:gz") as tf:
            info = tarfile.TarInfo("inner.nii")
            tf.addfile(info, io.BytesIO(b""))
        zf.writestr("SESS/scans/1/resources/NIFTI/files/sub/t1.nii.gz", gz.getvalue())
        zf.writestr("SESS/scans/99/resources/NIFTI/files/only.nii", b"not dicom")
        zf.writestr("SESS/resources/NOTES/files/readme.txt", b"not dicom")
    r = _import(server, buf.getvalue(), "PROJECT_ID=NEW&dest=/archive")
    assert r.status_code == 200, r.text
    uri = "/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/SESS"
    assert server_md5s(server, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
    scans = call(server, "GET", f"{uri}/scans?format=json").json()["ResultSet"]["Result"]
    assert "99" not in {s["ID"] for s in scans}  # a scan with no DICOM is no scan


def test_project_prearchive_code_decides_where_uploads_go(writable: tuple[Server, Path]) -> None:
    server, archive = writable
    body = session_zip(archive, "DEMO01_S001_MR1", folder="AUTO1")
    assert call(server, "PUT", "/data/projects/NEW/prearchive_code/4").ok
    assert call(server, "GET", "/data/projects/NEW/prearchive_code").text == "4"
    # No destination: code 4 archives.
    r = _import(server, body, "PROJECT_ID=NEW")
    assert r.text.startswith("/data/archive/projects/NEW/"), r.text
    # A destination said out loud wins over the code.
    r = _import(
        server,
        session_zip(archive, "DEMO01_S001_MR2", folder="PRE9"),
        "PROJECT_ID=NEW&dest=/prearchive",
    )
    assert r.text.startswith("/data/prearchive/projects/NEW/"), r.text
    # Code 5 archives over an existing session (its files replaced) instead of refusing.
    assert _import(server, body, "PROJECT_ID=NEW").status_code == 409
    assert call(server, "PUT", "/data/projects/NEW/prearchive_code/5").ok
    assert _import(server, body, "PROJECT_ID=NEW").status_code == 200
    # Only owners change it; a bad code is refused.
    refused = call(server, "PUT", "/data/projects/DEMO01/prearchive_code/4", auth=("mia", "pw"))
    assert refused.status_code == 403  # a member, not an owner
    assert call(server, "PUT", "/data/projects/NEW/prearchive_code/9").status_code == 400


def test_catalog_refresh_reconciles_a_resource_with_its_folder(
    writable: tuple[Server, Path],
) -> None:
    """XNAT's catalog refresh (xnatpy's ``services.refresh_catalog``): files put into a
    resource folder by hand are recorded with their MD5 (``append``), a row whose file is
    gone is forgotten (``delete``), a file that changed size gets its new size and MD5
    (``populateStats``); with no option nothing changes; a collaborator may not; an unknown
    option is refused.  ``minixnat check`` then finds the archive consistent."""
    import subprocess

    import xnat

    from tests.conftest import BIN

    server, archive = writable
    session = "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    folder = archive / "archive" / "DEMO01" / "arc001" / "DEMO01_S001_MR1" / "RESOURCES" / "QC"
    listed = call(server, "GET", f"{session}/resources/QC/files?format=json").json()
    (kept,) = [row["Name"] for row in listed["ResultSet"]["Result"]]
    (folder / "by-hand.txt").write_text("added by hand")
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper.txt").write_text("deeper")
    (folder / kept).write_text("grown since it was stored")
    scan_file = next((folder.parent.parent / "SCANS" / "1" / "DICOM").iterdir())
    scan_file.unlink()

    def files(path: str) -> dict[str, tuple[int, str]]:
        rows = call(server, "GET", f"{path}/files?format=json").json()["ResultSet"]["Result"]
        return {r["Name"]: (int(r["Size"]), r["digest"]) for r in rows}

    before = files(f"{session}/resources/QC")
    refresh = "/data/services/refresh/catalog"
    assert call(server, "POST", refresh, params={"resource": session}).text == ""
    assert files(f"{session}/resources/QC") == before
    assert call(server, "POST", refresh, params={"resource": session}, auth=("cole", "pw")
                ).status_code == 403  # fmt: skip
    bad = call(server, "POST", refresh, params={"resource": session, "options": "shuffle"})
    assert bad.status_code == 400
    assert "shuffle" in bad.text
    nowhere = {"resource": f"{session}/resources/NOPE", "options": "append"}
    assert call(server, "POST", refresh, params=nowhere).status_code == 404

    with xnat.connect(server.url, user="admin", password="admin") as connection:
        connection.services.refresh_catalog(session, append=True, delete=True, populate_stats=True)
    after = files(f"{session}/resources/QC")
    md5 = hashlib.md5
    assert after["by-hand.txt"] == (13, md5(b"added by hand").hexdigest())
    assert after["deeper.txt"] == (6, md5(b"deeper").hexdigest())
    grown = (folder / kept).read_bytes()
    assert after[kept] == (len(grown), md5(grown).hexdigest())
    assert scan_file.name not in files(f"{session}/scans/1/resources/DICOM")
    checked = subprocess.run(
        [BIN / "minixnat", "check", "--root", str(archive)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout


def test_import_keeps_the_scanner_site_and_timing_from_the_headers(
    writable: tuple[Server, Path], tmp_path: Path
) -> None:
    """What XNAT keeps of the headers: the session's scanner (with its manufacturer and
    model), site, operator, accession number and patient ID and name; each scan's scanner
    and MR timing (TR, TE, TI, flip angle).  In the XML as XNAT writes it, as listing
    columns, and through xnatpy; a field the header lacks is left out, not written empty."""
    import xnat

    from tests.dicomfiles import series_files

    server, _ = writable
    folder = tmp_path / "dicom"
    study = "1.2.826.0.1.3680043.8.498.99"
    series_files(folder, 2, study=study, series_number=1, series_description="t1",
                 StationName="MRC35", Manufacturer="SIEMENS", ManufacturerModelName="Skyra",
                 InstitutionName="Hospital", OperatorsName="Op^One", AccessionNumber="ACC1",
                 RepetitionTime=2300, EchoTime=2.98, InversionTime=900, FlipAngle=9)  # fmt: skip
    series_files(folder, 1, study=study, series_number=2, series_description="t2",
                 StationName="MRC35", RepetitionTime=3200)  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for path in sorted(folder.glob("*.dcm")):
            out.write(path, path.name)
    made = _import(
        server, buf.getvalue(), "PROJECT_ID=NEW&SUBJECT_ID=S1&EXPT_LABEL=E1&dest=/archive"
    )
    assert made.status_code == 200, made.text
    session = "/data/projects/NEW/experiments/E1"
    xml = call(server, "GET", f"{session}?format=xml").text
    assert '<xnat:scanner manufacturer="SIEMENS" model="Skyra">MRC35</xnat:scanner>' in xml
    for part in (
        "<xnat:acquisition_site>Hospital<",
        "<xnat:operator>Op^One<",
        "<xnat:dcmAccessionNumber>ACC1<",
        "<xnat:dcmPatientId>PID001<",
        "<xnat:dcmPatientName>Doe^Jane<",
        "<xnat:parameters><xnat:tr>2300.0</xnat:tr><xnat:te>2.98</xnat:te>"
        "<xnat:ti>900.0</xnat:ti><xnat:flip>9.0</xnat:flip></xnat:parameters>",
    ):
        assert part in xml, part  # fmt: skip
    assert "<xnat:te>" not in xml.split('<xnat:scan ID="2"')[1]  # not in that header
    listed = call(
        server, "GET", "/data/projects/NEW/experiments",
        params={"format": "json", "columns": "label,xnat:mrSessionData/scanner"},
    ).json()["ResultSet"]["Result"]  # fmt: skip
    assert [(r["label"], r["xnat:mrsessiondata/scanner"]) for r in listed] == [("E1", "MRC35")]
    with xnat.connect(server.url, user="admin", password="admin") as connection:
        experiment = connection.projects["NEW"].experiments["E1"]
        assert experiment.scanner == "MRC35"
        assert experiment.acquisition_site == "Hospital"
        scan = experiment.scans["1"]
        assert scan.scanner == "MRC35"
        assert (scan.parameters.tr, scan.parameters.te, scan.parameters.flip) == (2300, 2.98, 9)
        assert experiment.scans["2"].parameters.tr == 3200
        assert connection.scanners == ["MRC35"]  # /data/archive/scanners, each once
    # A user who may not read project NEW is not told its scanners.
    assert call(server, "GET", "/data/archive/scanners?format=json", auth=("cole", "pw")
                ).json()["ResultSet"]["Result"] == []  # fmt: skip

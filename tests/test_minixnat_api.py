"""minixnat's REST API, checked over real HTTP against what XNAT 1.8 sends."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pydicom
import pytest
import requests

from tests.conftest import BIN, Server, make_archive, start_server

ADMIN = ("admin", "admin")


def get(
    server: Server, path: str, auth: tuple[str, str] | None = ADMIN, **kw: object
) -> requests.Response:
    return requests.get(server.url + path, auth=auth, timeout=30, **kw)  # type: ignore[arg-type]


def test_listing_envelope_is_xnat_shaped(shared_server: Server) -> None:
    r = get(shared_server, "/data/projects")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    text = r.text
    assert text.startswith('{"ResultSet":{"Result":[')
    assert text.endswith(', "totalRecords": "2"}}')
    rows = r.json()["ResultSet"]["Result"]
    assert {row["ID"] for row in rows} == {"DEMO01", "DEMO02"}
    assert all(isinstance(v, str) for row in rows for v in row.values())
    assert rows[0]["URI"] == f"/data/projects/{rows[0]['ID']}"


def test_columns_always_keep_uri_and_csv_works(shared_server: Server) -> None:
    r = get(shared_server, "/data/projects/DEMO01/experiments?format=csv&columns=ID,xsiType")
    lines = r.text.splitlines()
    assert lines[0] == "ID,xsiType,URI"
    assert all(line.count(",") == 2 for line in lines[1:])
    xml = get(shared_server, "/data/projects?format=xml").text
    assert xml.startswith('<ResultSet totalRecords="2">')


def test_prefix_aliases_and_label_or_id(shared_server: Server) -> None:
    by_label = get(
        shared_server, "/data/archive/projects/DEMO01/subjects/DEMO01_S001/experiments?format=json"
    ).json()
    sid = json.loads(get(shared_server, "/REST/projects/DEMO01/subjects").text)["ResultSet"][
        "Result"
    ][0]["ID"]
    by_id = get(shared_server, f"/data/projects/DEMO01/subjects/{sid}/experiments").json()
    assert by_label == by_id
    # Un-scoped paths need the accession ID: a label is a 404, as in XNAT.
    assert get(shared_server, "/data/subjects/DEMO01_S001?format=json").status_code == 404


def test_experiment_filters_and_global_listing(shared_server: Server) -> None:
    rows = get(
        shared_server,
        "/data/experiments?xsiType=xnat:mrSessionData&project=DEMO01"
        "&columns=ID,label,subject_label",
    ).json()["ResultSet"]
    assert rows["title"] == "Matching experiments"
    assert rows["Result"]
    assert all(r["label"].startswith("DEMO01_") for r in rows["Result"])
    all_rows = get(shared_server, "/data/experiments?format=json").json()["ResultSet"]["Result"]
    dated = get(shared_server, "/data/experiments?date=01/01/2000-12/31/2100").json()
    assert len(dated["ResultSet"]["Result"]) == len(all_rows)
    bad = get(shared_server, "/data/experiments?date=notadate")
    assert bad.status_code == 400


def test_single_object_json_and_xml(shared_server: Server) -> None:
    doc = get(shared_server, "/data/projects/DEMO01/experiments/DEMO01_S001_MR1?format=json").json()
    item = doc["items"][0]
    assert item["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert item["meta"]["isHistory"] is False
    assert item["data_fields"]["label"] == "DEMO01_S001_MR1"
    assert item["data_fields"]["subject_ID"].startswith("XNAT_S")
    xml = get(shared_server, "/data/projects/DEMO01/experiments/DEMO01_S001_MR1?format=xml")
    assert "<xnat:MRSession" in xml.text
    assert 'xsi:type="xnat:mrScanData"' in xml.text


def test_scan_and_file_listings(shared_server: Server) -> None:
    base = "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    scans = get(shared_server, f"{base}/scans").json()["ResultSet"]["Result"]
    qualities = {s["quality"] for s in scans}
    assert qualities <= {"usable", "questionable", "unusable"}
    files = get(shared_server, f"{base}/scans/ALL/files").json()["ResultSet"]
    assert "totalRecords" not in files
    assert files["Columns"] == [{"key": "URI", "serverRoot": ""}]
    row = files["Result"][0]
    assert set(row) == {
        "Name",
        "Size",
        "URI",
        "collection",
        "file_tags",
        "file_format",
        "file_content",
        "cat_ID",
        "digest",
    }
    body = requests.get(shared_server.url + row["URI"], auth=ADMIN, timeout=30).content
    assert hashlib.md5(body).hexdigest() == row["digest"]
    assert len(body) == int(row["Size"])
    resources = get(shared_server, f"{base}/scans/1/resources").json()["ResultSet"]
    assert resources["title"] == "Resources"
    assert "URI" not in resources["Result"][0]


def test_file_headers_and_range(shared_server: Server) -> None:
    base = "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    uri = get(shared_server, f"{base}/scans/1/resources/DICOM/files").json()["ResultSet"]["Result"][
        0
    ]["URI"]
    full = get(shared_server, uri)
    assert full.headers["content-disposition"].startswith('attachment; filename="')
    assert full.headers["etag"].strip('"') == hashlib.md5(full.content).hexdigest()
    assert "last-modified" in full.headers
    part = get(shared_server, uri, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == full.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
    beyond = get(shared_server, uri, headers={"Range": f"bytes={len(full.content)}-"})
    assert beyond.status_code == 416


def test_no_range_switch_sends_whole_body(serve: object) -> None:
    server = serve("--no-range")  # type: ignore[operator]
    uri = get(server, "/data/experiments/XNAT_E00001/scans/1/resources/DICOM/files").json()[
        "ResultSet"
    ]["Result"][0]["URI"]
    r = get(server, uri, headers={"Range": "bytes=10-"})
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)


@pytest.mark.parametrize(
    ("structure", "expect"),
    [
        ("", "DEMO01_S001_MR1/scans/1-T1w/resources/DICOM/files/"),
        ("simplified", "DEMO01_S001_MR1/scans/1/DICOM/"),
        ("legacy", "DEMO01_S001_MR1/SCANS/1/DICOM/"),
        ("improved", "scans/1_T1w/DICOM/"),
    ],
)
def test_zip_structures(shared_server: Server, structure: str, expect: str) -> None:
    r = get(
        shared_server,
        f"/data/experiments/XNAT_E00001/scans/ALL/files?format=zip&structure={structure}",
    )
    assert r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert any(n.startswith(expect) for n in names), names[:3]


def test_zip_with_project_and_subject_and_tar(shared_server: Server) -> None:
    r = get(
        shared_server,
        "/data/experiments/XNAT_E00001/scans/1/files?format=zip"
        "&projectIncludedInPath=true&subjectIncludedInPath=true",
    )
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert all(n.startswith("DEMO01/DEMO01_S001/DEMO01_S001_MR1/scans/1-T1w/") for n in names)
    tgz = get(
        shared_server, "/data/experiments/XNAT_E00001/scans/1/resources/DICOM/files?format=tar.gz"
    )
    with tarfile.open(fileobj=io.BytesIO(tgz.content), mode="r:gz") as tar:
        members = tar.getmembers()
    assert members
    assert all("/files/" in m.name for m in members)


def test_path_tricks_are_refused(shared_server: Server) -> None:
    for path in (
        "/data/experiments/XNAT_E00001/scans/1/resources/DICOM/files/..%2F..%2Fx",
        "/data/experiments/XNAT_E00001/scans/1/resources/DICOM/files/%2e%2e/%2e%2e/minixnat.sqlite",
    ):
        r = requests.get(shared_server.url + path, auth=ADMIN, timeout=30)
        assert r.status_code in (400, 404)
        assert b"SQLite" not in r.content


def test_errors_are_status_pages_never_html_success(shared_server: Server) -> None:
    r = get(shared_server, "/data/projects/NOPE/subjects")
    assert r.status_code == 404
    assert "<h3>" in r.text
    assert get(shared_server, "/data/version").status_code == 404
    assert get(shared_server, "/xapi/siteConfig/buildInfo").json()["version"].startswith("1.8")
    assert get(shared_server, "/xapi/schemas").json() == ["xnat", "xdat", "pipeline/workflow"]
    assert "complexType" in get(shared_server, "/xapi/schemas/xnat").text
    assert 'name="workflowData"' in get(shared_server, "/xapi/schemas/pipeline/workflow").text
    assert get(shared_server, "/schemas/pipeline/workflow.xsd").status_code == 200
    assert get(shared_server, "/xapi/schemas/workflow").status_code == 404


def test_auth_flows(shared_server: Server) -> None:
    anon = requests.get(shared_server.url + "/data/auth", timeout=30)
    assert anon.status_code == 401
    assert anon.headers["www-authenticate"].startswith("Basic")
    bad = get(shared_server, "/data/projects", auth=("admin", "wrong"))
    assert bad.status_code == 401
    s = requests.Session()
    login = s.put(
        shared_server.url + "/data/services/auth",
        data={"username": "admin", "password": "admin"},
        timeout=30,
    )
    assert login.status_code == 200
    assert s.cookies["JSESSIONID"] == login.text
    assert s.get(shared_server.url + "/data/auth", timeout=30).text == "User 'admin' is logged in"
    assert s.delete(shared_server.url + "/data/JSESSION", timeout=30).status_code == 200
    after = s.get(shared_server.url + "/data/projects", timeout=30)
    assert after.status_code == 401  # a dead session is an error, not silent guest access


def test_alias_tokens(shared_server: Server) -> None:
    token = get(shared_server, "/data/services/tokens/issue").json()
    assert len(token["secret"]) == 64
    as_token = get(shared_server, "/data/projects", auth=(token["alias"], token["secret"]))
    assert as_token.status_code == 200
    valid = get(
        shared_server, f"/data/services/tokens/validate/{token['alias']}/{token['secret']}"
    ).json()
    assert valid == {"valid": "admin"}
    assert get(shared_server, f"/data/services/tokens/invalidate/{token['alias']}").json() == {
        "result": "OK"
    }
    refused = get(shared_server, "/data/projects", auth=(token["alias"], token["secret"]))
    assert refused.status_code == 401


def test_session_ttl_expires_cookies(serve: object) -> None:
    import time

    server = serve("--session-ttl", "1")  # type: ignore[operator]
    s = requests.Session()
    s.put(
        server.url + "/data/services/auth",
        data={"username": "admin", "password": "admin"},
        timeout=30,
    )
    assert s.get(server.url + "/data/projects", timeout=30).status_code == 200
    time.sleep(1.5)
    assert s.get(server.url + "/data/projects", timeout=30).status_code == 401


def _admin(archive: Path, *args: str) -> None:
    """``minixnat GROUP ACTION --root ARCHIVE ARGS…``."""
    subprocess.run(
        [BIN / "minixnat", args[0], args[1], "--root", str(archive), *args[2:]], check=True
    )


def test_permissions(archive: Path) -> None:
    _admin(archive, "user", "add", "alice", "--password", "pw")
    _admin(archive, "user", "add", "bob", "--password", "pw")
    _admin(archive, "project", "member", "DEMO01", "alice", "collaborator")
    _admin(archive, "project", "access", "DEMO02", "protected")
    server = start_server(archive)
    try:
        alice = ("alice", "pw")
        bob = ("bob", "pw")
        alice_projects = {
            r["ID"] for r in get(server, "/data/projects", auth=alice).json()["ResultSet"]["Result"]
        }
        assert alice_projects == {"DEMO01", "DEMO02"}
        bob_projects = {
            r["ID"] for r in get(server, "/data/projects", auth=bob).json()["ResultSet"]["Result"]
        }
        assert bob_projects == {"DEMO02"}  # protected: visible, private DEMO01 hidden
        assert get(server, "/data/projects/DEMO01/subjects", auth=bob).status_code == 404
        assert (
            get(server, "/data/experiments/XNAT_E00001/scans/ALL/files", auth=bob).status_code
            == 404
        )
        assert get(server, "/data/projects/DEMO02/subjects", auth=bob).status_code == 403
        assert get(server, "/data/projects/DEMO02/accessibility", auth=bob).text == "protected"
        assert get(server, "/data/projects/DEMO01/subjects", auth=alice).status_code == 200
        guest = requests.get(server.url + "/data/projects", timeout=30).json()
        assert guest["ResultSet"]["Result"] == []
        _admin(archive, "project", "access", "DEMO02", "public")
        guest = requests.get(server.url + "/data/projects/DEMO02/subjects", timeout=30)
        assert guest.status_code == 200
    finally:
        server.stop()


def test_xapi_download_catalog(shared_server: Server) -> None:
    exp = get(shared_server, "/data/experiments/XNAT_E00001?format=json").json()["items"][0]
    fields = exp["data_fields"]
    spec = {
        "sessions": [f"DEMO01:DEMO01_S001:{fields['label']}:XNAT_E00001"],
        "projectIds": ["DEMO01"],
        "scan_types": ["T1w"],
        "scan_formats": ["DICOM"],
        "resources": ["QC"],
        "options": ["simplified"],
    }
    made = requests.post(
        shared_server.url + "/xapi/archive/downloadwithsize", json=spec, auth=ADMIN, timeout=30
    ).json()
    assert int(made["size"]) > 0
    xml = get(shared_server, f"/xapi/archive/download/{made['id']}/xml")
    assert '<cat:entrySet ID="RAW">' in xml.text
    assert 'name="DEMO01_S001_MR1/1/DICOM"' in xml.text
    archive = zipfile.ZipFile(
        io.BytesIO(get(shared_server, f"/xapi/archive/download/{made['id']}/zip").content)
    )
    names = archive.namelist()
    assert any(n.startswith("DEMO01_S001_MR1/1/DICOM/") for n in names)
    assert "DEMO01_S001_MR1/QC/report.txt" in names


def test_demo_data_is_deterministic_real_dicom(tmp_path: Path) -> None:
    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted((root / "archive").rglob("*"))
            if p.is_file()
        }

    a = make_archive(tmp_path / "a", "--projects", "1")
    b = make_archive(tmp_path / "b", "--projects", "1")
    assert digests(a) == digests(b)
    dicoms = [p for p in (a / "archive").rglob("*") if "DICOM" in p.parts and p.is_file()]
    assert dicoms
    study_of: dict[str, set[str]] = {}  # session folder -> StudyInstanceUIDs in it
    series_of: dict[str, set[str]] = {}  # scan folder -> SeriesInstanceUIDs in it
    for path in dicoms:
        ds = pydicom.dcmread(path)
        assert ds.Modality in ("MR", "CT", "PT")
        session = path.parents[3].name  # {session}/SCANS/{scan}/DICOM/{file}
        assert session.startswith(ds.PatientID + "_")  # the subject label
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        study_of.setdefault(session, set()).add(ds.StudyInstanceUID)
        series_of.setdefault(str(path.parent), set()).add(ds.SeriesInstanceUID)
    # One study per session and one series per scan, and none shared between them.
    assert all(len(uids) == 1 for uids in study_of.values())
    assert len({next(iter(u)) for u in study_of.values()}) == len(study_of)
    assert all(len(uids) == 1 for uids in series_of.values())
    assert len({next(iter(u)) for u in series_of.values()}) == len(series_of)


def test_site_elements_xcat_catalog_and_html(shared_server: Server) -> None:
    elements = get(shared_server, "/data/search/elements?format=json").json()["ResultSet"]
    names = {r["ELEMENT_NAME"] for r in elements["Result"]}
    assert {"xnat:projectData", "xnat:subjectData", "xnat:mrSessionData"} <= names
    listed = {
        r["URI"].split("/files/", 1)[1]: r["digest"]
        for r in get(
            shared_server, "/data/experiments/XNAT_E00001/scans/1/files?format=json"
        ).json()["ResultSet"]["Result"]
    }
    xcat = get(shared_server, "/data/experiments/XNAT_E00001/scans/1/files?format=xcat")
    assert xcat.status_code == 200
    assert xcat.text.count("<cat:entry ") == len(listed)
    assert all(f"/files/{name}" in xcat.text for name in listed)
    catalog = get(shared_server, "/data/experiments/XNAT_E00001/scans/1/resources/DICOM")
    assert catalog.status_code == 200
    assert catalog.text.lstrip().startswith("<?xml")
    assert "<cat:Catalog" in catalog.text
    dicom = {n: d for n, d in listed.items() if not n.endswith((".gz", ".json"))}
    assert all(f'URI="{name}"' in catalog.text for name in dicom)
    html = get(shared_server, "/data/projects?format=html")
    assert html.headers["Content-Type"].startswith("text/html")
    assert "<td>DEMO01</td>" in html.text


def test_schema_version_opens_older_refuses_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from minixnat.store import Store, schema

    root = make_archive(tmp_path / "a", "--projects", "1")
    db = root / "minixnat.sqlite"
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='schema_version'")
    assert version.fetchone()[0] == str(schema.SCHEMA_VERSION)
    # A later release with one more migration opens this archive and keeps its data.
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        [*schema.MIGRATIONS, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);"],
    )
    store = Store(root)
    try:
        assert [p.id for p in store.list_projects()] == ["DEMO01"]
    finally:
        store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        schema.SCHEMA_VERSION
    )
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0  # the migration ran
    # An archive newer than the code is refused, with a message saying what to do.
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(schema.SchemaError, match="upgrade minixnat"):
        Store(root)


def test_workflow_records_survive_the_upgrade_that_frees_their_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An archive of schema 7 (statuses limited to the server's four) with snapshot records,
    # one of them deleted, opened by this release: records kept, numbering goes on.
    from minixnat import demodata
    from minixnat.store import Store, StoreError, schema

    with monkeypatch.context() as old:
        old.setattr(schema, "SCHEMA_VERSION", 7)
        old.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:7])
        store = demodata.generate(tmp_path / "a", demodata.DemoSpec(1, 1, 2, 1, 1, 1))
        first, second = store.list_experiments(sessions_only=True)
        kept = store.queue_snapshots(first, user="admin", why="test")
        gone = store.queue_snapshots(second, user="admin", why="test")
        store._exec("DELETE FROM workflows WHERE wrk_id=?", (gone.wrk_id,))
        with pytest.raises(sqlite3.IntegrityError):
            store._exec("UPDATE workflows SET status='Running' WHERE wrk_id=?", (kept.wrk_id,))
        store.close()
    store = Store(tmp_path / "a")
    try:
        assert store.get_workflow(kept.wrk_id) == kept
        record = store.write_workflow({"status": "Running"}, wrk_id=kept.wrk_id)
        assert record.status == "Running"
        added = store.add_workflow(second, "Transfer", "Complete", user="admin")
        assert added.wrk_id == gone.wrk_id + 1  # not the deleted record's number again
        # A client's record is one per experiment, pipeline, launch time and scan: a second
        # made by a PUT that looked before the first was written is refused, not added.
        key = {"pipeline_name": "Recon", "launch_time": "2026-12-01 07:00:00.000"}
        made = store.write_workflow(
            {**key, "data_type": "xnat:mrSessionData", "status": "Running"},
            experiment=first,
            user="admin",
        )
        with pytest.raises(StoreError, match="made meanwhile") as refused:
            store.write_workflow(
                {**key, "data_type": "xnat:mrSessionData", "status": "Queued"},
                experiment=first,
                user="admin",
            )
        assert refused.value.status == 409
        assert [w.wrk_id for w in store.list_workflows(pipelines=["Recon"])] == [made.wrk_id]
    finally:
        store.close()

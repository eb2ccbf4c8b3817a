"""Real third-party XNAT clients (xnatpy, pyxnat, xnatutils) against minixnat, unchanged."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minixnat.testing import MiniXnat
from tests.conftest import BIN, Server

pytestmark = pytest.mark.clients


def test_xnatpy_browse_and_download(shared_server: Server, tmp_path: Path) -> None:
    import xnat

    with xnat.connect(shared_server.url, user="admin", password="admin") as session:
        assert {p.id for p in session.projects.values()} == {"DEMO01", "DEMO02"}
        project = session.projects["DEMO01"]
        subject = project.subjects["DEMO01_S001"]
        experiment = subject.experiments["DEMO01_S001_MR1"]
        assert experiment.label == "DEMO01_S001_MR1"
        # Listed objects need a type xnatpy can read, or it skips them as empty.
        recons = list(experiment.reconstructions.values())
        assert [(r.id, r.type) for r in recons] == [("DEMO01_S001_MR1_recon1", "brain_mask")]
        scan = experiment.scans["1"]
        assert scan.type == "T1w"
        nifti = scan.resources["NIFTI"]
        assert sorted(nifti.files.keys()) == ["T1w.nii.gz", "sidecar/T1w.json"]
        nifti.files["sidecar/T1w.json"].download(str(tmp_path / "side.json"))
        assert b"SeriesDescription" in (tmp_path / "side.json").read_bytes()
        experiment.download_dir(str(tmp_path / "dl"))
        rows = dict(scan.resources["DICOM"].files.items())
        for path, remote in rows.items():
            local = (
                tmp_path
                / "dl"
                / "DEMO01_S001_MR1"
                / "scans"
                / "1-T1w"
                / "resources"
                / "DICOM"
                / "files"
                / path
            )
            assert hashlib.md5(local.read_bytes()).hexdigest() == remote.digest


def test_xnatpy_token_login(shared_server: Server) -> None:
    import requests
    import xnat

    token = requests.get(
        shared_server.url + "/data/services/tokens/issue", auth=("admin", "admin"), timeout=30
    ).json()
    with xnat.connect(shared_server.url, user=token["alias"], password=token["secret"]) as s:
        assert "DEMO01" in s.projects


def test_pyxnat_walk_and_get(shared_server: Server, tmp_path: Path) -> None:
    import pyxnat

    iface = pyxnat.Interface(server=shared_server.url, user="admin", password="admin")
    try:
        assert sorted(iface.select.projects().get()) == ["DEMO01", "DEMO02"]
        experiment = (
            iface.select.project("DEMO01").subject("DEMO01_S001").experiment("DEMO01_S001_MR1")
        )
        assert experiment.scans().get() == ["1", "2", "3"]
        resource = experiment.scan("1").resource("NIFTI")
        assert sorted(resource.files().get()) == ["T1w.json", "T1w.nii.gz"]
        paths = resource.get(str(tmp_path), extract=True)
        assert any(p.endswith("sidecar/T1w.json") for p in paths)
        expected = {
            k.rsplit("/", 1)[-1]: v
            for k, v in server_digests(shared_server, "DEMO01_S001_MR1").items()
            if k in ("T1w.nii.gz", "sidecar/T1w.json")
        }
        got = {Path(p).name: hashlib.md5(Path(p).read_bytes()).hexdigest() for p in paths}
        assert got == expected
        rows = iface.array.experiments(project_id="DEMO01").data
        assert rows
        assert all(r["project"] == "DEMO01" for r in rows)
    finally:
        iface.disconnect()


def test_xnatutils_ls_and_get(shared_server: Server, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XNAT_HOST": shared_server.url,
        "XNAT_USER": "admin",
        "XNAT_PASS": "admin",
        "HOME": str(tmp_path),
    }
    listed = subprocess.run(
        [BIN / "xnat-ls", "-d", "session", "-p", "DEMO01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "DEMO01_S001_MR1" in listed.stdout
    target = tmp_path / "out"
    subprocess.run(
        [BIN / "xnat-get", "DEMO01_S001_MR1", "-t", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()
        for p in (target / "DEMO01_S001_MR1").rglob("*")
        if p.is_file()
    }
    expected = {
        path.rsplit("/", 1)[-1]: digest
        for path, digest in server_digests(shared_server, "DEMO01_S001_MR1").items()
    }
    # xnatutils 0.10 reuses its resource-name loop variable, so after a scan with two
    # resources it looks only for the last one ('NIFTI') in later scans: it fetches scan 1
    # alone here, as it would from a real XNAT.  What it does fetch must match byte for byte.
    scan1 = {n for n in expected if (target / "DEMO01_S001_MR1" / "1-T1w-DICOM" / n).exists()}
    assert len(scan1) >= 3
    assert got
    for name, digest in got.items():
        assert expected[name] == digest, name


def server_digests(server: Server, session: str) -> dict[str, str]:
    """File name -> MD5 for every scan file of ``session`` (project DEMO01)."""
    import requests

    rows = requests.get(
        f"{server.url}/data/projects/DEMO01/experiments/{session}/scans/ALL/files",
        params={"format": "json"},
        auth=("admin", "admin"),
        timeout=30,
    ).json()["ResultSet"]["Result"]
    return {r["URI"].split("/files/", 1)[1]: r["digest"] for r in rows}


def test_xnatpy_cli_list_and_download(shared_server: Server, tmp_path: Path) -> None:
    """xnatpy's own ``xnat`` command: list projects, download an experiment."""
    host = shared_server.url.split("://", 1)[1]
    netrc = tmp_path / "netrc"
    netrc.write_text(
        f"machine {host} login admin password admin\n"
        f"machine {host.split(':')[0]} login admin password admin\n"
    )
    netrc.chmod(0o600)
    common = ["--host", shared_server.url, "-n", str(netrc)]
    env = {**os.environ, "HOME": str(tmp_path)}
    listed = subprocess.run(
        [BIN / "xnat", "list", "projects", *common, "--output-format", "csv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "DEMO01" in listed.stdout
    assert "DEMO02" in listed.stdout
    target = tmp_path / "dl"
    target.mkdir()
    subprocess.run(
        [
            BIN / "xnat",
            "download",
            "experiments",
            *common,
            "DEMO01",
            "DEMO01_S001_MR1",
            str(target),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in target.rglob("*") if p.is_file()
    }
    expected = server_digests(shared_server, "DEMO01_S001_MR1")
    assert expected
    for path, digest in expected.items():
        assert got[path.rsplit("/", 1)[-1]] == digest


def test_pyxnat_file_get_and_scans_download(shared_server: Server, tmp_path: Path) -> None:
    import pyxnat

    iface = pyxnat.Interface(server=shared_server.url, user="admin", password="admin")
    try:
        experiment = iface.select.project("DEMO01").experiment("DEMO01_S001_MR1")
        expected = server_digests(shared_server, "DEMO01_S001_MR1")
        name = sorted(experiment.scan("2").resource("DICOM").files().get())[0]
        path = experiment.scan("2").resource("DICOM").file(name).get(str(tmp_path / "one.dcm"))
        assert hashlib.md5(Path(path).read_bytes()).hexdigest() == expected[name]
        (tmp_path / "scans").mkdir()
        experiment.scans().download(str(tmp_path / "scans"), type="ALL", extract=True)
        got = {
            p.name: hashlib.md5(p.read_bytes()).hexdigest()
            for p in (tmp_path / "scans").rglob("*")
            if p.is_file() and not p.name.endswith(".zip")
        }
        for rel, digest in expected.items():
            assert got[rel.rsplit("/", 1)[-1]] == digest, rel
    finally:
        iface.disconnect()


def test_pyxnat_custom_variables_and_the_subject_form(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """pyxnat's ``add_custom_variables`` edits the project document's study protocols and
    PUTs it back; the definitions come back, survive a plain project PUT, and the Create
    Subject page offers them with their types."""
    import requests
    from pyxnat import Interface

    from tests.test_pages import login

    server = serve()
    config = tmp_path / "pyxnat.cfg"
    config.write_text(f'{{"server": "{server.url}", "user": "admin", "password": "admin"}}')
    project = Interface(config=str(config)).select.project("DEMO01")
    assert project.get_custom_variables()["Subjects"] == {}
    project.add_custom_variables({"Subjects": {"visits": {"site": "string", "visit_no": "int"}}})
    project.add_custom_variables({"MR Sessions": {"scanner": {"coil": "string"}}})
    assert project.get_custom_variables() == {
        "Subjects": {"visits": {"site": "string", "visit_no": "int"}},
        "MR Sessions": {"scanner": {"coil": "string"}},
        "PET Sessions": {},
        "CT Sessions": {},
    }
    renamed = requests.put(
        server.url + "/data/projects/DEMO01?xnat:projectData/description=kept",
        auth=("admin", "admin"),
        timeout=30,
    )
    assert renamed.status_code == 200
    assert project.get_custom_variables()["Subjects"] == {
        "visits": {"site": "string", "visit_no": "int"}
    }
    form = login(server, "admin", "admin").get(server.url + "/app/projects/DEMO01/add-subject")
    assert 'name="field:site"' in form.text
    assert 'visit_no <span class="muted">(int)</span>' in form.text


def test_xnat4tests_data_then_xnatpys_functional_checks(minixnat: MiniXnat, tmp_path: Path) -> None:
    """xnatpy's functional tests run against an XNAT that xnat4tests filled with its
    'dummydicom' data, through xnatpy: the project made if a GET of it fails, the subject
    PUT with its label as a query field, a DICOM zip POSTed to the import service with a
    dest, Direct-Archive and overwrite=True, then PUTs on the session by ID for header
    pulling, scan types and pipelines.  Every step must succeed on minixnat, and xnatpy's
    own checks on what it made (exactly one of each, found by ID and by label) hold."""
    import xnat
    from xnat.core import XNATListing
    from xnat.exceptions import XNATResponseError
    from xnat.mixin import ExperimentData, ProjectData, SubjectData

    from tests.dicomfiles import series_files

    names = ("dummydicomproject", "dummydicomsubject", "dummydicomsession")
    dicom = tmp_path / "dicom"
    study = "1.2.826.0.1.3680043.8.498.7"
    for number, description in enumerate(("t1w", "dwi", "fmap"), start=1):
        series_files(dicom / str(number), 2, study=study, series_number=number,
                     series_description=description)  # fmt: skip
    archive = tmp_path / "dicoms.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for path in sorted(dicom.rglob("*.dcm")):
            out.write(path, path.relative_to(dicom).as_posix())

    project, subject, label = names
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as login:
        project_uri = f"/data/archive/projects/{project}"
        with pytest.raises(XNATResponseError):
            login.get(project_uri)
        login.put(project_uri)
        query = {"xsiType": "xnat:subjectData", "req_format": "qs",
                 "xnat:subjectData/label": subject}  # fmt: skip
        login.put(f"{project_uri}/subjects/{subject}", query=query)
        with pytest.raises(XNATResponseError):
            login.get(f"{project_uri}/subjects/{subject}/experiments/{label}")
        dest = f"/archive/projects/{project}/subjects/{subject}/experiments/{label}"
        with archive.open("rb") as body:
            login.upload_stream(
                "/data/services/import",
                body,
                query={"dest": dest, "Direct-Archive": True, "overwrite": True},
                content_type="application/zip",
                method="post",
            )
        experiment_id = login.projects[project].experiments[label].id
        for action in ("pullDataFromHeaders", "fixScanTypes", "triggerPipelines"):
            login.put(f"/data/experiments/{experiment_id}?{action}=true")

    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        projects = session.projects
        assert isinstance(projects, XNATListing)
        assert len(projects) == 1
        assert isinstance(projects[0], ProjectData)
        assert projects[0].id == project
        assert projects[project] is projects[0]
        subjects = projects[0].subjects
        assert len(subjects) == 1
        assert isinstance(subjects[0], SubjectData)
        assert subjects[0].label == subject
        assert subjects[subjects[0].id] is subjects[0] is subjects[subject]
        experiments = projects[0].experiments
        assert len(experiments) == 1
        assert isinstance(experiments[0], ExperimentData)
        assert experiments[0].label == label
        assert experiments[experiments[0].id] is experiments[0] is experiments[label]
        assert sorted(s.type for s in experiments[0].scans.values()) == ["dwi", "fmap", "t1w"]


def test_objects_named_by_id_at_the_top_of_data_are_updated_where_they_live(
    serve: Callable[..., Server],
) -> None:
    """``PUT /data/experiments/{ID}`` and ``/data/subjects/{ID}`` (xnatpy and xnat4tests
    update objects so) set fields on the object; an ID that names nothing is 404 and
    creates nothing (XNAT creates objects only under a project)."""
    import requests

    server = serve()
    auth = ("admin", "admin")

    def json_of(path: str) -> dict[str, object]:
        got = requests.get(f"{server.url}{path}", params={"format": "json"}, auth=auth, timeout=30)
        assert got.status_code == 200, got.text
        fields: dict[str, object] = got.json()["items"][0]["data_fields"]
        return fields

    rows = requests.get(
        f"{server.url}/data/projects/DEMO01/experiments", params={"format": "json"},
        auth=auth, timeout=30,
    ).json()["ResultSet"]["Result"]  # fmt: skip
    session = next(r for r in rows if r["xsiType"] == "xnat:mrSessionData")["ID"]
    put = requests.put(
        f"{server.url}/data/experiments/{session}?xnat:mrSessionData/note=by-id&fixScanTypes=true",
        auth=auth,
        timeout=30,
    )
    assert put.status_code == 200, put.text
    assert json_of(f"/data/experiments/{session}")["note"] == "by-id"
    subject = json_of(f"/data/experiments/{session}")["subject_ID"]
    assert requests.put(
        f"{server.url}/data/subjects/{subject}?xnat:subjectData/group=control", auth=auth,
        timeout=30,
    ).status_code == 200  # fmt: skip
    assert json_of(f"/data/subjects/{subject}")["group"] == "control"
    missing = requests.put(
        f"{server.url}/data/experiments/XNAT_E99999?note=x", auth=auth, timeout=30
    )
    assert missing.status_code == 404
    assert requests.get(f"{server.url}/data/experiments/XNAT_E99999", auth=auth, timeout=30
                        ).status_code == 404  # fmt: skip


def test_xnat4tests_direct_upload_of_scans_and_resources(
    minixnat: MiniXnat, tmp_path: Path
) -> None:
    """xnat4tests' other way in (its NIfTI data sets): subject, session and scans made as
    xnatpy objects, each scan given a resource filled by ``upload_dir`` as one tar that
    the server unpacks.  Every file arrives with its size under the scan xnatpy named."""
    import xnat

    sources = {"t1w": {"t1w.nii.gz": 5000, "t1w.json": 40}, "t2w": {"t2w.nii.gz": 7000}}
    for scan_type, files in sources.items():
        (tmp_path / scan_type).mkdir()
        for name, size in files.items():
            (tmp_path / scan_type / name).write_bytes(os.urandom(size))
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as login:
        login.put("/data/archive/projects/openneuro")
        project = login.projects["openneuro"]
        subject = login.classes.SubjectData(label="sub01", parent=project)
        session = login.classes.MrSessionData(label="ses01", parent=subject)
        for number, scan_type in enumerate(sources, start=1):
            scan = login.classes.MrScanData(id=number, type=scan_type, parent=session)
            scan.create_resource("NIFTI").upload_dir(str(tmp_path / scan_type), method="tar_file")
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as check:
        session = check.projects["openneuro"].subjects["sub01"].experiments["ses01"]
        found = {
            scan.type: {name: int(f.size) for name, f in scan.resources["NIFTI"].files.items()}
            for scan in session.scans.values()
        }
        assert found == sources


def test_xnatpy_custom_fields_on_subjects_sessions_and_projects(
    serve: Callable[..., Server],
) -> None:
    """``obj.fields[name] = value`` (xnatpy's custom fields) on a project, a subject and a
    session: each kept, read back by name after a fresh connection, deleted with ``del``;
    the object's XML carries them as XNAT writes them."""
    import requests
    import xnat

    server = serve()
    with xnat.connect(server.url, user="admin", password="admin") as session:
        project = session.projects["DEMO01"]
        subject = project.subjects["DEMO01_S001"]
        experiment = project.experiments["DEMO01_S001_MR1"]
        for obj, name in ((project, "grant"), (subject, "mood"), (experiment, "site")):
            obj.fields[name] = f"{name}-value"
            obj.fields["dropped"] = "soon"
            del obj.fields["dropped"]
    with xnat.connect(server.url, user="admin", password="admin") as fresh:
        project = fresh.projects["DEMO01"]
        assert dict(project.fields) == {"grant": "grant-value"}
        assert dict(project.subjects["DEMO01_S001"].fields) == {"mood": "mood-value"}
        assert dict(project.experiments["DEMO01_S001_MR1"].fields) == {"site": "site-value"}
        uri = project.experiments["DEMO01_S001_MR1"].uri
    xml = requests.get(
        server.url + uri, params={"format": "xml"}, auth=("admin", "admin"), timeout=30
    ).text
    assert '<xnat:fields><xnat:field name="site">site-value</xnat:field></xnat:fields>' in xml
    # The document, PUT back as another session, brings its custom fields along.
    copy = xml.replace('label="DEMO01_S001_MR1"', 'label="COPIED"', 1)
    copy = re.sub(r' ID="XNAT_E\d+"', "", copy, count=1)  # the session's own ID, not its scans''
    made = requests.put(
        server.url + "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/COPIED",
        data=copy.encode(),
        headers={"Content-Type": "text/xml"},
        auth=("admin", "admin"),
        timeout=30,
    )
    assert made.status_code == 201, made.text
    with xnat.connect(server.url, user="admin", password="admin") as again:
        assert dict(again.projects["DEMO01"].experiments["COPIED"].fields) == {"site": "site-value"}


def test_xnatpy_makes_a_subject_with_its_demographics_and_a_scan_with_its_own_id(
    minixnat: MiniXnat,
) -> None:
    """xnatpy writes a demographic as ``xnat:subjectData/demographics[@xsi:type=
    xnat:demographicData]/age`` and makes ``MrScanData(id="7", type="T1w")`` with a PUT to
    ``…/scans/T1w`` that names the ID among its fields: as in XNAT, the scan is 7, and the
    age (which has no column of its own) is kept in the subject's demographics, where
    pyxnat's ``attrs`` (a listing column of that path) reads and writes it too."""
    import pyxnat
    import requests
    import xnat

    requests.put(f"{minixnat.url}/data/projects/XD", auth=minixnat.auth, timeout=30)
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        project = session.projects["XD"]
        subject = session.classes.SubjectData(parent=project, label="S1")
        subject.demographics.gender = "female"
        subject.demographics.age = 42
        subject.demographics.education = 16
        made = session.classes.MrSessionData(parent=subject, label="S1_MR1")
        session.classes.MrScanData(parent=made, id="7", type="T1w", series_description="t1")
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as fresh:
        subject = fresh.projects["XD"].subjects["S1"]
        assert subject.demographics.gender == "female"
        assert subject.demographics.age == 42
        assert subject.demographics.education == 16
        scans = fresh.projects["XD"].experiments["S1_MR1"].scans
        assert [(scan.id, scan.type) for scan in scans.values()] == [("7", "T1w")]
    doc = requests.get(f"{minixnat.url}/data/projects/XD/subjects/S1", params={"format": "json"},
                       auth=minixnat.auth, timeout=30).json()  # fmt: skip
    item = doc["items"][0]
    assert not any("demographics" in key for key in item["data_fields"])
    (child,) = [c for c in item["children"] if c["field"] == "demographics"]
    assert child["items"][0]["data_fields"] == {"gender": "female", "age": "42", "education": "16"}
    attrs = (
        pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
        .select("/projects/XD/subjects/S1")
        .attrs
    )
    path = "xnat:subjectData/demographics[@xsi:type=xnat:demographicData]/"
    attrs.set(path + "race", "unknown")
    assert [attrs.get(path + name) for name in ("age", "race", "gender")] == ["42", "unknown",
                                                                              "female"]  # fmt: skip


def test_xnatpy_query_tabulates_the_values_and_makes_the_objects(shared_server: Server) -> None:
    """xnatpy's query interface names each column as a path under the datatype
    (``xnat:mrSessionData/ID``); the answer names it as XNAT does, by the display field
    that reads it (``session_id``), every row with its values; ``all()`` makes each row's
    object from those names, for sessions, subjects and projects."""
    import xnat

    with xnat.connect(shared_server.url, user="admin", password="admin") as session:
        sessions = session.classes.MrSessionData
        rows = sessions.query().filter(sessions.project == "DEMO01").tabulate_dict()
        listed = session.projects["DEMO01"].experiments.values()
        expected = {e.id for e in listed if e.__xsi_type__ == "xnat:mrSessionData"}
        assert {row["session_id"] for row in rows} == expected
        assert {row["project"] for row in rows} == {"DEMO01"}
        assert all(row["subject_id"].startswith("XNAT_S") for row in rows)
        made = sessions.query().filter(sessions.project == "DEMO01").all()
        assert {e.id for e in made} == expected
        assert {type(e).__name__ for e in made} == {"MrSessionData"}
        subjects = session.classes.SubjectData.query().all()
        assert {s.id for s in subjects} == {s.id for s in session.subjects.values()}
        projects = session.classes.ProjectData.query().all()
        assert {p.id for p in projects} == set(session.projects.keys())


def test_xnatpy_lists_scan_types_and_the_servers_uptime(shared_server: Server) -> None:
    """``session.scan_types`` (``/data/archive/scan_types``): each type of MR scan once,
    with its scans' series descriptions, each followed by a comma; ``table=`` picks another
    kind of scan (and a project narrows it) and refuses any other name;
    ``session.xnat_uptime`` reads the server's real uptime."""
    import requests
    import xnat

    def described(experiments: list[Any], xsi_type: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for experiment in experiments:
            if not experiment.__xsi_type__.endswith("SessionData"):
                continue  # an assessor: no scans
            for scan in experiment.scans.values():
                if scan.__xsi_type__ == xsi_type:
                    found[scan.type] = found.get(scan.type, "") + f"{scan.series_description},"
        return found

    with xnat.connect(shared_server.url, user="admin", password="admin") as session:
        mr = described(list(session.experiments.values()), "xnat:mrScanData")
        demo02 = session.projects["DEMO02"].experiments.values()
        ct = described(list(demo02), "xnat:ctScanData")
        rows = session.scan_types
        assert [row["type"] for row in rows] == sorted(mr)
        assert {row["type"]: row["series_descriptions"] for row in rows} == mr
        uptime = session.xnat_uptime
        assert set(uptime) == {"days", "hours", "minutes", "seconds"}
        assert uptime["days"] == uptime["hours"] == 0  # the test server is minutes old
        assert dict(session.plugins) == {}  # /xapi/plugins: none installed
    base, auth = f"{shared_server.url}/data", ("admin", "admin")
    params = {"format": "json", "table": "XNAT_CTSCANDATA"}
    got = requests.get(f"{base}/projects/DEMO02/scan_types", params=params, auth=auth, timeout=30)
    assert got.status_code == 200
    assert {r["type"]: r["series_descriptions"] for r in got.json()["ResultSet"]["Result"]} == ct
    assert ct  # the demo data has CT sessions in DEMO02
    params = {"table": "xdat_user"}
    assert requests.get(f"{base}/archive/scan_types", params=params, auth=auth, timeout=30
                        ).status_code == 403  # fmt: skip
    assert requests.get(f"{base}/projects/NOPE/scan_types", auth=auth, timeout=30
                        ).status_code == 404  # fmt: skip


def test_xnatpy_reads_a_sessions_status_and_is_told_it_cannot_quarantine(
    serve: Callable[..., Server],
) -> None:
    """xnatpy's ``status`` (``…/experiments/{E}/status``) reads ``active``: minixnat keeps
    no quarantine, so ``quarantine()`` is refused (400), not answered yes and ignored, and
    ``activate()`` changes nothing."""
    import xnat
    from xnat.exceptions import XNATResponseError

    server = serve()
    with xnat.connect(server.url, user="admin", password="admin") as session:
        experiment = session.projects["DEMO01"].experiments["DEMO01_S001_MR1"]
        assert experiment.status == "active"
        with pytest.raises(XNATResponseError, match="status 400"):
            experiment.quarantine()
        experiment.activate()
        assert experiment.status == "active"
        assessor = next(iter(experiment.assessors.values()))  # an experiment too
        assert assessor.status == "active"
        with pytest.raises(XNATResponseError, match="status 400"):
            assessor.quarantine()


def test_xnatpy_reads_the_access_level_of_each_project(
    serve: Callable[..., Server], archive: Path
) -> None:
    """``/xapi/access/projects``: the caller's project groups (Owners, Members,
    Collaborators), which xnatpy's ``access_levels`` and ``project.access_level`` read."""
    import xnat

    for args in (("user", "add", "mia", "--password", "pw"),
                 ("project", "member", "DEMO02", "mia", "collaborator")):  # fmt: skip
        subprocess.run([BIN / "minixnat", args[0], args[1], "--root", str(archive), *args[2:]],
                       check=True)  # fmt: skip
    server = serve()
    with xnat.connect(server.url, user="mia", password="pw") as session:
        assert session.access_levels == {"DEMO02": "Collaborators"}
        assert session.projects["DEMO02"].access_level == "Collaborators"
    with xnat.connect(server.url, user="admin", password="admin") as session:
        assert session.access_levels == {"DEMO01": "Owners", "DEMO02": "Owners"}


def test_xnatpy_browses_a_prearchive_session_and_dumps_dicom_headers(
    serve: Callable[..., Server], archive: Path, tmp_path: Path
) -> None:
    """xnatpy's prearchive browser (scans, their resources and files, a file read with
    pydicom, a scan as a zip) and its DICOM dump service, on the prearchive and the
    archive; a dump keeps to the fields asked for, and a src that names nothing is 400."""
    import requests
    import xnat

    server = serve()
    dicoms = sorted((archive / "archive" / "DEMO01").glob("arc001/DEMO01_S001_MR1/SCANS/*/DICOM/*"))
    bundle = tmp_path / "session.zip"
    with zipfile.ZipFile(bundle, "w") as out:
        for path in dicoms:
            out.write(path, path.name)
    with xnat.connect(server.url, user="admin", password="admin") as session:
        session.services.import_(str(bundle), project="DEMO02", destination="/prearchive")
        waiting = session.prearchive.sessions()[0]
        scans = {scan.id: scan for scan in waiting.scans}
        archived = session.projects["DEMO01"].experiments["DEMO01_S001_MR1"]
        assert set(scans) == set(archived.scans.keys())
        scan = scans["1"]
        resource = scan.resources["DICOM"]
        on_server = {f.name: f.size for f in archived.scans["1"].resources["DICOM"].files.values()}
        assert resource.file_count == len(on_server)
        assert resource.file_size == sum(int(v) for v in on_server.values())
        assert {f.name: str(f.size) for f in scan.files} == on_server
        assert scan.read_dicom().SeriesDescription == archived.scans["1"].series_description
        scan.download(str(tmp_path / "scan.zip"))
        names = zipfile.ZipFile(tmp_path / "scan.zip").namelist()
        assert sorted(n.rsplit("/", 1)[-1] for n in names) == sorted(on_server)

        header = scan.dicom_dump(fields=["PatientName", "00080060"])
        assert [(row["tag1"], row["value"]) for row in header] == [
            ("(0008,0060)", "MR"),
            ("(0010,0010)", "DEMO01_S001"),
        ]
        whole = session.services.dicom_dump(archived.uri)
        assert {"tag1", "tag2", "vr", "value", "desc"} <= set(whole[0])
        assert ("(0020,000D)", archived.uid) in {(row["tag1"], row["value"]) for row in whole}
    nowhere = requests.get(
        server.url + "/data/services/dicomdump", params={"src": "/nowhere"},
        auth=("admin", "admin"), timeout=30,
    )  # fmt: skip
    assert nowhere.status_code == 400
    assert "src must name" in nowhere.text


def test_pyxnat_attributes_and_a_new_sessions_summary(serve: Callable[..., Server]) -> None:
    """pyxnat's ``attrs.set``/``attrs.get`` of a custom field on a subject and a session
    (read back through a listing column), and the one-line summary (``repr``) of a
    session just made, which reads its type from a listing filtered by type."""
    from pyxnat import Interface

    server = serve()
    interface = Interface(server.url, "admin", "admin")
    project = interface.select.project("DEMO01")
    subject = project.subject("DEMO01_S001")
    subject.attrs.set("xnat:subjectData/fields/field[name=group]/field", "control")
    assert subject.attrs.get("xnat:subjectData/fields/field[name=group]/field") == "control"
    session = subject.experiment("DEMO01_S001_MR1")
    session.attrs.set("xnat:mrSessionData/fields/field[name=site]/field", "north")
    assert session.attrs.get("xnat:mrSessionData/fields/field[name=site]/field") == "north"
    made = project.subject("NEWSUBJ").experiment("NEWCT")
    made.create(experiments="xnat:ctSessionData", **{"xnat:ctSessionData/date": "2020-01-02"})
    summary = repr(made)
    assert summary.startswith(f"<Experiment Object> {made.id()} `NEWCT`")
    assert "`NEWSUBJ`" in summary


def test_pyxnat_lists_a_projects_attributes_from_the_schema(shared_server: Server) -> None:
    """pyxnat's ``attrs()`` walks the project type of the schema the server serves: the
    paths XNAT's own schema gives, in its order (as pyxnat's own test expects them)."""
    from pyxnat import Interface

    interface = Interface(shared_server.url, "admin", "admin")
    assert interface.select.project("DEMO01").attrs() == []  # no schema loaded yet
    interface.manage.schemas.add("xapi/schemas/xnat")
    paths = [
        "name",
        "type",
        "description",
        "keywords",
        "aliases",
        "aliases/alias",
        "aliases/alias/None",
        "publications",
        "publications/publication",
        "resources",
        "resources/resource",
        "studyProtocol",
        "PI",
        "investigators",
        "investigators/investigator",
        "fields",
        "fields/field",
        "fields/field/None",
    ]
    attrs = interface.select.project("DEMO01").attrs()
    assert attrs == [f"xnat:projectData/{p}" for p in paths]


def test_xnatutils_put_then_get(serve: Callable[..., Server], tmp_path: Path) -> None:
    """``xnat-put`` makes a session and scan and uploads a folder into a resource, checking
    every MD5 the server lists; ``xnat-get`` brings back the same bytes; ``xnat-varput``
    and ``xnat-varget`` set and read custom variables."""
    server = serve()
    env = {**os.environ, "XNAT_HOST": server.url, "XNAT_USER": "admin", "XNAT_PASS": "admin",
           "HOME": str(tmp_path)}  # fmt: skip
    source = tmp_path / "files"
    source.mkdir()
    sent = {"run.dat": os.urandom(3000), "notes.txt": b"camera notes\n"}
    for name, data in sent.items():
        (source / name).write_bytes(data)
    put = subprocess.run(
        [BIN / "xnat-put", "DEMO01_S001_MR7", "cam", str(source), "--create_session",
         "--subject_id", "DEMO01_S001", "--project_id", "DEMO01", "--modality", "MR",
         "--resource_name", "EXT_CAM"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert put.returncode == 0, put.stdout + put.stderr
    target = tmp_path / "out"
    subprocess.run(
        [BIN / "xnat-get", "DEMO01_S001_MR7", "-t", str(target)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    got = {p.name: p.read_bytes() for p in (target / "DEMO01_S001_MR7").rglob("*") if p.is_file()}
    assert got == sent
    # Custom variables of a session and a subject: xnat-varput sets, xnat-varget reads.
    for owner, name, value in (("DEMO01_S001_MR7", "lens", "wide"), ("DEMO01_S001", "arm", "B")):
        subprocess.run([BIN / "xnat-varput", owner, name, value], env=env, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        read = subprocess.run([BIN / "xnat-varget", owner, name], env=env, check=True,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert read.stdout.strip() == value


def test_xnatpy_custom_variables_defined_through_pyxnat(serve: Callable[..., Server]) -> None:
    """Custom variables a project defines (here with pyxnat's ``add_custom_variables``) are
    what xnatpy's ``custom_variables`` offers on subjects and sessions, by definition and
    name, typed by their datatype; values set through it are read back after a fresh
    connection; an undefined name is a KeyError."""
    import xnat
    from pyxnat import Interface

    server = serve()
    Interface(server.url, "admin", "admin").select.project("DEMO01").add_custom_variables(
        {
            "Subjects": {"visits": {"site": "string", "visit_no": "integer"}},
            "MR Sessions": {"scanner": {"coil": "string"}},
        }
    )
    with xnat.connect(server.url, user="admin", password="admin") as session:
        subject = session.projects["DEMO01"].subjects["DEMO01_S001"]
        assert list(subject.custom_variables) == ["visits"]
        visits = subject.custom_variables["visits"]
        assert dict(visits) == {"site": None, "visit_no": None}
        visits["site"] = "north"
        visits["visit_no"] = 3
        with pytest.raises(KeyError):
            visits["height"] = "2"
        mr = session.projects["DEMO01"].experiments["DEMO01_S001_MR1"]
        mr.custom_variables["scanner"]["coil"] = "32ch"
    with xnat.connect(server.url, user="admin", password="admin") as fresh:
        project = fresh.projects["DEMO01"]
        assert dict(project.subjects["DEMO01_S001"].custom_variables["visits"]) == {
            "site": "north",
            "visit_no": 3,
        }
        mr = project.experiments["DEMO01_S001_MR1"]
        assert dict(mr.custom_variables["scanner"]) == {"coil": "32ch"}


def test_xnatpy_scan_parameters(serve: Callable[..., Server]) -> None:
    """A scan's named parameters through xnatpy (``scan.fields["TR"]``, kept as
    ``parameters/addParam[name=TR]``) and one of its own (``parameters.tr``), read back
    after a fresh connection; the XML has them as XNAT writes them."""
    import requests
    import xnat

    server = serve()
    with xnat.connect(server.url, user="admin", password="admin") as session:
        scan = session.projects["DEMO01"].experiments["DEMO01_S001_MR1"].scans["1"]
        assert dict(scan.fields) == {}
        scan.fields["TR"] = "2.3"
        scan.fields["coil"] = "32ch"
        scan.parameters.tr = 2300.0
        uri = scan.uri
    with xnat.connect(server.url, user="admin", password="admin") as fresh:
        scan = fresh.projects["DEMO01"].experiments["DEMO01_S001_MR1"].scans["1"]
        assert dict(scan.fields) == {"TR": "2.3", "coil": "32ch"}
        assert scan.parameters.tr == 2300.0
    xml = requests.get(server.url + uri, params={"format": "xml"}, auth=("admin", "admin"),
                       timeout=30).text  # fmt: skip
    assert '<xnat:addParam name="TR">2.3</xnat:addParam>' in xml


def test_dicom_dump_passes_over_files_that_do_not_read(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A scan whose only DICOM file is malformed (uploaded as it was): the dump answers
    404 saying no file can be read, never a server error; a good file beside it is used."""
    import requests

    from tests.dicomfiles import instance

    server = serve()
    auth = ("admin", "admin")
    scan = "/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1/scans/77"
    assert requests.put(f"{server.url}{scan}?xsiType=xnat:mrScanData", auth=auth,
                        timeout=30).ok  # fmt: skip
    broken = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f" + b"1.2"  # cut short
    put = requests.put(f"{server.url}{scan}/resources/DICOM/files/a.dcm?inbody=true",
                       data=broken, auth=auth, timeout=30)  # fmt: skip
    assert put.ok, put.text
    dump = f"{server.url}/data/services/dicomdump"
    answer = requests.get(dump, params={"src": scan, "format": "json"}, auth=auth, timeout=30)
    assert answer.status_code == 404
    assert "can be read" in answer.text
    good = instance(tmp_path / "b.dcm", study="1.2.3", series_number=77)
    assert requests.put(f"{server.url}{scan}/resources/DICOM/files/b.dcm?inbody=true",
                        data=good.read_bytes(), auth=auth, timeout=30).ok  # fmt: skip
    answer = requests.get(dump, params={"src": scan, "format": "json"}, auth=auth, timeout=30)
    assert answer.status_code == 200
    rows = answer.json()["ResultSet"]["Result"]
    assert ("(0020,0011)", "77") in {(r["tag1"], r["value"]) for r in rows}


def test_xnatpys_imports_without_a_destination_archive_into_a_new_project(
    minixnat: MiniXnat, tmp_path: Path
) -> None:
    """What xnatpy's own functional import tests (``functional_tests/test_import.py``) do
    against XNAT 1.8: ``services.import_`` of a session zip whose scans carry GIF
    snapshots, into a project just made, naming no importer and no destination.  XNAT
    archives it (a new project's uploads go to the archive, code 4; the session importer,
    used when none is named, leaves out what is not DICOM), labelled from the call or else
    from the headers; ``destination="/prearchive"`` keeps it there; ``import_dir`` of a
    folder of series archives it too.  And they list projects in the order XNAT does."""
    import xnat
    from xnat.prearchive import PrearchiveSession

    from tests.dicomfiles import series_files

    folder = tmp_path / "ANON"
    study = "1.2.826.0.1.3680043.8.498.11"
    for number, description in ((3, "PD"), (5, "FLAIR"), (6, "T1")):
        scan = folder / "scans" / f"{number}_{description}"
        series_files(scan / "DICOM", 2, study=study, series_number=number,
                     series_description=description, patient_name="ANON",
                     patient_id="ANON")  # fmt: skip
    snapshots = folder / "scans" / "6_T1" / "SNAPSHOTS"
    snapshots.mkdir()
    (snapshots / "qc.gif").write_bytes(b"GIF89a" + bytes(64))
    archive = tmp_path / "ANON.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(tmp_path).as_posix())

    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        session.put("/data/archive/projects/dummy")
        made = session.services.import_(archive, project="dummy", subject="s1",
                                        experiment="e1", trigger_pipelines=False)  # fmt: skip
        assert isinstance(made, session.classes.MrSessionData)
        assert (made.label, made.project, made.subject.label) == ("e1", "dummy", "s1")
        assert sorted((s.id, s.type) for s in made.scans.values()) == [
            ("3", "PD"), ("5", "FLAIR"), ("6", "T1"),
        ]  # fmt: skip
        waiting = session.services.import_(archive, destination="/prearchive", project="dummy",
                                           subject="s2", experiment="e2")  # fmt: skip
        assert isinstance(waiting, PrearchiveSession)
        assert (waiting.label, waiting.name, waiting.subject) == ("e2", "e2", "s2")
        named = session.services.import_(archive, project="dummy", trigger_pipelines=False)
        assert isinstance(named, session.classes.MrSessionData)
        assert (named.label, named.subject.label) == ("ANON", "ANON")  # Patient ID, Name
        from_dir = session.services.import_dir(folder, project="dummy", subject="s3",
                                               experiment="e3")  # fmt: skip
        assert isinstance(from_dir, session.classes.MrSessionData)
        assert len(from_dir.scans) == 3
        session.put("/data/archive/projects/TRAINING")
    # Projects are listed by ID with upper and lower case together, as XNAT's database
    # sorts them (xnatpy's test_existing_data.py reads them by position).
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as again:
        assert [again.projects[0].id, again.projects[1].id] == ["dummy", "TRAINING"]


def test_xnatpys_map_names_objects_by_the_site_id_xnat4tests_sets(tmp_path: Path) -> None:
    """xnatpy's functional test_map expects the IDs of xnat4tests' XNAT, whose site ID is
    Xnat4Tests: a minixnat given that site ID makes the same ones, and xnatpy's map and
    search over them name every object by them."""
    import xnat
    from xnat import MappingLevel

    from minixnat.testing import start
    from tests.dicomfiles import series_files

    server = start(tmp_path / "archive", site_id="Xnat4Tests")
    try:
        archive = tmp_path / "dicoms.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for number, description in ((2, "t1w"), (6, "fmap")):
                made = series_files(
                    tmp_path / str(number),
                    1,
                    study="1.2.3.4",
                    series_number=number,
                    series_description=description,
                )
                out.write(made[0], f"{number}/{made[0].name}")
        with xnat.connect(server.url, user=server.user, password=server.password) as login:
            login.put("/data/archive/projects/TRAINING")
            dest = "/archive/projects/TRAINING/subjects/CONT01/experiments/CONT01_MR01"
            with archive.open("rb") as body:
                login.upload_stream("/data/services/import", body, method="post",
                                    query={"dest": dest, "overwrite": True},
                                    content_type="application/zip")  # fmt: skip
        with xnat.connect(server.url, user=server.user, password=server.password) as session:
            project = session.projects["TRAINING"]
            subject = "projects/TRAINING/subjects/Xnat4Tests_S00001"
            assert project.map(lambda x: x.label, level=MappingLevel.EXPERIMENT) == {
                f"/data/archive/{subject}/experiments/Xnat4Tests_E00001": "CONT01_MR01"
            }
            scans = f"/data/{subject}/experiments/Xnat4Tests_E00001/scans"
            assert project.map(lambda x: x.type, level=MappingLevel.SCAN) == {
                f"{scans}/2": "t1w",
                f"{scans}/6": "fmap",
            }
            found = session.search(level=MappingLevel.EXPERIMENT, subject="CONT*")
            assert [x.id for x in found] == ["Xnat4Tests_E00001"]
    finally:
        server.stop()

"""minixnat's DICOM receiver, driven by dcmtk's echoscu and storescu (seed 002, issue 15)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from minixnat.dicom.receiver import Incomplete, checked_instance
from minixnat.dicom.routing import Fields, comment_values, route
from tests.conftest import BIN, Server, start_server
from tests.dicomfiles import (
    SYNTAXES,
    archived,
    dcmtk,
    get,
    instance,
    prearchive_files,
    prearchived,
    put,
    receiver_port,
    series_files,
    storescu,
    wait_for,
)

QUIET = "0.5"


@pytest.fixture
def receiver(archive: Path) -> Iterator[Callable[..., tuple[Server, int]]]:
    """Start minixnat with its DICOM receiver on the test's archive: (server, DICOM port)."""
    started: list[Server] = []

    def start(*flags: str) -> tuple[Server, int]:
        server = start_server(archive, "--dicom-port", "0", "--dicom-quiet", QUIET, *flags)
        started.append(server)
        return server, receiver_port(server.process)

    yield start
    for server in started:
        server.stop()


# -- routing, as a pure function -------------------------------------------------------------
def test_comment_values_take_any_separator_and_ignore_other_text() -> None:
    text = "scanned late; Project:P1,Subject: S_01  Session:E1 AA:true  other words"
    assert comment_values(text) == {"project": "P1", "subject": "S_01", "session": "E1",
                                    "aa": "true"}  # fmt: skip


def test_each_of_project_subject_session_comes_from_the_first_rule_that_yields_it() -> None:
    projects = {"P1": "P1", "ALIAS": "P2", "P3": "P3"}
    fields = Fields(
        patient_comments="Subject:S9",
        study_comments="Project:ALIAS Session:E5",
        study_description="P1",
        patient_name="Doe^Jane",
        patient_id="PID",
    )
    found = route(fields, projects.get)
    assert (found.project, found.subject, found.session) == ("P2", "S9", "E5")
    assert found.project_rule == "Study Comments"
    assert not found.auto_archive
    # An unknown project in a comment does not stop the later rules.
    found = route(Fields(patient_comments="Project:NOPE", accession_number="P3"), projects.get)
    assert (found.project, found.project_rule) == ("P3", "Accession Number")
    # Nothing names a project: the AE binding, then unassigned.
    bound = route(Fields(patient_name="N"), projects.get, called_ae="RT", bound={"RT": "P1"})
    assert (bound.project, bound.subject) == ("P1", "N")
    assert route(Fields(), projects.get).project == ""


def test_truncated_or_incomplete_instances_are_recognised(tmp_path: Path) -> None:
    path = instance(tmp_path / "a.dcm", study=generate_uid())
    whole = path.read_bytes()
    checked_instance(whole, "1.2.840.10008.1.2.1")
    for cut in (len(whole) - 1, len(whole) - 3000, 400):
        with pytest.raises(Incomplete):
            checked_instance(whole[:cut], "1.2.840.10008.1.2.1")
    with pytest.raises(Incomplete):
        checked_instance(b"not dicom at all" * 20, "1.2.840.10008.1.2.1")


# -- the receiver, with dcmtk --------------------------------------------------------------
def test_echo_and_a_study_from_storescu_becomes_an_unassigned_prearchive_session(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver()
    echo = subprocess.run(
        [dcmtk("echoscu"), "-aec", "MINIXNAT", "127.0.0.1", str(port)], capture_output=True
    )
    assert echo.returncode == 0, echo.stderr
    study = generate_uid()
    files = series_files(tmp_path / "a", 3, study=study, series_number=1) + series_files(
        tmp_path / "a", 2, study=study, series_number=2, series_description="t2_tse"
    )
    sent = storescu(port, *files)
    assert sent.returncode == 0, sent.stderr
    rows = wait_for(lambda: prearchived(server.url, study), "the prearchive session")
    assert len(rows) == 1
    row = rows[0]
    assert (row["project"], row["subject"], row["name"], row["status"]) == (
        "Unassigned", "Doe_Jane", "PID001", "READY"
    )  # fmt: skip
    scans = get(server.url, f"/data{row['url']}/scans")["ResultSet"]["Result"]
    assert {(s["ID"], s["type"], s["files"]) for s in scans} == {
        ("1", "t1_mprage", "3"), ("2", "t2_tse", "2")
    }  # fmt: skip
    # Stored as received: each file's dataset is the one sent, element for element.
    folder = next((server.root / "prearchive" / "Unassigned").glob(f"*/{row['folderName']}"))
    stored = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p) for p in folder.rglob("*.dcm"))
    }  # fmt: skip
    for path in files:
        original = pydicom.dcmread(path)
        assert stored[str(original.SOPInstanceUID)] == original
    assert not list((server.root / "dicom" / "studies").glob("*/*"))  # the spool is empty


@pytest.mark.parametrize(
    ("fields", "project", "subject", "session"),
    [
        ({"PatientComments": "Project:ROUTE Subject:S1 Session:E1"}, "ROUTE", "S1", "E1"),
        ({"StudyComments": "Project:ROUTE;Subject:S2;Session:E2"}, "ROUTE", "S2", "E2"),
        ({"StudyDescription": "ROUTE"}, "ROUTE", "Doe_Jane", "PID001"),
        ({"AccessionNumber": "ROUTE"}, "ROUTE", "Doe_Jane", "PID001"),
        ({"PatientComments": "Project:RT_ALIAS"}, "ROUTE", "Doe_Jane", "PID001"),
        ({"PatientComments": "Project:NO_SUCH"}, "Unassigned", "Doe_Jane", "PID001"),
    ],
)
def test_storescu_studies_are_routed_by_each_of_xnats_rules(
    receiver: Callable[..., tuple[Server, int]],
    tmp_path: Path,
    fields: dict[str, str],
    project: str,
    subject: str,
    session: str,
) -> None:
    server, port = receiver()
    put(server.url, "/data/projects/ROUTE?alias=RT_ALIAS")
    put(server.url, "/data/projects/ROUTE/prearchive_code/0")  # keeps what arrives to be seen
    study = generate_uid()
    files = series_files(tmp_path, 2, study=study, **fields)
    assert storescu(port, *files).returncode == 0
    rows = wait_for(lambda: prearchived(server.url, study), "the routed prearchive session")
    assert [(r["project"], r["subject"], r["name"]) for r in rows] == [(project, subject, session)]


def test_aa_true_and_prearchive_code_archive_directly_and_a_resend_replaces(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver()
    put(server.url, "/data/projects/ROUTE")
    put(server.url, "/data/projects/ROUTE/prearchive_code/0")  # AA:TRUE archives all the same
    put(server.url, "/data/projects/AUTO")  # a new project archives, as XNAT's (code 4)
    study = generate_uid()
    routing = "Project:ROUTE Subject:S1 Session:E1 AA:TRUE"
    files = series_files(tmp_path / "aa", 2, study=study, PatientComments=routing)
    assert storescu(port, *files).returncode == 0
    rows = wait_for(lambda: archived(server.url, study), "the archived session")
    assert [(r["project"], r["label"]) for r in rows] == [("ROUTE", "E1")]
    records = get(server.url, "/data/services/workflows/Transfer", experiment=rows[0]["ID"],
                  display="ALL")["ResultSet"]["Result"]  # fmt: skip
    assert [(r["status"], r["src"]) for r in records] == [("Complete", "DICOM receiver")]
    # The same instance sent again, changed: it replaces the archived file (one file still).
    changed = instance(
        tmp_path / "again.dcm", study=study, sop=str(pydicom.dcmread(files[0]).SOPInstanceUID),
        PatientComments="Project:ROUTE Subject:S1 Session:E1 AA:TRUE", instance_number=99,
    )  # fmt: skip
    assert storescu(port, changed).returncode == 0
    sop = str(pydicom.dcmread(changed).SOPInstanceUID)
    kept = server.root / "archive" / "ROUTE" / "arc001" / "E1" / "SCANS" / "1" / "DICOM"
    listing = f"/data/experiments/{rows[0]['ID']}/scans/1/resources/DICOM/files"

    def replaced() -> bool:
        listed = get(server.url, listing)["ResultSet"]["Result"]
        path = kept / f"{sop}.dcm"
        return (
            len(listed) == 2
            and pydicom.dcmread(path).InstanceNumber == 99
            and (hashlib.md5(path.read_bytes()).hexdigest() in {r["digest"] for r in listed})
        )

    wait_for(replaced, "the resent instance to replace the archived one")
    other = generate_uid()
    assert storescu(port, *series_files(tmp_path / "auto", 1, study=other,
                                        StudyDescription="AUTO")).returncode == 0  # fmt: skip
    rows = wait_for(lambda: archived(server.url, other), "the session archived by prearchive_code")
    assert rows[0]["project"] == "AUTO"


def test_a_study_over_several_associations_is_one_session_and_ae_binding_routes(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver("--dicom-bind", "BOUND=ROUTE")
    put(server.url, "/data/projects/ROUTE")
    put(server.url, "/data/projects/ROUTE/prearchive_code/0")
    study = generate_uid()
    first = series_files(tmp_path / "1", 2, study=study, series_number=1)
    second = series_files(tmp_path / "2", 2, study=study, series_number=2)
    assert storescu(port, *first, called="BOUND").returncode == 0
    rows = wait_for(lambda: prearchived(server.url, study), "the first part of the study")
    assert rows[0]["project"] == "ROUTE"
    assert storescu(port, *second, called="BOUND").returncode == 0
    wait_for(
        lambda: (r := prearchived(server.url, study)) and prearchive_files(server.url, r[0]) == 4,
        "the second association to join the session",
    )
    assert len(prearchived(server.url, study)) == 1


def test_refused_ae_titles_and_bad_objects_are_not_stored(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver("--dicom-refuse", "BADGUY")
    study = generate_uid()
    files = series_files(tmp_path, 1, study=study)
    refused = storescu(port, *files, calling="BADGUY")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    echo = subprocess.run(
        [dcmtk("echoscu"), "-aet", "BADGUY", "127.0.0.1", str(port)], capture_output=True
    )
    assert echo.returncode != 0
    # A truncated file and one without its study UID get failure statuses from pynetdicom.
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(files[0].read_bytes()[:-2000])
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="MINIXNAT")
    assert assoc.is_established
    status = assoc.send_c_store(cut)
    assert int(status.Status) not in (0x0000, 0xB000, 0xB006, 0xB007)
    no_study = pydicom.dcmread(files[0])
    del no_study.StudyInstanceUID
    status = assoc.send_c_store(no_study)
    assert int(status.Status) != 0
    assoc.release()
    assert not list((server.root / "dicom").rglob("*.dcm"))
    assert prearchived(server.url, study) == []


def test_every_transfer_syntax_is_stored_as_received(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver()
    study = generate_uid()
    files = [
        instance(tmp_path / f"{i}.dcm", study=study, syntax=syntax, instance_number=i + 1)
        for i, syntax in enumerate(SYNTAXES)
    ]
    ae = AE(ae_title="TESTSCU")
    for syntax in SYNTAXES:
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="MINIXNAT")
    for path in files:
        assert int(assoc.send_c_store(path).Status) == 0, path
    assoc.release()
    rows = wait_for(lambda: prearchived(server.url, study), "the session")
    folder = (
        server.root / "prearchive" / "Unassigned" / rows[0]["timestamp"] / rows[0]["folderName"]
    )
    for path in files:
        sent = pydicom.dcmread(path)
        kept = folder / "SCANS" / "1" / "DICOM" / f"{sent.SOPInstanceUID}.dcm"
        ds = pydicom.dcmread(kept)
        assert ds.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert ds.PixelData == sent.PixelData


def test_a_receiver_killed_mid_study_keeps_what_it_acknowledged(
    archive: Path, tmp_path: Path
) -> None:
    # A long quiet period: the study is still in the spool when the server is killed.
    server = start_server(archive, "--dicom-port", "0", "--dicom-quiet", "600")
    port = receiver_port(server.process)
    study = generate_uid()
    first = series_files(tmp_path / "1", 3, study=study, series_number=1)
    assert storescu(port, *first).returncode == 0
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    # A leftover half-written instance (what a kill mid-write leaves) never reaches a study.
    (archive / "dicom" / "incoming" / "partial").write_bytes(b"DICM" * 10)
    restarted = start_server(archive, "--dicom-port", "0", "--dicom-quiet", QUIET)
    try:
        port = receiver_port(restarted.process)
        second = series_files(tmp_path / "2", 2, study=study, series_number=2)
        assert storescu(port, *second).returncode == 0

        def whole() -> list[dict[str, str]]:
            rows = prearchived(restarted.url, study)
            return rows if rows and prearchive_files(restarted.url, rows[0]) == 5 else []

        rows = wait_for(whole, "the study from before and after the kill")
        assert len(rows) == 1
        assert not (archive / "dicom" / "incoming" / "partial").exists()
        check = subprocess.run(
            [BIN / "minixnat", "check",
             "--root", str(archive)], capture_output=True, text=True,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout
    finally:
        restarted.stop()


def test_bad_receiver_flags_are_refused_before_serving(archive: Path) -> None:
    def serve(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "minixnat", "serve", "--root", str(archive), "--port", "0", *flags],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    for flags, said in (
        (("--dicom-port", "0", "--dicom-bind", "NOEQUALS"),
         "--dicom-bind 'NOEQUALS' must be TITLE=PROJECT"),
        # The receiver's settings without --dicom-port started no receiver and said nothing.
        (("--dicom-ae", "MINE", "--dicom-quiet", "1"),
         "--dicom-ae, --dicom-quiet set up the DICOM receiver, which only --dicom-port"),
    ):  # fmt: skip
        proc = serve(*flags)
        assert proc.returncode == 2
        assert said in proc.stderr
        assert proc.stdout == ""


def test_a_study_that_cannot_be_built_stays_spooled_and_is_not_retried_in_a_loop(
    archive: Path,
) -> None:
    from minixnat.dicom.builder import Builder
    from minixnat.dicom.spool import Spool, ae_name
    from minixnat.store import Store

    store = Store(archive)
    try:
        spool = Spool(archive, durable=False)
        folder = spool.studies_dir / ae_name("SCANNER") / "1.2.3"
        folder.mkdir(parents=True)
        (folder / "1.2.3.4.dcm").write_bytes(b"not DICOM at all")  # planted, never received
        builder = Builder(store, spool, quiet=0)
        tries: list[str] = []
        build = builder.build_study

        def counted(study: Any) -> Any:
            tries.append(study.key)
            return build(study)

        builder.build_study = counted  # type: ignore[method-assign]
        assert builder.build_due() == []
        assert builder.build_due() == []
        assert len(tries) == 1  # failed once; not again until something new arrives
        assert (folder / "1.2.3.4.dcm").exists()  # kept, not lost
    finally:
        store.close()


def test_a_study_whose_label_is_taken_waits_in_the_prearchive_as_conflict(
    receiver: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    server, port = receiver()
    put(server.url, "/data/projects/ROUTE")
    routing = "Project:ROUTE Subject:S1 Session:E1 AA:TRUE"
    first, second = generate_uid(), generate_uid()
    assert storescu(port, *series_files(tmp_path / "a", 1, study=first,
                                        PatientComments=routing)).returncode == 0  # fmt: skip
    wait_for(lambda: archived(server.url, first), "the first study archived")
    assert storescu(port, *series_files(tmp_path / "b", 1, study=second,
                                        PatientComments=routing)).returncode == 0  # fmt: skip
    rows = wait_for(lambda: prearchived(server.url, second), "the second study kept aside")
    assert [(r["project"], r["name"], r["status"]) for r in rows] == [("ROUTE", "E1", "CONFLICT")]
    assert archived(server.url, second) == []
    # the session the study would have changed records the refusal, with the reason
    session = archived(server.url, first)[0]["ID"]
    latest = get(server.url, "/data/services/workflows/Transfer", experiment=session,
                 format="json")["items"][0]["data_fields"]  # fmt: skip
    assert latest["status"] == "Failed"
    assert "holds another study" in latest["details"]

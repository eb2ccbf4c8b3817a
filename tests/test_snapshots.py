"""Snapshots and workflow records: what minixnat makes after a session is archived.

Sessions archived by the import service, the prearchive or the DICOM receiver get a
``Transfer`` workflow record and a queued snapshot run; the background worker gives each
scan with images a SNAPSHOTS resource of two GIFs (XNAT's names and contents) and marks the
run Complete, or Failed with the reason.  Pictures are checked by decoding them.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from tests.conftest import BIN, Server, make_archive, start_server
from tests.dicomfiles import save
from tests.test_crash_safety import assert_consistent, crashing_server

ADMIN = ("admin", "admin")
SNAPSHOTS = "WebBasedQCImageCreator"


def get(server: Server, path: str, **params: str) -> requests.Response:
    return requests.get(server.url + path, params=params, auth=ADMIN, timeout=60)


def workflows(server: Server, experiment: str, pipeline: str = "") -> list[dict[str, str]]:
    found = get(
        server,
        f"/data/services/workflows/{pipeline}".rstrip("/"),
        experiment=experiment,
        display="ALL",
        format="json",
    )
    assert found.status_code == 200, found.text
    rows: list[dict[str, str]] = found.json()["ResultSet"]["Result"]
    return rows


def wait_done(server: Server, experiment: str, timeout: float = 60) -> dict[str, str]:
    """The experiment's newest snapshot record once it is Complete or Failed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = workflows(server, experiment, SNAPSHOTS)
        if rows and rows[0]["status"] in ("Complete", "Failed"):
            return rows[0]
        assert time.monotonic() < deadline, f"snapshots of {experiment} never finished: {rows}"
        time.sleep(0.1)


def launch(server: Server, experiment: str, pipeline: str = SNAPSHOTS) -> requests.Response:
    """XNAT's pipeline launch for one session of project SNAP."""
    return requests.post(
        f"{server.url}/data/projects/SNAP/pipelines/{pipeline}/experiments/{experiment}",
        auth=ADMIN,
        timeout=30,
    )


def experiments(server: Server, project: str) -> list[dict[str, str]]:
    rows = get(server, f"/data/projects/{project}/experiments", format="json").json()
    return [r for r in rows["ResultSet"]["Result"] if "Session" in r["xsiType"]]


def snapshot_rows(server: Server, experiment: str, scan: str) -> list[dict[str, str]]:
    found = get(
        server, f"/data/experiments/{experiment}/scans/{scan}/resources/SNAPSHOTS/files",
        format="json",
    )  # fmt: skip
    if found.status_code == 404:
        return []
    rows: list[dict[str, str]] = found.json()["ResultSet"]["Result"]
    return rows


def picture(server: Server, experiment: str, scan: str, name: str) -> Image.Image:
    path = f"/data/experiments/{experiment}/scans/{scan}/resources/SNAPSHOTS/files/{name}"
    body = get(server, path)
    assert body.status_code == 200, body.text
    image = Image.open(io.BytesIO(body.content))
    assert image.format == "GIF"
    image.load()
    return image


# -- test data -------------------------------------------------------------------------
def gradient(rows: int, cols: int, top: int) -> np.ndarray[Any, Any]:
    """Dark on the left, bright on the right: a picture whose orientation can be checked."""
    return np.tile(np.linspace(0, top, cols), (rows, 1)).astype(
        np.uint16 if top > 255 else np.uint8
    )


def _study_object(sop_class: str, study: str, series: int, instance: int, modality: str) -> Dataset:
    """The identifying part of one object of the SNAP01 test study."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study, str(series)])
    ds.SeriesNumber, ds.InstanceNumber = series, instance
    ds.PatientName = ds.PatientID = "SNAP01"
    ds.PatientComments = "Project:SNAP Subject:SNAP01 Session:SNAP01_MR"
    ds.Modality = modality
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    return ds


def image_file(
    path: Path, study: str, series: int, instance: int, syntax: str, *, rows: int, cols: int
) -> None:
    """One MR image in ``syntax`` whose pixels are :func:`gradient`."""
    ds = _study_object("1.2.840.10008.5.1.4.1.1.4", study, series, instance, "MR")
    ds.SeriesDescription = f"series {series} {syntax.name}"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    eight = syntax in (JPEGBaseline8Bit, JPEG2000Lossless)
    ds.BitsAllocated = ds.BitsStored = 8 if eight else 16
    ds.HighBit = ds.BitsStored - 1
    pixels = gradient(rows, cols, 255 if eight else 4000)
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels)
    elif eight:
        out = io.BytesIO()
        fmt = "JPEG" if syntax == JPEGBaseline8Bit else "JPEG2000"
        extra = {"quality": 95} if fmt == "JPEG" else {"irreversible": False}
        Image.fromarray(pixels, "L").save(out, format=fmt, **extra)
        ds.PixelData = encapsulate([out.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
    save(ds, path, syntax)


def report_file(path: Path, study: str, series: int) -> None:
    """A Basic Text SR: DICOM with no pixel data."""
    save(_study_object("1.2.840.10008.5.1.4.1.1.88.11", study, series, 1, "SR"), path)


def study_zip(folder: Path, *, broken: bool = False) -> bytes:
    """Series 1-3: 5 slices each, uncompressed, RLE and JPEG; series 4 one JPEG 2000 image;
    series 5 a structured report; with ``broken``, series 6 whose JPEG frames are garbage."""
    study = generate_uid()
    syntaxes = [ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit]
    for series, syntax in enumerate(syntaxes, start=1):
        for i in range(5):
            image_file(
                folder / f"s{series}_{i}.dcm", study, series, i + 1, syntax, rows=48, cols=80
            )
    image_file(folder / "s4_0.dcm", study, 4, 1, JPEG2000Lossless, rows=40, cols=60)
    report_file(folder / "s5_0.dcm", study, 5)
    if broken:
        image_file(folder / "s6_0.dcm", study, 6, 1, JPEGBaseline8Bit, rows=32, cols=32)
        ds = pydicom.dcmread(folder / "s6_0.dcm")
        ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg \xff\xd9"])
        ds.save_as(folder / "s6_0.dcm")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.glob("*.dcm")):
            zf.write(path, f"study/{path.name}")
    return buffer.getvalue()


def post_import(
    server: Server,
    body: bytes,
    *,
    project: str = "SNAP",
    subject: str = "SNAP01",
    label: str = "SNAP01_MR",
    dest: str = "/archive",
) -> requests.Response:
    """The session zip ``body`` through the import service."""
    return requests.post(
        f"{server.url}/data/services/import",
        params={"PROJECT_ID": project, "SUBJECT_ID": subject, "EXPT_LABEL": label, "dest": dest},
        data=body,
        headers={"Content-Type": "application/zip"},
        auth=ADMIN,
        timeout=120,
    )


def import_zip(server: Server, body: bytes, *, project: str = "SNAP", **where: str) -> str:
    """Import ``body`` into the archive; the new session's ID."""
    done = post_import(server, body, project=project, **where)
    assert done.status_code == 200, done.text
    label = where.get("label", "SNAP01_MR")
    found = get(server, f"/data/projects/{project}/experiments/{label}", format="json").json()
    return str(found["items"][0]["data_fields"]["ID"])


@pytest.fixture
def snap_server(tmp_path: Path) -> Any:
    root = make_archive(tmp_path / "archive")
    server = start_server(root, snapshots=True)
    requests.put(f"{server.url}/data/projects/SNAP", auth=ADMIN, timeout=30).raise_for_status()
    yield server
    server.stop()


# -- the tests ---------------------------------------------------------------------------
def test_demo_sessions_get_snapshots_of_the_expected_sizes(tmp_path: Path) -> None:
    """MR, CT and PET demo sessions: every scan gets XNAT's two GIFs, full size and half."""
    root = make_archive(tmp_path / "archive", "--snapshots", "--subjects", "3")
    server = start_server(root, snapshots=True)
    try:
        sessions = experiments(server, "DEMO01")
        assert {s["xsiType"] for s in sessions} >= {
            "xnat:mrSessionData", "xnat:ctSessionData", "xnat:petSessionData",
        }  # fmt: skip
        for session in sessions:
            eid = session["ID"]
            record = wait_done(server, eid)
            assert record["status"] == "Complete", record
            assert record["percentageComplete"] == "100.0"
            scans = get(server, f"/data/experiments/{eid}/scans", format="json").json()
            for scan in scans["ResultSet"]["Result"]:
                sid = scan["ID"]
                rows = {r["Name"]: r for r in snapshot_rows(server, eid, sid)}
                full, thumb = f"{eid}_{sid}_qc.gif", f"{eid}_{sid}_qc_t.gif"
                assert set(rows) == {full, thumb}
                assert rows[full]["file_content"] == "ORIGINAL"
                assert rows[thumb]["file_content"] == "THUMBNAIL"
                assert rows[full]["file_format"] == "GIF"
                dicom = get(
                    server, f"/data/experiments/{eid}/scans/{sid}/resources/DICOM/files",
                    format="json",
                ).json()["ResultSet"]["Result"][0]  # fmt: skip
                head = pydicom.dcmread(
                    io.BytesIO(get(server, dicom["URI"]).content), stop_before_pixels=True
                )
                assert picture(server, eid, sid, full).size == (head.Columns, head.Rows)
                assert picture(server, eid, sid, thumb).size == (head.Columns // 2, head.Rows // 2)
        done = subprocess.run(
            [BIN / "minixnat", "check", "--root", str(root)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout
    finally:
        server.stop()


def test_compressed_syntaxes_and_a_scan_without_pixels(snap_server: Server) -> None:
    """Uncompressed, RLE, JPEG and JPEG 2000 series all decode to the picture sent (dark
    left, bright right); the structured report's scan gets no SNAPSHOTS, quietly."""
    server = snap_server
    eid = import_zip(server, study_zip(Path(server.root).parent / "study"))
    transfer = workflows(server, eid, "Transfer")
    assert [(r["status"], r["src"]) for r in transfer] == [("Complete", "import service")]
    record = wait_done(server, eid)
    assert record["status"] == "Complete", record
    assert record["step_description"] == "4 scans with snapshots"
    sizes = {"1": (80, 48), "2": (80, 48), "3": (80, 48), "4": (60, 40)}
    for scan, size in sizes.items():
        image = picture(server, eid, scan, f"{eid}_{scan}_qc.gif").convert("L")
        assert image.size == size
        pixels = np.asarray(image, dtype=float)
        third = size[0] // 3
        assert pixels[:, :third].mean() + 100 < pixels[:, -third:].mean(), scan
    assert snapshot_rows(server, eid, "5") == []


def test_undecodable_images_fail_the_run_with_the_reason(snap_server: Server) -> None:
    server = snap_server
    eid = import_zip(server, study_zip(Path(server.root).parent / "study", broken=True))
    record = wait_done(server, eid)
    assert record["status"] == "Failed"
    assert "scan 6: cannot decode" in record["details"]
    # the other scans still have their pictures
    assert len(snapshot_rows(server, eid, "1")) == 2
    assert snapshot_rows(server, eid, "6") == []


def test_launching_again_leaves_one_set(snap_server: Server) -> None:
    server = snap_server
    eid = import_zip(server, study_zip(Path(server.root).parent / "study"))
    first = wait_done(server, eid)
    before = {r["Name"]: r["digest"] for r in snapshot_rows(server, eid, "1")}
    launched = launch(server, "SNAP01_MR")  # by label, within the project
    assert launched.status_code == 200, launched.text
    assert launched.text.strip() != first["wrk_workflowData_id"]
    deadline = time.monotonic() + 60
    while len(done := workflows(server, eid, SNAPSHOTS)) < 2 or done[0]["status"] != "Complete":
        assert time.monotonic() < deadline, done
        time.sleep(0.1)
    assert {r["Name"]: r["digest"] for r in snapshot_rows(server, eid, "1")} == before
    resources = get(server, f"/data/experiments/{eid}/scans/1/resources", format="json").json()
    labels = [r["label"] for r in resources["ResultSet"]["Result"]]
    assert labels.count("SNAPSHOTS") == 1


def test_no_snapshots_flag_and_a_launch_through_rest(tmp_path: Path) -> None:
    root = make_archive(tmp_path / "archive")
    server = start_server(root, "--no-snapshots")
    try:
        requests.put(f"{server.url}/data/projects/SNAP", auth=ADMIN, timeout=30)
        eid = import_zip(server, study_zip(tmp_path / "study"))
        assert [r["pipeline_name"] for r in workflows(server, eid)] == ["Transfer"]
        time.sleep(1.5)  # two looks of the worker at its queue
        assert snapshot_rows(server, eid, "1") == []
        missing = launch(server, eid, "NoSuchPipe")
        assert missing.status_code == 404
        assert "WebBasedQCImageCreator" in missing.text
        launch(server, eid).raise_for_status()
        assert wait_done(server, eid)["status"] == "Complete"
        assert len(snapshot_rows(server, eid, "1")) == 2
    finally:
        server.stop()


def test_a_refused_overwrite_is_a_failed_transfer_record(snap_server: Server) -> None:
    server = snap_server
    body = study_zip(Path(server.root).parent / "study")
    eid = import_zip(server, body)
    again = post_import(server, body)
    assert again.status_code == 409
    latest = get(server, "/data/services/workflows/Transfer", experiment=eid, format="json").json()[
        "items"
    ][0]["data_fields"]  # display=LATEST: one item document
    assert latest["status"] == "Failed"
    assert "already exists" in latest["details"]
    xml = get(server, f"/data/workflows/{latest['wrk_workflowData_id']}").text
    assert "<wrk:Workflow " in xml
    assert 'status="Failed"' in xml
    # a project-wide listing: the newest record of each experiment, readable by members only
    listing = get(server, "/data/services/workflows/Transfer", project="SNAP", format="json")
    assert [r["ID"] for r in listing.json()["ResultSet"]["Result"]] == [eid]
    requests.put(f"{server.url}/data/projects/SNAP?accessibility=private", auth=ADMIN, timeout=30)
    subprocess.run(
        [BIN / "minixnat", "user", "add", "--root", str(server.root), "eve", "--password", "pw"],
        check=True,
    )
    hidden = requests.get(
        f"{server.url}/data/workflows/{latest['wrk_workflowData_id']}",
        auth=("eve", "pw"),
        timeout=30,
    )
    assert hidden.status_code == 404


def test_workflow_records_through_xnatpy_and_pyxnat(snap_server: Server) -> None:
    import pyxnat
    import xnat
    from pyxnat.core.pipelines import Pipelines

    server = snap_server
    eid = import_zip(server, study_zip(Path(server.root).parent / "study"))
    wait_done(server, eid)
    with xnat.connect(server.url, user="admin", password="admin") as session:
        rows = session.get_json(
            f"/data/services/workflows/{SNAPSHOTS}",
            query={"experiment": eid, "display": "ALL", "format": "json"},
        )["ResultSet"]["Result"]
        assert rows[0]["status"] == "Complete"
        assert session.get_json(f"/data/workflows/{rows[0]['wrk_workflowData_id']}")
    interface = pyxnat.Interface(server.url, "admin", "admin")
    pipelines = Pipelines(interface.select.project("SNAP"), interface)
    assert pipelines.aliases() == {SNAPSHOTS: SNAPSHOTS}
    pipeline = pipelines.pipeline(SNAPSHOTS)
    assert set(pipeline.info()) == {  # XNAT's pipeline descriptor, as pyxnat's own test reads it
        "appliesTo", "authors", "description", "inputParameters", "path",
        "resourceRequirements", "steps", "version",
    }  # fmt: skip
    pipeline.run("SNAP01_MR")
    status = pipeline.status(eid)
    assert status is not None
    assert status["status"] in ("Queued", "In Progress", "Complete")


def test_a_crash_mid_generation_is_finished_after_restart(tmp_path: Path) -> None:
    """The server dies after rendering the first scan's pictures; after a restart the run
    is done again and each scan has exactly one set."""
    root = make_archive(tmp_path / "archive")
    plain = start_server(root)
    requests.put(f"{plain.url}/data/projects/SNAP", auth=ADMIN, timeout=30)
    plain.stop()
    crashing = crashing_server(root, "snapshot:1", snapshots=True)
    try:
        server = Server(crashing.url, root, crashing)  # type: ignore[attr-defined]
        eid = import_zip(server, study_zip(tmp_path / "study"))
        assert crashing.wait(timeout=60) == 137  # died in the worker, after the import
    finally:
        if crashing.poll() is None:
            crashing.kill()
    assert_consistent(root)
    server = start_server(root, snapshots=True)
    try:
        record = wait_done(server, eid)
        assert record["status"] == "Complete"
        for scan in ("1", "2", "3", "4"):
            assert sorted(r["Name"] for r in snapshot_rows(server, eid, scan)) == [
                f"{eid}_{scan}_qc.gif", f"{eid}_{scan}_qc_t.gif",
            ]  # fmt: skip
    finally:
        server.stop()
    assert_consistent(root)
    assert not os.listdir(root / "tmp")


def test_the_client_downloads_snapshots_and_reports_workflow_state(
    snap_server: Server, tmp_path: Path
) -> None:
    """``download --resource SNAPSHOTS`` fetches the GIFs, verified; ``ls --json`` says per
    session whether its newest workflow is complete."""
    import hashlib
    import json

    from tests.test_download import cli

    server = snap_server
    good = import_zip(server, study_zip(tmp_path / "good"))
    assert wait_done(server, good)["status"] == "Complete"
    code, out, err = cli(
        "download", "-w", server.url, "-p", "SNAP", "--resource", "SNAPSHOTS",
        "-o", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["verified"] == 8  # scans 1 to 4, two pictures each
    served = {r["Name"]: r["digest"] for scan in "1234" for r in snapshot_rows(server, good, scan)}
    fetched = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "out").rglob("*.gif")
    }
    assert fetched == served
    # the broken session's snapshot run failed: not complete; a demo session has no records
    requests.put(f"{server.url}/data/projects/SNAP2", auth=ADMIN, timeout=30)
    body = study_zip(tmp_path / "broken", broken=True)
    broken_id = import_zip(server, body, project="SNAP2", subject="S2", label="S2_MR")
    assert wait_done(server, broken_id)["status"] == "Failed"
    states = {}
    for project in ("SNAP", "SNAP2", "DEMO01"):
        code, out, err = cli("ls", "-w", server.url, "-p", project, "--json")
        assert code == 0, err
        states.update({s["id"]: s["workflows"] for s in json.loads(out)["sessions"]})
    assert states[good]["complete"] is True
    assert states[good]["latest"]["pipeline"] == SNAPSHOTS
    assert states[broken_id]["complete"] is False
    assert states[broken_id]["latest"]["status"] == "Failed"
    demo = [s for eid, s in states.items() if eid not in (good, broken_id)]
    assert demo
    assert all(s == {"complete": True, "latest": None} for s in demo)


def test_a_nifti_only_scan_and_an_archive_from_the_prearchive(
    snap_server: Server, tmp_path: Path
) -> None:
    """A scan with only a NIfTI image gets the middle axial slice; a session archived from
    the prearchive gets a Transfer record saying so, and its snapshots."""
    import nibabel

    server = snap_server
    volume = np.tile(np.linspace(0, 1000, 40)[:, None, None], (1, 30, 9)).astype(np.float32)
    nifti = tmp_path / "t1.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), nifti)
    base = "/data/projects/SNAP/subjects/N1/experiments/N1_MR"
    for path, query in (
        ("/data/projects/SNAP/subjects/N1", ""),
        (base, "?xsiType=xnat:mrSessionData"),
        (f"{base}/scans/1", "?xsiType=xnat:mrScanData&type=T1w"),
        (f"{base}/scans/1/resources/NIFTI", "?format=NIFTI"),
    ):
        requests.put(server.url + path + query, auth=ADMIN, timeout=30).raise_for_status()
    requests.put(
        f"{server.url}{base}/scans/1/resources/NIFTI/files/t1.nii.gz",
        data=nifti.read_bytes(),
        auth=ADMIN,
        timeout=30,
    ).raise_for_status()
    eid = get(server, base, format="json").json()["items"][0]["data_fields"]["ID"]
    assert workflows(server, eid) == []  # made through REST: not archived by an operation
    launch(server, eid).raise_for_status()
    assert wait_done(server, eid)["status"] == "Complete"
    image = picture(server, eid, "1", f"{eid}_1_qc.gif").convert("L")
    assert image.size == (40, 30)
    pixels = np.asarray(image, dtype=float)
    assert pixels[:, :10].mean() + 100 < pixels[:, -10:].mean()

    body = study_zip(tmp_path / "study")
    sent = post_import(server, body, subject="P1", label="P1_MR", dest="/prearchive")
    assert sent.status_code == 200, sent.text
    src = sent.text.strip().removeprefix("/data")
    archived = requests.post(
        f"{server.url}/data/services/archive", params={"src": src}, auth=ADMIN, timeout=60
    )
    assert archived.status_code == 200, archived.text
    found = get(server, "/data/projects/SNAP/experiments/P1_MR", format="json").json()
    pid = found["items"][0]["data_fields"]["ID"]
    assert [(r["status"], r["src"]) for r in workflows(server, pid, "Transfer")] == [
        ("Complete", "prearchive")
    ]
    assert wait_done(server, pid)["status"] == "Complete"


def test_workflow_records_are_searchable(snap_server: Server, tmp_path: Path) -> None:
    """``wrk:workflowData`` through /data/search (pyxnat's select), and xnatpy's class for
    it from the schema minixnat lists."""
    import pyxnat
    import xnat

    server = snap_server
    good = import_zip(server, study_zip(tmp_path / "good"))
    wait_done(server, good)
    interface = pyxnat.Interface(server.url, "admin", "admin")
    table = interface.select(
        "wrk:workflowData", ["wrk:workflowData/ID", "wrk:workflowData/status",
                             "wrk:workflowData/pipeline_name"],
    ).where([("wrk:workflowData/status", "=", "Complete"), "AND"])  # fmt: skip
    rows = list(table)
    assert {(r["id"], r["pipeline_name"]) for r in rows} == {
        (good, "Transfer"), (good, "xnat_tools/WebBasedQCImageCreator.xml"),
    }  # fmt: skip
    none = interface.select("wrk:workflowData", ["wrk:workflowData/ID"]).where(
        [("wrk:workflowData/status", "=", "Failed"), "AND"]
    )
    assert list(none) == []
    with xnat.connect(server.url, user="admin", password="admin") as session:
        assert session.XNAT_CLASS_LOOKUP["wrk:workflowData"].__name__ == "WrkWorkflowData"


def test_a_slice_that_claims_to_be_huge_is_refused_before_decoding(tmp_path: Path) -> None:
    """An RLE frame of a few bytes whose header claims 60,000 x 60,000 pixels would decode
    into gigabytes: refused with the reason, and a file with a broken header is no image."""
    from minixnat.snapshots.generate import SnapshotError, pictures_of

    path = tmp_path / "bomb.dcm"
    image_file(path, generate_uid(), 1, 1, RLELossless, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60000
    ds.save_as(path)
    with pytest.raises(SnapshotError, match="larger than snapshots are made of"):
        pictures_of([path], [])
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    assert pictures_of([broken], []) is None


def test_a_session_deleted_while_its_pictures_are_drawn_gets_none(tmp_path: Path) -> None:
    """The run's renderer is a seam: here it deletes the session (or one scan) as the
    pictures are drawn.  Nothing lands in a deleted scan, and the archive stays consistent."""
    from minixnat.demodata import DemoSpec, generate
    from minixnat.snapshots.generate import pictures_of, run
    from minixnat.store.check import check

    store = generate(tmp_path / "archive", DemoSpec(projects=1, subjects=1, sessions=2))
    try:
        first, second = store.list_experiments(sessions_only=True)[:2]
        doomed_scan = store.list_scans(second.id)[0]

        def deleting(victim: Any, *, at: int = 1) -> Any:
            """A renderer that calls ``victim`` as it draws the ``at``-th scan."""
            calls = [0]

            def render(dicom: list[Path], nifti: list[Path]) -> tuple[bytes, bytes] | None:
                calls[0] += 1
                if calls[0] == at:
                    victim()
                return pictures_of(dicom, nifti)

            return render

        queued = store.queue_snapshots(first, user="admin", why="test")
        assert run(store, queued, deleting(lambda: store.delete_experiment(first.id))) == "Failed"
        assert store.get_experiment(first.id) is None
        queued = store.queue_snapshots(second, user="admin", why="test")
        # the first scan is drawn, then deleted while the last one is drawn
        last = len(store.list_scans(second.id))
        status = run(store, queued, deleting(lambda: store.delete_scan(doomed_scan.pk), at=last))
        record = store.get_workflow(queued.wrk_id)
        assert record is not None
        assert status == "Complete", record.details
        kept = store.list_scans(second.id)
        assert kept
        assert all(store.get_resource_by_label("scan", str(s.pk), "SNAPSHOTS") for s in kept)
        orphans = [
            r for r in store.all_resources() if r.owner_kind == "scan" and r.label == "SNAPSHOTS"
            and store.get_scan_by_pk(int(r.owner_key)) is None
        ]  # fmt: skip
        assert orphans == []
        assert check(store, full=True).ok
    finally:
        store.close()

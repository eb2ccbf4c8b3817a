"""``download --metadata xml|json``: XNAT's documents beside the data, in every layout."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.test_download import cli
from xnat_downloader.transfer.documents import document_problem

SESSION = "DEMO01_S001_MR1"


@pytest.mark.parametrize(
    ("flags", "fmt", "expected"),
    [
        ([], "xml", ["DEMO01/project.xml", "DEMO01/DEMO01_S001/subject.xml",
                     f"DEMO01/DEMO01_S001/{SESSION}/session.xml",
                     f"DEMO01/DEMO01_S001/{SESSION}/scans/1-T1w/scan.xml"]),
        (["--layout", "simplified"], "json",
         ["DEMO01/project.json", "DEMO01/DEMO01_S001/subject.json",
          f"DEMO01/DEMO01_S001/{SESSION}/session.json",
          f"DEMO01/DEMO01_S001/{SESSION}/1-T1w/scan.json"]),
        (["--layout", "flat", "--no-include-project", "--no-include-subject"], "xml",
         [f"{SESSION}/project.xml", f"{SESSION}/subject.xml", f"{SESSION}/session.xml",
          f"{SESSION}/1-T1w_scan.xml"]),
    ],
)  # fmt: skip
def test_metadata_documents_sit_beside_the_data_and_parse(
    shared_server: Server, tmp_path: Path, flags: list[str], fmt: str, expected: list[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-s", SESSION,
                            "-o", str(out), "--metadata", fmt, "--json", *flags)  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["failed"] == 0
    for rel in expected:
        text = (out / rel).read_bytes()
        if fmt == "json":
            json.loads(text)
        else:
            ET.fromstring(text)
    session_doc = (out / expected[2]).read_text()
    assert SESSION in session_doc
    # In the plan (manifest) and in the report, counted among the files.
    manifest = json.loads((out / ".xnat-downloader" / "manifest.json").read_text())
    planned = {f["local"] for f in manifest["files"] if f["category"] == "metadata"}
    assert set(expected) <= planned
    reported = {
        json.loads(line)["local"]
        for line in Path(report["report"]).read_text().splitlines()
    }  # fmt: skip
    assert set(expected) <= reported
    # verify knows them: a document changed on disk is found.
    code, _, _ = cli("verify", "-o", str(out), "--offline")
    assert code == 0
    (out / expected[2]).write_text("changed")
    code, verified, _ = cli("verify", "-o", str(out), "--offline")
    assert code == 1
    assert expected[2] in verified


def test_a_document_that_does_not_parse_is_a_failure() -> None:
    assert document_problem(b"<a><b></a>", "xml") is not None
    assert document_problem(b"{not json", "json") is not None
    assert document_problem(b"  ", "xml") == "the server sent an empty document"
    assert document_problem(b"<a/>", "xml") is None
    assert document_problem(b'{"items": []}', "json") is None


def test_the_progress_counts_documents_and_gaps_in_its_total(
    shared_server: Server, tmp_path: Path
) -> None:
    """The display's total is every file the run will account for: data files, metadata
    documents, and selections that became no file; it counts up to exactly that, on the
    first run (documents fetched) and on a re-run (documents kept)."""
    from xnat_downloader import Connection, Credentials, Selection, download
    from xnat_downloader.transfer.events import FileFailed, FileSkipped, FileVerified, Planned

    conn = Connection(shared_server.url, Credentials("admin", "admin", "test"))
    selection = Selection(projects=("DEMO01",), sessions=(SESSION, "NO_SUCH_SESSION"))
    for _ in range(2):
        events: list[object] = []
        report = download(conn, selection, tmp_path / "out", metadata="json",
                          sink=events.append)  # fmt: skip
        planned = [e for e in events if isinstance(e, Planned)]
        ended = [e for e in events if isinstance(e, FileVerified | FileSkipped | FileFailed)]
        assert len(planned) == 1
        assert planned[0].files == len(report.outcomes) == len(ended)
        assert sum(isinstance(e, FileFailed) for e in ended) == 1  # the session not found


@pytest.mark.parametrize(
    ("layout", "assessor_doc"),
    [
        ("xnat", f"DEMO01/DEMO01_S001/{SESSION}/assessors/{SESSION}_QC/assessor.xml"),
        ("simplified", f"DEMO01/DEMO01_S001/{SESSION}/{SESSION}_QC/assessor.xml"),
        ("flat", f"DEMO01/DEMO01_S001/{SESSION}/{SESSION}_QC_assessor.xml"),
    ],
)
def test_assessor_and_reconstruction_documents_sit_beside_their_files(
    shared_server: Server, tmp_path: Path, layout: str, assessor_doc: str
) -> None:
    """With --assessors and --recons, each one's document goes where its files go (what
    an upload of the tree makes it from), parsed, in the plan and the report."""
    out = tmp_path / "out"
    code, stdout, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-s", SESSION,
                            "-o", str(out), "--metadata", "xml", "--assessors", "--recons",
                            "--layout", layout, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["failed"] == 0
    root = ET.fromstring((out / assessor_doc).read_bytes())
    assert root.get("label") == f"{SESSION}_QC"
    manifest = json.loads((out / ".xnat-downloader" / "manifest.json").read_text())
    documents = {f["local"] for f in manifest["files"] if f["category"] == "metadata"}
    assert assessor_doc in documents
    recon_files = [f for f in manifest["files"] if f["category"] == "recon"]
    recon_docs = [d for d in documents if d.endswith("recon.xml")]
    assert recon_docs
    assert len(recon_docs) == len({f["owner"] for f in recon_files})
    for doc in recon_docs:
        assert ET.fromstring((out / doc).read_bytes()).get("type")

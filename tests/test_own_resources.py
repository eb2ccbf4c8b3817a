"""Projects' and subjects' own resources (--project-resources, --subject-resources): where
they go, which subjects are asked about, and what is refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Server
from tests.test_download import cli, local_files
from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.plan.layout import Layout, LayoutOptions, local_parts
from xnat_downloader.xnat.model import RemoteFile, Session, Subject
from xnat_downloader.xnat.paths import LOGIN
from xnat_downloader.xnat.selection import Selection, subjects_selected
from xnat_downloader.xnat.walk import WalkResult, walk

AUTH = ("admin", "admin")


def put_subject_files(server: Server, subject: str, resource: str, count: int) -> dict[str, str]:
    """``count`` small files into a subject's resource; their paths and MD5s."""
    sent = {}
    for i in range(count):
        body = f"{subject} {resource} file {i}\n".encode() * (i + 1)
        path = f"notes/n{i:02d}.txt"
        answer = requests.put(
            f"{server.url}/data/projects/DEMO01/subjects/{subject}/resources/{resource}/files/"
            f"{path}?inbody=true",
            data=body,
            auth=AUTH,
            timeout=30,
        )
        assert answer.status_code in (200, 201), answer.text
        sent[path] = hashlib.md5(body).hexdigest()
    return sent


def test_project_and_subject_resources_land_beside_the_sessions_verified(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve()
    # Ten files: enough for the resource to come as one streamed zip.
    notes = put_subject_files(server, "DEMO01_S002", "NOTES", 10)
    out = tmp_path / "out"
    base = ["download", "-w", server.url, "-p", "DEMO01", "--no-scans", "-o", str(out)]
    code, stdout, err = cli(*base, "--project-resources", "--subject-resources")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1].startswith("done: 11 files, ")
    assert stdout.strip().endswith("11 verified, 0 failed")
    got = local_files(out)
    docs = requests.get(f"{server.url}/data/projects/DEMO01/files", auth=AUTH, timeout=30)
    readme = next(r for r in docs.json()["ResultSet"]["Result"] if r["Name"] == "README.txt")
    assert got["DEMO01/resources/DOCS/files/README.txt"] == readme["digest"]
    for path, md5 in notes.items():
        assert got[f"DEMO01/DEMO01_S002/resources/NOTES/files/{path}"] == md5
    assert len(got) == 11  # nothing of the sessions (--no-scans), nothing else

    # A re-run trusts them, and `verify` re-hashes them.
    code, stdout, _ = cli(*base, "--project-resources", "--subject-resources")
    assert code == 0
    code, stdout, _ = cli("verify", "-o", str(out))
    assert code == 0
    assert stdout.strip().splitlines()[-1].startswith("verify: 11 files, 11 ok, 0 missing")

    # Narrowed to one session of the other subject: that subject's resources only (none).
    code, stdout, _ = cli(*base[:-2], "-s", "DEMO01_S001_MR1", "--subject-resources",
                          "--dry-run", "--list-files", "-o", str(tmp_path / "n"))  # fmt: skip
    assert code == 0
    assert stdout.strip().splitlines()[-1] == "plan: 0 files, 0 bytes"

    # ls names them, and --json gives them too.
    code, stdout, _ = cli("ls", "-w", server.url, "-p", "DEMO01", "--project-resources",
                          "--subject-resources", "--json")  # fmt: skip
    assert code == 0
    assert json.loads(stdout)["own_resources"] == [
        {"project": "DEMO01", "subject": "", "resource": "DOCS", "files": 1,
         "bytes": int(readme["Size"])},
        {"project": "DEMO01", "subject": "DEMO01_S002", "resource": "NOTES", "files": 10,
         "bytes": sum(len(f"DEMO01_S002 NOTES file {i}\n") * (i + 1) for i in range(10))},
    ]  # fmt: skip


def test_a_layout_without_subject_folders_refuses_them_before_asking(
    tmp_path: Path,
) -> None:
    """Nothing listens on the address: a command that got as far as a request would fail
    for that instead of the refusal asserted."""
    nowhere = "http://127.0.0.1:9"
    code, _, err = cli("download", "-w", nowhere, "-p", "P", "--subject-resources",
                       "--no-include-subject", "-o", str(tmp_path / "o"))  # fmt: skip
    assert code == 2
    assert "leave out --no-include-subject, or --subject-resources" in err
    assert not (tmp_path / "o").exists()


def test_where_they_go_in_each_layout() -> None:
    project = RemoteFile("/data/projects/P/resources/1/files/a/b.txt", "a/b.txt", 1, None,
                         "P", "", "", "", "project", "DOCS")  # fmt: skip
    subject = RemoteFile("/data/subjects/S/resources/2/files/c.txt", "c.txt", 1, None,
                         "P", "s1", "", "", "subject", "NOTES")  # fmt: skip
    expected = {
        LayoutOptions(): ("P/resources/DOCS/files/a/b.txt", "P/s1/resources/NOTES/files/c.txt"),
        LayoutOptions(Layout.SIMPLIFIED): ("P/DOCS/a/b.txt", "P/s1/NOTES/c.txt"),
        LayoutOptions(Layout.FLAT): ("P/DOCS_a_b.txt", "P/s1/NOTES_c.txt"),
        LayoutOptions(include_project=False): (
            "resources/DOCS/files/a/b.txt",
            "s1/resources/NOTES/files/c.txt",
        ),
    }
    for options, (p, s) in expected.items():
        assert "/".join(local_parts(project, options)) == p
        assert "/".join(local_parts(subject, options)) == s


def test_which_subjects_are_asked_about() -> None:
    subjects = [Subject("S1", "one", "P"), Subject("S2", "two", "P"), Subject("S3", "three", "P")]
    sessions = [Session("E1", "e1", "P", "S2", "two", None, "xnat:mrSessionData")]
    assert subjects_selected(subjects, sessions, Selection(projects=("P",))) == subjects
    named = Selection(projects=("P",), subjects=("one", "S3"))
    assert subjects_selected(subjects, [], named) == [subjects[0], subjects[2]]
    narrowed = Selection(projects=("P",), sessions=("e1",))
    assert subjects_selected(subjects, sessions, narrowed) == [subjects[1]]


def own_resources_app(seen: Counter[str]) -> web.Application:
    """Project P with subjects S1 and S2 (and a row without an ID) and no sessions; P's
    files listing also shows a subject's file (not the project's own) and a row whose URI
    names no file."""

    def rows(*items: dict[str, str]) -> web.Response:
        return web.json_response({"ResultSet": {"Result": list(items)}})

    async def handle(request: web.Request) -> web.Response:
        seen[request.path] += 1
        return answers[request.path]

    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    answers: dict[str, web.Response] = {
        "/data/projects": rows({"ID": "P"}),
        "/data/projects/P/subjects": rows({"ID": "S1", "label": "one"},
                                          {"ID": "S2", "label": "two"}, {"label": "ghost"}),
        "/data/projects/P/experiments": rows(),
        "/data/projects/P/files": rows(
            {"URI": "/data/projects/P/resources/7/files/own.txt", "Size": "0", "digest": md5,
             "collection": "DOCS"},
            {"URI": "/data/projects/P/subjects/S1/resources/8/files/theirs.txt", "Size": "0",
             "digest": md5, "collection": "NOTES"},
            {"URI": "/data/projects/P/resources/7/nothing", "Size": "0"},
        ),
        "/data/projects/P/subjects/S1/files": rows(
            {"URI": "/data/subjects/S1/resources/8/files/theirs.txt", "Size": "0", "digest": md5,
             "collection": "NOTES"},
        ),
        "/data/projects/P/subjects/S2/files": rows(),
    }  # fmt: skip
    app = web.Application()
    for path in answers:
        app.router.add_get(path, handle)
    return app


def walked(app: web.Application, selection: Selection) -> WalkResult:
    async def go() -> WalkResult:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            url = str(server.make_url(""))
            async with XnatClient(url, Credentials(None), login_path=LOGIN) as xs:
                return await walk(xs, selection)
        finally:
            await server.close()

    return asyncio.run(go())


def test_rows_not_the_holders_own_are_left_out_and_one_naming_no_file_is_a_gap() -> None:
    seen: Counter[str] = Counter()
    selection = Selection(projects=("P",), project_resources=True, subject_resources=True)
    found = walked(own_resources_app(seen), selection)
    assert sorted((f.category, f.subject_label, f.path) for f in found.files) == [
        ("project", "", "own.txt"),
        ("subject", "one", "theirs.txt"),
    ]
    assert sorted(g.what for g in found.gaps) == [
        "/data/projects/P/resources/7/nothing",
        "a subject of project P (ghost)",  # a subject row without an ID: not skipped
    ]
    # One listing per project and one per subject: no session was asked about.
    assert seen["/data/projects/P/files"] == 1
    assert seen["/data/projects/P/subjects/S1/files"] == 1
    assert seen["/data/projects/P/subjects/S2/files"] == 1
    # Without the flags, none of those listings is asked for.
    seen.clear()
    walked(own_resources_app(seen), Selection(projects=("P",)))
    assert not any(path.endswith("/files") for path in seen)


def test_a_downloaded_tree_uploads_its_project_and_subject_resources_back(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """Download → upload carries the project's and the subjects' own resources (into the
    project uploaded to and its subjects); the documents --metadata saved and the
    reconstructions' files are named as not sent; a re-run sends nothing again."""
    server = serve()
    notes = put_subject_files(server, "DEMO01_S002", "NOTES", 3)
    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S002_MR1",
                       "--project-resources", "--subject-resources", "--recons",
                       "--metadata", "xml", "-o", str(out))  # fmt: skip
    assert code == 0, err
    lonely = out / "DEMO01" / "LONELY" / "resources" / "X" / "files" / "y.txt"
    lonely.parent.mkdir(parents=True)
    lonely.write_bytes(b"a subject with no session here\n")
    code, _, err = cli("project", "create", "-w", server.url, "NEW")
    assert code == 0, err

    code, stdout, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    assert stdout.strip().endswith(" 0 failed")
    # project.xml, subject.xml and session.xml; each scan.xml gave its scan's quality.
    assert "not sent, as the server writes its own: 3 metadata documents in " in err
    # The reconstruction is made from the recon.xml --metadata saved, with its file.
    assert "not sent" not in err.replace("not sent, as the server writes its own", "")

    def recons(project: str) -> list[tuple[str, str, str, dict[str, str]]]:
        base = f"{server.url}/data/projects/{project}/experiments/DEMO01_S002_MR1"
        rows = requests.get(f"{base}/reconstructions", params={"format": "json"}, auth=AUTH,
                            timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
        return [
            (r["ID"], r["type"], r.get("baseScanType", ""), {
                f["Name"]: f["digest"]
                for f in requests.get(f"{base}/reconstructions/{r['ID']}/out/files",
                                      params={"format": "json"}, auth=AUTH,
                                      timeout=30).json()["ResultSet"]["Result"]
            })
            for r in rows
        ]  # fmt: skip

    assert recons("DEMO01")
    assert recons("NEW") == recons("DEMO01")
    assert "outside any session" not in err

    def listed(owner: str, resource: str) -> dict[str, str]:
        answer = requests.get(f"{server.url}/data/projects/NEW{owner}/resources/{resource}/files",
                              params={"format": "json"}, auth=AUTH, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        return {r["Name"]: r["digest"] for r in answer.json()["ResultSet"]["Result"]}

    docs = local_files(out / "DEMO01" / "resources" / "DOCS" / "files")
    assert listed("", "DOCS") == docs
    assert listed("/subjects/DEMO01_S002", "NOTES") == {
        path.rsplit("/", 1)[1]: md5 for path, md5 in notes.items()
    }
    assert listed("/subjects/LONELY", "X") == {
        "y.txt": hashlib.md5(lonely.read_bytes()).hexdigest()
    }

    code, stdout, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    summary = stdout.strip().splitlines()[-1]
    files = int(summary.removeprefix("done: ").split(" ", 1)[0])
    assert summary.endswith(f"{files} verified, 0 failed")
    assert f"{files} were already on the server" in stdout + err


def test_a_tree_with_resource_folders_and_no_session_is_refused_with_what_to_do(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A --no-scans download holds no session: whose its top folder is cannot be told, and
    the importer would refuse its files as not DICOM; refused before anything is sent."""
    server = serve()
    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "--no-scans",
                       "--project-resources", "-o", str(out))  # fmt: skip
    assert code == 0, err
    code, stdout, err = cli("upload", "-w", server.url, "-p", "DEMO01", str(out / "DEMO01"))
    assert code == 2
    docs = out / "DEMO01" / "resources" / "DOCS" / "files"
    assert f"holds only resource folders ({docs}) and no session to import" in err
    assert f"e.g. --resource DOCS {docs}" in err
    assert "done:" not in stdout
    code, stdout, err = cli("upload", "-w", server.url, "-p", "DEMO01", "--resource", "DOCS",
                            str(docs))  # fmt: skip
    assert code == 0, err
    assert stdout.strip().endswith("1 verified, 0 failed")


def test_metadata_describes_a_subject_reached_only_by_its_own_resources(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve()
    assert requests.put(f"{server.url}/data/projects/DEMO01/subjects/LONELY", auth=AUTH,
                        timeout=30).ok  # fmt: skip
    put_subject_files(server, "LONELY", "NOTES", 1)
    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "--no-scans",
                       "--subject-resources", "--metadata", "xml", "-o", str(out))  # fmt: skip
    assert code == 0, err
    document = out / "DEMO01" / "LONELY" / "subject.xml"
    assert 'label="LONELY"' in document.read_text()
    assert (
        out / "DEMO01" / "LONELY" / "resources" / "NOTES" / "files" / "notes" / "n00.txt"
    ).exists()
    code, text, _ = cli("verify", "-o", str(out), "--offline")
    assert code == 0
    assert "0 missing, 0 changed, 0 extra" in text


def _assessors(server: Server, project: str, session: str) -> dict[str, Any]:
    """{label: (xsiType, its document, {file: md5})} of a session's assessors."""
    base = f"{server.url}/data/projects/{project}/experiments/{session}/assessors"
    found: dict[str, Any] = {}
    rows = requests.get(base, params={"format": "json"}, auth=AUTH, timeout=30)
    for r in rows.json()["ResultSet"]["Result"]:
        document = requests.get(f"{base}/{r['label']}", params={"format": "xml"}, auth=AUTH,
                                timeout=30).text  # fmt: skip
        files = requests.get(f"{base}/{r['label']}/out/files", params={"format": "json"},
                             auth=AUTH, timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
        found[r["label"]] = (r["xsiType"], document, {f["Name"]: f["digest"] for f in files})
    return found


def test_a_downloaded_tree_makes_its_assessors_from_the_documents_it_saved(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """download --assessors --metadata xml, then upload the tree: each assessor is made
    from its assessor.xml (its fields too), with its files, verified; a re-run sends no
    file again.  A tree without the document names the assessor's files as not sent."""
    server = serve()
    session = "DEMO01_S001_MR1"
    qc = f"{server.url}/data/projects/DEMO01/experiments/{session}/assessors/{session}_QC"
    rated = requests.put(qc, params={"xnat:qcManualAssessorData/rater": "R. Ater"}, auth=AUTH,
                         timeout=30)  # fmt: skip
    assert rated.ok, rated.text
    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", session,
                       "--assessors", "--metadata", "xml", "-o", str(out))  # fmt: skip
    assert code == 0, err
    folder = out / "DEMO01" / "DEMO01_S001" / session / "assessors" / f"{session}_QC"
    assert (folder / "assessor.xml").is_file()
    for project in ("NEW", "BARE"):
        code, _, err = cli("project", "create", "-w", server.url, project)
        assert code == 0, err

    code, stdout, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    assert stdout.strip().endswith(" 0 failed")
    theirs = _assessors(server, "DEMO01", session)
    ours = _assessors(server, "NEW", session)
    assert set(ours) == set(theirs) == {f"{session}_QC"}
    kind, document, files = ours[f"{session}_QC"]
    assert (kind, files) == theirs[f"{session}_QC"][::2]
    assert files
    assert "<xnat:rater>R. Ater</xnat:rater>" in document
    assert 'project="NEW"' in document

    code, stdout, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    summary = stdout.strip().splitlines()[-1]
    files_done = int(summary.removeprefix("done: ").split(" ", 1)[0])
    assert f"{files_done} were already on the server" in stdout + err

    (folder / "assessor.xml").unlink()
    code, stdout, err = cli("upload", "-w", server.url, "-p", "BARE", str(out / "DEMO01"))
    assert code == 0, err
    assert "as no assessor.xml or recon.xml" in err
    assert ": 1 assessor file\n" in err
    assert _assessors(server, "BARE", session) == {}


def test_assessors_and_reconstructions_without_files_keep_their_documents(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """An assessor and a reconstruction with fields but no files are selected like any
    other: ls names them, --metadata xml saves their documents (on a re-run too, when the session is
    reused from the record), and an upload of the tree makes them, fields and all."""
    server = serve()
    session = "DEMO01_S001_MR1"
    base = f"{server.url}/data/projects/DEMO01/experiments/{session}"
    made = requests.put(f"{base}/assessors/{session}_RATING", auth=AUTH, timeout=30,
                        params={"xsiType": "xnat:qcManualAssessorData",
                                "xnat:qcManualAssessorData/rater": "N. O. Files"})  # fmt: skip
    assert made.ok, made.text
    made = requests.put(f"{base}/reconstructions/{session}_NOFILES", auth=AUTH, timeout=30,
                        params={"xsiType": "xnat:reconstructedImageData",
                                "type": "BRAIN_MASK"})  # fmt: skip
    assert made.ok, made.text
    selected = ("-p", "DEMO01", "-s", session, "--assessors", "--recons")
    code, stdout, err = cli("ls", "-w", server.url, *selected)
    assert code == 0, err
    assert f"assessor       {session}_RATING  xnat:qcManualAssessorData" in stdout
    assert f"reconstruction {session}_NOFILES  xnat:reconstructedImageData" in stdout
    code, stdout, err = cli("ls", "-w", server.url, *selected, "--json")
    assert code == 0, err
    listed = {(d["kind"], d["name"]) for d in json.loads(stdout)["assessors_and_reconstructions"]}
    assert {("assessor", f"{session}_RATING"), ("recon", f"{session}_NOFILES")} <= listed

    out = tmp_path / "out"
    where = out / "DEMO01" / "DEMO01_S001" / session
    rating = where / "assessors" / f"{session}_RATING" / "assessor.xml"
    recon = where / "reconstructions" / f"{session}_NOFILES" / "recon.xml"
    for reused in (0, 1):  # the second run takes the session from the record
        code, stdout, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", session,
                                "--assessors", "--recons", "--metadata", "xml", "--json",
                                "-o", str(out))  # fmt: skip
        assert code == 0, err
        assert json.loads(stdout)["sessions_unchanged"] == reused
        assert "<xnat:rater>N. O. Files</xnat:rater>" in rating.read_text()
        assert ET.fromstring(recon.read_bytes()).get("type") == "BRAIN_MASK"
        manifest = json.loads((out / ".xnat-downloader" / "manifest.json").read_text())
        planned = {f["local"] for f in manifest["files"]}
        assert {str(p.relative_to(out)) for p in (rating, recon)} <= planned

    code, _, err = cli("project", "create", "-w", server.url, "NEW")
    assert code == 0, err
    code, stdout, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    assert stdout.strip().endswith(" 0 failed")
    made = err.split("made or updated on the server: ", 1)[1].splitlines()[0].split(", ")
    assert {f"{session}_RATING", f"{session}_NOFILES"} <= set(made)
    ours = _assessors(server, "NEW", session)
    kind, document, files = ours[f"{session}_RATING"]
    assert (kind, files) == ("xnat:qcManualAssessorData", {})
    assert "<xnat:rater>N. O. Files</xnat:rater>" in document
    recons = requests.get(f"{server.url}/data/projects/NEW/experiments/{session}/"
                          "reconstructions", params={"format": "json"}, auth=AUTH,
                          timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
    assert {r["ID"]: r["type"] for r in recons}[f"{session}_NOFILES"] == "BRAIN_MASK"


def test_a_404_for_a_sessions_assessors_or_reconstructions_means_it_has_none(
    shared_server: Server, tmp_path: Path
) -> None:
    """A server that answers 404 where a session has no assessors or reconstructions (as
    XNAT does for a files listing of nothing): the session's other files still come, and
    nothing fails."""
    from tests.standins import PassThrough
    from tests.standins import serve as serve_standin

    class NoneHere(PassThrough):
        upstream = shared_server.url

        def intercept(self, path: str) -> bool:
            if path.split("?")[0].endswith(("/assessors", "/reconstructions")):
                self.reply(404, b"<html>not found</html>", "text/html")
                return True
            return False

    proxy, stop = serve_standin(NoneHere)
    try:
        code, stdout, err = cli("download", "-w", proxy, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                                "--assessors", "--recons", "-o", str(tmp_path / "out"),
                                "--json")  # fmt: skip
    finally:
        stop()
    assert code == 0, err
    done = json.loads(stdout)
    assert done["failed"] == 0
    assert done["files"] > 0
    assert not list((tmp_path / "out").rglob("assessors"))


def test_an_uploaded_tree_gives_its_scans_the_quality_its_scan_documents_say(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A session downloaded with --metadata xml, uploaded into a new project: each scan
    gets the quality and note its scan.xml names (the import alone makes every scan
    usable); a scan.xml that does not parse is named, and its scan keeps the import's."""
    server = serve()
    session = "DEMO01_S001_MR1"
    scans = f"{server.url}/data/projects/DEMO01/experiments/{session}/scans"
    listed = requests.get(scans, params={"format": "json"}, auth=AUTH, timeout=30)
    ids = [r["ID"] for r in listed.json()["ResultSet"]["Result"]]
    for scan_id, quality in zip(ids, ("unusable", "questionable"), strict=False):
        rated = requests.put(f"{scans}/{scan_id}", auth=AUTH, timeout=30,
                             params={"quality": quality, "note": f"{quality} by QC"})  # fmt: skip
        assert rated.ok, rated.text
    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", session,
                       "--metadata", "xml", "-o", str(out))  # fmt: skip
    assert code == 0, err

    def qualities(project: str) -> dict[str, str]:
        base = f"{server.url}/data/projects/{project}/experiments/{session}/scans"
        rows = requests.get(base, params={"format": "json"}, auth=AUTH, timeout=30)
        return {r["ID"]: (r["quality"], r["note"]) for r in rows.json()["ResultSet"]["Result"]}

    for project in ("NEW", "BROKEN"):
        code, _, err = cli("project", "create", "-w", server.url, project)
        assert code == 0, err
    code, _, err = cli("upload", "-w", server.url, "-p", "NEW", str(out / "DEMO01"))
    assert code == 0, err
    assert qualities("NEW") == qualities("DEMO01")
    assert qualities("NEW")[ids[0]] == ("unusable", "unusable by QC")

    document = next((out / "DEMO01").rglob(f"scans/{ids[0]}-*/scan.xml"))
    document.write_text("<xnat:MRScan cut short")
    code, _, err = cli("upload", "-w", server.url, "-p", "BROKEN", str(out / "DEMO01"))
    assert code == 0, err
    assert f"scan.xml: unreadable, so scan {ids[0]} keeps the quality the import gave it" in err
    assert qualities("BROKEN")[ids[0]] == ("usable", "")
    assert qualities("BROKEN")[ids[1]] == ("questionable", "questionable by QC")


def _upload_through_a_server_that_answers(
    status: int, server: Server, tmp_path: Path, session: str
) -> tuple[int, str, str, int]:
    """A session downloaded with its assessor and assessor.xml, uploaded into a new
    project NEW through a stand-in that answers the assessor's PUT with ``status``: the
    upload's exit code, stdout and stderr, and how many resource files the tree holds."""
    from tests.standins import PassThrough
    from tests.standins import serve as serve_standin

    out = tmp_path / "out"
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", session,
                       "--assessors", "--metadata", "xml", "-o", str(out))  # fmt: skip
    assert code == 0, err
    files = sum(1 for p in (out / "DEMO01").rglob("*") if p.is_file() and "resources" in p.parts)
    code, _, err = cli("project", "create", "-w", server.url, "NEW")
    assert code == 0, err

    class Answers(PassThrough):
        upstream = server.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if method == "PUT" and f"/assessors/{session}_QC?" in path:
                self.reply(status, b"<h3>not here</h3>", "text/html")
                return True
            return False

    proxy, stop = serve_standin(Answers)
    try:
        code, stdout, err = cli("upload", "-w", proxy, "-p", "NEW", str(out / "DEMO01"))
    finally:
        stop()
    return code, stdout, err, files


def _only_session_and_assessor_after_a_rerun(server: Server, tmp_path: Path, session: str) -> None:
    """The same upload straight to the server: exit 0, the session under its own label,
    with its assessor."""
    code, _, err = cli("upload", "-w", server.url, "-p", "NEW", str(tmp_path / "out" / "DEMO01"))
    assert code == 0, err
    sessions = requests.get(f"{server.url}/data/projects/NEW/experiments",
                            params={"format": "json"}, auth=AUTH, timeout=30)  # fmt: skip
    assert [r["label"] for r in sessions.json()["ResultSet"]["Result"]] == [session]
    assert set(_assessors(server, "NEW", session)) == {f"{session}_QC"}


def test_a_server_failing_on_an_assessor_leaves_its_session_unfinished_until_a_rerun(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A server error (5xx) while an assessor is made stops the session's unit of work: it
    keeps its staging label, every file of it (the assessor's too) counts as failed with
    the re-run to do, and the re-run finishes it."""
    server, session = serve(), "DEMO01_S001_MR1"
    code, stdout, err, files = _upload_through_a_server_that_answers(501, server, tmp_path, session)
    assert code == 1, err
    assert "not finished: run the same command again" in err
    assert stdout.strip().endswith(f"0 verified, {files} failed")
    _only_session_and_assessor_after_a_rerun(server, tmp_path, session)


def test_an_assessor_the_server_refuses_fails_and_its_session_stands(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """The server refuses to make an assessor (403): it fails with its files, said once,
    exit 1; the session is finished (its own label, every file of it verified); the same
    upload again makes the assessor."""
    server, session = serve(), "DEMO01_S001_MR1"
    code, stdout, err, _ = _upload_through_a_server_that_answers(403, server, tmp_path, session)
    assert code == 1, err
    said = [line for line in err.splitlines() if line.startswith(f"failed: assessor {session}_QC")]
    assert len(said) == 1, err
    assert "run the same command again" in said[0]
    assert stdout.strip().endswith(" 1 failed")  # its one file
    sessions = requests.get(f"{server.url}/data/projects/NEW/experiments",
                            params={"format": "json"}, auth=AUTH, timeout=30)  # fmt: skip
    assert [r["label"] for r in sessions.json()["ResultSet"]["Result"]] == [session]
    assert _assessors(server, "NEW", session) == {}
    _only_session_and_assessor_after_a_rerun(server, tmp_path, session)

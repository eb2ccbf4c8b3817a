"""``xnat-downloader copy`` between two minixnat servers: every file verified on the target,
re-runs do only what is left, and a killed copy finishes when run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.conftest import BIN, Server, make_archive, start_server
from tests.standins import PassThrough, serve
from tests.test_download import ENV, cli, local_files
from tests.test_own_resources import put_subject_files

ADMIN = ("admin", "admin")


def _servers(tmp_path: Path, archive: Path, *target_flags: str) -> tuple[Server, Server]:
    source = start_server(archive)
    empty = make_archive(tmp_path / "target", "--projects", "0")
    target = start_server(empty, *target_flags)
    assert requests.put(f"{target.url}/data/projects/DEMO01", auth=ADMIN, timeout=30).ok
    return source, target


def _qualities(server: Server, project: str = "DEMO01") -> dict[tuple[str, str], tuple[str, str]]:
    """{(session label, scan ID): (quality, note)} of every scan of ``project``."""
    base = f"{server.url}/data/projects/{project}/experiments"
    found = {}
    for row in requests.get(base, params={"format": "json"}, auth=ADMIN,
                            timeout=30).json()["ResultSet"]["Result"]:  # fmt: skip
        scans = requests.get(f"{base}/{row['label']}/scans", params={"format": "json"},
                             auth=ADMIN, timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
        found.update({(row["label"], s["ID"]): (s["quality"], s["note"]) for s in scans})
    return found


def _same_trees(source: Server, target: Server, tmp_path: Path) -> None:
    # Every scan's QC rating and its note came too (an import alone makes them all usable).
    theirs_rated = _qualities(source)
    assert {q for q, _ in theirs_rated.values()} >= {"usable", "questionable", "unusable"}
    assert any(note for _, note in theirs_rated.values())
    assert _qualities(target) == theirs_rated
    for name, server in (("a", source), ("b", target)):
        code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(tmp_path / name))
        assert code == 0, err
    theirs = local_files(tmp_path / "a" / "DEMO01")
    ours = local_files(tmp_path / "b" / "DEMO01")
    # The copy holds every session's scan and session files (assessors are not uploaded).
    wanted = {k: v for k, v in theirs.items() if "/assessors/" not in k}
    assert ours == wanted


def _copy_until_imports(
    source: Server, target: Server, log: Path, env: dict[str, str], imports: int
) -> subprocess.Popen[str]:
    """A copy (one transfer at a time) started in the background, returned once the
    target's access ``log`` shows ``imports`` session imports, the copy still running."""
    proc = subprocess.Popen(
        [BIN / "xnat-downloader", "copy", "--from", source.url, "--to", target.url,
         "-p", "DEMO01", "--session-resources", "-j", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("POST /data/services/import") >= imports:
            return proc
        assert proc.poll() is None, "the copy finished before the planned kill"
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"no {imports} imports on the target within 120 s")


def test_copy_verifies_and_a_rerun_sends_nothing(archive: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    source, target = _servers(tmp_path, archive, "--access-log", str(log))
    try:
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                             "--session-resources")  # fmt: skip
        assert code == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        _same_trees(source, target, tmp_path)
        imports = log.read_text().count("POST /data/services/import")
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                             "--session-resources", "--json")  # fmt: skip
        assert code == 0, err
        document = json.loads(out)
        assert document["failed"] == 0
        assert set(document["sessions"].values()) == {"present"}
        assert log.read_text().count("POST /data/services/import") == imports  # none sent
    finally:
        source.stop()
        target.stop()


def test_projects_and_subjects_own_resources_are_copied_and_a_rerun_sends_none(
    archive: Path, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    source, target = _servers(tmp_path, archive, "--access-log", str(log))
    try:
        notes = put_subject_files(source, "DEMO01_S002", "NOTES", 3)
        copy = ("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                "-s", "DEMO01_S002_MR1", "--project-resources", "--subject-resources")  # fmt: skip
        code, out, err = cli(*copy)
        assert code == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        for name, server in (("a", source), ("b", target)):
            code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "--no-scans",
                               "--project-resources", "--subject-resources",
                               "-o", str(tmp_path / name))  # fmt: skip
            assert code == 0, err
        theirs, ours = local_files(tmp_path / "a"), local_files(tmp_path / "b")
        assert ours == theirs
        assert len(ours) == 1 + len(notes)  # the project's README and the subject's notes
        sent = log.read_text().count("/files/")
        code, out, err = cli(*copy, "--json")
        assert code == 0, err
        document = json.loads(out)
        assert (document["failed"], document["skipped"]) == (0, document["files"])
        assert log.read_text().count("/files/") - sent <= 2  # its listings only, no file
    finally:
        source.stop()
        target.stop()


def test_killed_copy_finishes_when_run_again(archive: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    source, target = _servers(tmp_path, archive, "--access-log", str(log), "--latency-ms", "20")
    try:
        scratch = tmp_path / "tmp"  # where the copies keep their scratch folders
        scratch.mkdir()
        env = {**os.environ, **ENV, "TMPDIR": str(scratch)}
        proc = _copy_until_imports(source, target, log, env, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The killed copy's scratch folder (with the session it was copying) is left
        # behind: the next copy removes it (made an hour ago, as an old kill's would be).
        (left,) = scratch.iterdir()
        assert (left / ".in-use").is_file()
        os.utime(left / ".in-use", (time.time() - 3600, time.time() - 3600))
        again = subprocess.run(
            [BIN / "xnat-downloader", "copy", "--from", source.url, "--to", target.url,
             "-p", "DEMO01", "--session-resources"],
            env=env, capture_output=True, stdin=subprocess.DEVNULL, text=True, timeout=300,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1].endswith(" 0 failed")
        assert list(scratch.iterdir()) == []
        _same_trees(source, target, tmp_path)
    finally:
        source.stop()
        target.stop()


def test_a_source_restarted_mid_copy_is_waited_for_and_the_copy_finishes(
    archive: Path, tmp_path: Path
) -> None:
    """The source server stops (kill -9) after the first session reached the target and
    comes back a second later on the same port: the same run waits for it and finishes.
    A copy once logged in afresh for every session's fetch, so a refused connection
    there was taken for a wrong address and the run ended with exit 2 at once; now each
    server has one session for the whole run (one login each)."""
    log = tmp_path / "access.log"
    source, target = _servers(tmp_path, archive, "--access-log", str(log), "--latency-ms", "20")
    restarted: Server | None = None
    try:
        proc = _copy_until_imports(source, target, log, {**os.environ, **ENV}, 1)
        source.process.send_signal(signal.SIGKILL)
        source.process.wait(timeout=30)
        time.sleep(1)
        port = source.url.rsplit(":", 1)[1]
        restarted = Server(source.url, archive, subprocess.Popen(
            [BIN / "minixnat", "serve", "--root", str(archive), "--port", port, "--no-snapshots"],
            stdout=subprocess.PIPE, text=True,
        ))  # fmt: skip
        assert restarted.process.stdout is not None
        assert restarted.process.stdout.readline().startswith("minixnat listening on")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        logins = [line for line in log.read_text().splitlines() if "/data/JSESSION" in line]
        assert len([line for line in logins if "GET" in line]) == 1, logins
        _same_trees(restarted, target, tmp_path)
    finally:
        source.stop()
        target.stop()
        if restarted is not None:
            restarted.stop()


def test_only_scratch_folders_of_copies_that_ended_are_removed(tmp_path: Path) -> None:
    """A scratch folder whose copy still runs (its marker locked), one just made, one
    without the marker (not ours to judge) stay; one whose copy died is removed."""
    import fcntl

    from xnat_downloader.api.copy import _remove_abandoned

    def folder(name: str, age: float | None) -> Path:
        made = tmp_path / f"xnatdl-copy-{name}"
        (made / "S1").mkdir(parents=True)
        (made / "S1" / "f.dcm").write_bytes(b"x" * 100)
        if age is not None:
            (made / ".in-use").touch()
            os.utime(made / ".in-use", (time.time() - age, time.time() - age))
        return made

    dead, running, fresh, unmarked = (
        folder("dead", 3600),
        folder("running", 3600),
        folder("fresh", 0),
        folder("x", None),
    )
    with open(running / ".in-use") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        _remove_abandoned(tmp_path)
    assert not dead.exists()
    assert running.exists()
    assert fresh.exists()
    assert unmarked.exists()


def test_copy_refuses_bad_input(archive: Path) -> None:
    source = start_server(archive)
    try:
        code, _, err = cli("copy", "--from", source.url, "--to", source.url, "-p", "DEMO01")
        assert code == 2
        assert "same server" in err
        code, _, err = cli("copy", "--from", source.url, "--to", source.url)
        assert code == 2
        assert "-p PROJECT" in err
    finally:
        source.stop()


def test_a_project_missing_on_the_target_is_said_before_anything_is_fetched(
    archive: Path, tmp_path: Path
) -> None:
    """Named with --to-project, or the source's own project ID: exit 2 with the command
    that creates it, and not one file or zip asked of the source (the copy once fetched
    a whole session before its upload found the project missing).  A named --to-project
    is checked before the source is walked at all."""
    log = tmp_path / "source.log"
    source = start_server(archive, "--access-log", str(log))
    target = start_server(make_archive(tmp_path / "target", "--projects", "0"))
    try:
        for extra, project, walked in (
            ([], "DEMO01", True),
            (["--to-project", "NEW"], "NEW", False),
        ):
            log.write_text("")
            code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                                 "--session-resources", *extra)  # fmt: skip
            assert code == 2, err
            assert out == ""
            assert f"project {project} does not exist on {target.url}" in err
            assert f"xnat-downloader project create -w {target.url} {project}" in err
            assert "Traceback" not in err
            asked = [line.split()[3] for line in log.read_text().splitlines()]  # the paths
            assert not [path for path in asked if "/files/" in path]  # no file GET
            # (the log drops queries: a resource's zip is a second request of its listing)
            listings = [path for path in asked if path.endswith("/files?…")]
            assert len(listings) == len(set(listings))
            assert any("/experiments" in path for path in asked) == walked
    finally:
        source.stop()
        target.stop()


def test_a_copy_that_matches_nothing_says_so(archive: Path, tmp_path: Path) -> None:
    """An empty selection is not a silent "done: 0 files": the run says nothing matched
    (as download does), in its notes and in --json, and exits 0."""
    source, target = _servers(tmp_path, archive)
    try:
        assert requests.put(f"{source.url}/data/projects/EMPTY", auth=ADMIN, timeout=30).ok
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "EMPTY")
        assert code == 0, err
        assert "note: nothing matched: projects EMPTY; nothing was copied" in err
        assert out.splitlines()[-1] == "done: 0 files, 0 bytes, 0 verified, 0 failed"
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "EMPTY",
                             "--json")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["notes"] == ["nothing matched: projects EMPTY; nothing was copied"]
    finally:
        source.stop()
        target.stop()


def test_a_session_the_copy_cannot_find_is_a_failure_line(archive: Path, tmp_path: Path) -> None:
    """A named session that is not there fails with its reason on a line of its own (as in
    download), counted in the display's total and in the done line; the rest is copied."""
    source, target = _servers(tmp_path, archive)
    try:
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                             "-s", "DEMO01_S001_MR1", "-s", "NO_SUCH_SESSION")  # fmt: skip
        assert code == 1, err
        assert "failed: session NO_SUCH_SESSION: not found in the selected projects" in err
        assert "copied: DEMO01_S001_MR1" in err
        assert out.splitlines()[-1].endswith(" 1 failed")
    finally:
        source.stop()
        target.stop()


def test_a_session_whose_target_listing_fails_fails_alone(archive: Path, tmp_path: Path) -> None:
    """The target refuses to list what it holds of one session: that session fails, once,
    with the re-run that copies it; the others are copied and verified; exit 1; the same
    copy straight to the target then finishes."""
    source, target = _servers(tmp_path, archive)

    class Refuses(PassThrough):
        upstream = target.url

        def intercept(self, path: str) -> bool:
            if "/experiments/DEMO01_S001_MR2/" in path and "/files" in path:
                self.reply(400, b"the stand-in will not list this")
                return True
            return False

    qc = f"{source.url}/data/projects/DEMO01/experiments/DEMO01_S001_MR2/assessors/MR2_QC"
    made = requests.put(qc, params={"xsiType": "xnat:qcManualAssessorData"}, auth=ADMIN,
                        timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    put = requests.put(f"{qc}/out/resources/QC/files/qc.txt", data=b"fine\n", auth=ADMIN,
                       params={"inbody": "true"}, timeout=30)  # fmt: skip
    assert put.ok, put.text
    proxy, stop = serve(Refuses)
    try:
        code, out, err = cli("copy", "--from", source.url, "--to", proxy, "-p", "DEMO01",
                             "--session-resources", "--assessors")  # fmt: skip
        assert code == 1, err
        # Its assessors' files are failures too, not left out of the count.
        assert ("failed: the assessors and reconstructions of DEMO01_S001_MR2: not copied, as "
                "its session did not copy") in err  # fmt: skip
        said = [line for line in err.splitlines() if "what the target holds" in line]
        assert len(said) == 1, err
        assert said[0].startswith("failed: DEMO01_S001_MR2: what the target holds")
        assert "run the same command again" in said[0]
        assert "failed: DEMO01_S001_MR2" in err.splitlines()  # the per-session summary
        assert "error:" not in err
        copied = [line for line in err.splitlines() if line.startswith("copied: ")]
        assert copied, err
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                             "--session-resources")  # fmt: skip
        assert code == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        _same_trees(source, target, tmp_path)
    finally:
        stop()
        source.stop()
        target.stop()


def test_a_file_counts_as_on_the_target_only_by_the_sources_md5() -> None:
    from xnat_downloader.api.copy import _there
    from xnat_downloader.plan.plan import PlanEntry
    from xnat_downloader.xnat.model import RemoteFile

    def entry(md5: str | None) -> PlanEntry:
        f = RemoteFile("/data/projects/P/resources/1/files/a.txt", "a.txt", 3, md5,
                       "P", "", "", "", "project", "DOCS")  # fmt: skip
        return PlanEntry(f, "P/resources/DOCS/files/a.txt")

    listed = {"a.txt": (3, "ABCDEF")}
    assert _there(entry("abcdef"), listed)  # XNAT's MD5s in either case
    assert not _there(entry("abcdee"), listed)
    assert not _there(entry(None), listed)  # no MD5 to trust: fetched, the upload compares
    assert not _there(entry("abcdef"), {})


def _derived(server: Server, project: str) -> dict[str, tuple[str, ...]]:
    """{session label: its assessors (label, xsiType) and reconstructions (ID, type)}."""
    found: dict[str, tuple[str, ...]] = {}
    sessions = requests.get(f"{server.url}/data/projects/{project}/experiments",
                            params={"format": "json"}, auth=ADMIN, timeout=30)  # fmt: skip
    for row in sessions.json()["ResultSet"]["Result"]:
        base = f"{server.url}/data/experiments/{row['ID']}"
        got: list[str] = []
        for kind, keys in (
            ("assessors", ("label", "xsiType")),
            ("reconstructions", ("ID", "type")),
        ):
            listed = requests.get(f"{base}/{kind}", params={"format": "json"}, auth=ADMIN,
                                  timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
            got += sorted(" ".join(r[k] for k in keys) for r in listed)
        found[row["label"]] = tuple(got)
    return found


def test_assessors_and_reconstructions_are_copied_with_their_fields_and_files(
    archive: Path, tmp_path: Path
) -> None:
    """--assessors and --recons: each is made on the target (an assessor from its source
    document, so its fields come too, and one without files as well), its files copied and
    verified; a re-run sends no file again."""
    log = tmp_path / "access.log"
    source, target = _servers(tmp_path, archive, "--access-log", str(log))
    try:
        session = (
            f"{source.url}/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
        )
        made = requests.put(f"{session}/assessors/BARE_QC", auth=ADMIN, timeout=30, params={
            "xsiType": "xnat:qcManualAssessorData", "xnat:qcManualAssessorData/rater": "R. Ater",
        })  # fmt: skip
        assert made.status_code == 201, made.text
        copy = ("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                "--assessors", "--recons")  # fmt: skip
        code, out, err = cli(*copy)
        assert code == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        wanted = _derived(source, "DEMO01")
        assert any(wanted.values())
        assert _derived(target, "DEMO01") == wanted
        bare = requests.get(
            f"{target.url}/data/projects/DEMO01/experiments/DEMO01_S001_MR1/assessors/BARE_QC",
            params={"format": "xml"}, auth=ADMIN, timeout=30,
        )  # fmt: skip
        assert bare.status_code == 200
        assert "<xnat:rater>R. Ater</xnat:rater>" in bare.text
        assert 'project="DEMO01"' in bare.text
        for name, server in (("a", source), ("b", target)):
            code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "--assessors",
                               "--recons", "-o", str(tmp_path / name))  # fmt: skip
            assert code == 0, err
        theirs, ours = local_files(tmp_path / "a"), local_files(tmp_path / "b")
        assert any("/assessors/" in k for k in theirs)
        assert any("/reconstructions/" in k for k in theirs)
        assert ours == theirs
        before = len(log.read_text().splitlines())
        code, out, err = cli(*copy, "--json")
        assert code == 0, err
        document = json.loads(out)
        assert (document["failed"], document["skipped"]) == (0, document["files"])
        again = log.read_text().splitlines()[before:]
        assert not [line for line in again if "PUT" in line and "/files/" in line]
        assert not [line for line in again if "/data/services/import" in line]
    finally:
        source.stop()
        target.stop()


def test_an_assessors_document_leaves_its_source_behind() -> None:
    """What the target is sent: the fields and the prefixes that xsi:type values name kept;
    the source's IDs, files and sharing left out; the target's project."""
    from xml.etree import ElementTree as ET

    from xnat_downloader.xnat.derived import assessor_document

    source = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<fs:Freesurfer ID="SRC_E00042" label="FS1" project="SRC" '
        b'xmlns:fs="http://nrg.wustl.edu/fs" xmlns:xnat="http://nrg.wustl.edu/xnat" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        b'<xnat:sharing><xnat:share project="OTHER"/></xnat:sharing>'
        b"<xnat:date>2024-01-02</xnat:date><xnat:subject_ID>SRC_S1</xnat:subject_ID>"
        b"<xnat:imageSession_ID>SRC_E00001</xnat:imageSession_ID>"
        b'<xnat:out><xnat:file label="DATA" URI="/data/experiments/SRC_E00042/x" '
        b'xsi:type="xnat:resourceCatalog"/></xnat:out>'
        b"<fs:measures><fs:volumetric><fs:ICV>1500000</fs:ICV></fs:volumetric></fs:measures>"
        b'<xnat:scans><xnat:scan id="1" project="SRC"/></xnat:scans>'
        b"</fs:Freesurfer>"
    )
    sent = assessor_document(source, "DEST")
    root = ET.fromstring(sent)
    assert root.tag == "{http://nrg.wustl.edu/fs}Freesurfer"
    assert root.attrib == {"label": "FS1", "project": "DEST"}
    kept = [child.tag.split("}")[1] for child in root]
    assert kept == ["date", "measures", "scans"]
    assert root.find(".//{http://nrg.wustl.edu/xnat}scan").attrib == {"id": "1", "project": "DEST"}
    assert b"<fs:ICV>1500000</fs:ICV>" in sent  # the prefix a type name would use
    assert b"SRC_" not in sent


def test_an_assessor_the_target_refuses_fails_even_without_files(
    archive: Path, tmp_path: Path
) -> None:
    """The target refuses to make one assessor that has no files: the copy says which, with
    the re-run, and exits 1 (no "0 failed" with something missing); the re-run straight to
    the target makes it."""
    source, target = _servers(tmp_path, archive)
    session = f"{source.url}/data/projects/DEMO01/subjects/DEMO01_S001/experiments/DEMO01_S001_MR1"
    bare = {"xsiType": "xnat:qcManualAssessorData"}
    made = requests.put(f"{session}/assessors/BARE_QC", params=bare, auth=ADMIN, timeout=30)
    assert made.status_code == 201, made.text

    class Refuses(PassThrough):
        upstream = target.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if method == "PUT" and "/assessors/BARE_QC" in path:
                self.reply(403, b"<h3>no assessors here</h3>", "text/html")
                return True
            return False

    proxy, stop = serve(Refuses)
    try:
        copy = ["copy", "--from", source.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                "--assessors"]  # fmt: skip
        code, out, err = cli(*copy, "--to", proxy)
        assert code == 1, err
        assert out.splitlines()[-1].endswith(" 1 failed")
        said = [line for line in err.splitlines() if "assessor BARE_QC of DEMO01_S001_MR1" in line]
        assert said, err
        assert "run the same command again" in said[0]
        assert "Traceback" not in err
        code, out, err = cli(*copy, "--to", target.url)
        assert code == 0, err
        assert "BARE_QC" in _derived(target, "DEMO01")["DEMO01_S001_MR1"][0]
    finally:
        stop()
        source.stop()
        target.stop()


def test_assessors_alone_of_a_session_not_on_the_target_say_to_copy_the_session_first(
    archive: Path, tmp_path: Path
) -> None:
    """--no-scans --assessors into a target without the session: nothing made the session,
    so each one's files fail with what to do, rather than a bare 404 per assessor."""
    source, target = _servers(tmp_path, archive)
    try:
        code, out, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                             "-s", "DEMO01_S001_MR1", "--no-scans", "--assessors")  # fmt: skip
        assert code == 1, err
        assert ("failed: the assessors and reconstructions of DEMO01_S001_MR1: session "
                "DEMO01_S001_MR1 is not in DEMO01 on the target: copy it with its scans first "
                "(without --no-scans)") in err  # fmt: skip
        assert "failed: DEMO01_S001_MR1\n" in err  # the session, too: it is not there
        assert "present: DEMO01_S001_MR1" not in err
        assert not out.splitlines()[-1].endswith(" 0 failed")
        code, _, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                           "-s", "DEMO01_S001_MR1", "--assessors", "--recons")  # fmt: skip
        assert code == 0, err
        assert (
            _derived(target, "DEMO01")["DEMO01_S001_MR1"]
            == _derived(source, "DEMO01")["DEMO01_S001_MR1"]
        )
    finally:
        source.stop()
        target.stop()


def test_copy_and_verify_through_the_python_api(archive: Path, tmp_path: Path) -> None:
    """The package's ``copy`` fills the target, one session of it verified; a download of
    it is clean for the package's ``verify`` (asking the server too), and a byte changed
    on disk is not."""
    import xnat_downloader as xd

    source, target = _servers(tmp_path, archive)
    try:
        login = xd.Credentials("admin", "admin")
        there = xd.Connection(target.url, login)
        selection = xd.Selection(projects=("DEMO01",), sessions=("DEMO01_S001_MR1",))
        report = xd.copy(xd.Connection(source.url, login), there, selection, jobs=2)
        assert isinstance(report, xd.CopyReport)
        assert report.ok
        assert report.verified > 0
        assert report.sessions == {"DEMO01_S001_MR1": "copied"}

        out = tmp_path / "out"
        assert xd.download(there, xd.Selection(projects=("DEMO01",)), out).ok
        checked = xd.verify(out, there)
        assert isinstance(checked, xd.VerifyReport)
        assert checked.clean
        assert len(checked.ok) == report.verified
        victim = next(p for p in out.rglob("*.dcm"))
        data = victim.read_bytes()
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        assert xd.verify(out).changed == [victim.relative_to(out).as_posix()]
    finally:
        source.stop()
        target.stop()


def test_assessors_and_reconstructions_without_files_are_copied(
    archive: Path, tmp_path: Path
) -> None:
    """An assessor and a reconstruction with fields and no files are made on the target
    with the rest of their session; one chosen alone (a session with nothing else
    selected, which the plan holds no file of) is made too."""
    import xnat_downloader as xd

    source, target = _servers(tmp_path, archive)
    session = "DEMO01_S001_MR1"
    base = f"{source.url}/data/projects/DEMO01/experiments/{session}"
    try:
        for label, rater in (("RATING", "First"), ("LATER", "Second")):
            made = requests.put(f"{base}/assessors/{session}_{label}", auth=ADMIN, timeout=30,
                                params={"xsiType": "xnat:qcManualAssessorData",
                                        "xnat:qcManualAssessorData/rater": rater})  # fmt: skip
            assert made.ok, made.text
        made = requests.put(f"{base}/reconstructions/{session}_MASK", auth=ADMIN, timeout=30,
                            params={"xsiType": "xnat:reconstructedImageData",
                                    "type": "BRAIN_MASK"})  # fmt: skip
        assert made.ok, made.text
        login = xd.Credentials("admin", "admin")
        src, dst = xd.Connection(source.url, login), xd.Connection(target.url, login)
        first = xd.Selection(projects=("DEMO01",), sessions=(session,), assessors=True,
                             recons=True, assessor_patterns=("*_RATING",))  # fmt: skip
        report = xd.copy(src, dst, first)
        assert report.ok, [o.error for o in report.outcomes if o.status == "failed"]
        there = f"{target.url}/data/projects/DEMO01/experiments/{session}"
        rating = requests.get(f"{there}/assessors/{session}_RATING", params={"format": "xml"},
                              auth=ADMIN, timeout=30)  # fmt: skip
        assert "<xnat:rater>First</xnat:rater>" in rating.text
        recons = requests.get(f"{there}/reconstructions", params={"format": "json"},
                              auth=ADMIN, timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
        assert {r["ID"]: r["type"] for r in recons}[f"{session}_MASK"] == "BRAIN_MASK"

        alone = xd.Selection(projects=("DEMO01",), sessions=(session,), scans=False,
                             assessors=True, assessor_patterns=("*_LATER",))  # fmt: skip
        report = xd.copy(src, dst, alone)
        assert report.ok, [o.error for o in report.outcomes if o.status == "failed"]
        later = requests.get(f"{there}/assessors/{session}_LATER", params={"format": "xml"},
                             auth=ADMIN, timeout=30)  # fmt: skip
        assert "<xnat:rater>Second</xnat:rater>" in later.text
    finally:
        source.stop()
        target.stop()


def test_a_target_refusing_scan_qualities_fails_that_session_once(
    archive: Path, tmp_path: Path
) -> None:
    """The target refuses to set a scan's quality: its files are copied and verified, the
    session fails with one line saying to run again (exit 1), and the copy straight to the
    target then sets the ratings."""
    source, target = _servers(tmp_path, archive)

    class NoRatings(PassThrough):
        upstream = target.url

        def intercept_write(self, method: str, path: str, body: bytes) -> bool:
            if method == "PUT" and "/scans/" in path and "quality=" in path:
                self.reply(403, b"the stand-in will not rate scans")
                return True
            return False

    proxy, stop = serve(NoRatings)
    try:
        code, _, err = cli("copy", "--from", source.url, "--to", proxy, "-p", "DEMO01",
                           "-s", "DEMO01_S001_MR1")  # fmt: skip
        assert code == 1, err
        said = [line for line in err.splitlines() if "scan qualities" in line]
        assert len(said) == 1, err
        assert said[0].startswith("failed: the scan qualities of DEMO01_S001_MR1: not set")
        assert "run the same command again" in said[0]
        assert "failed: DEMO01_S001_MR1" in err.splitlines()
        code, _, err = cli("copy", "--from", source.url, "--to", target.url, "-p", "DEMO01",
                           "-s", "DEMO01_S001_MR1")  # fmt: skip
        assert code == 0, err
        session = {k: v for k, v in _qualities(source).items() if k[0] == "DEMO01_S001_MR1"}
        assert {k: v for k, v in _qualities(target).items() if k in session} == session
        assert {q for q, _ in session.values()} - {"usable"}
    finally:
        stop()
        source.stop()
        target.stop()

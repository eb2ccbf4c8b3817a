"""Incremental sync: a re-run asks only about changed sessions; vanished ones are reported
and pruned on request.  Requests are counted on the server's side (its access log)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from tests.conftest import Server
from tests.standins import PassThrough
from tests.standins import serve as serve_standin
from tests.test_download import cli, local_files

ADMIN = ("admin", "admin")


def requests_logged(log: Path) -> list[str]:
    """``METHOD PATH`` of every request the server logged so far."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [" ".join(line.split()[2:4]) for line in lines]


def test_an_unchanged_rerun_costs_listings_per_project_and_changes_are_found(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    server = serve("--access-log", str(log))
    out = tmp_path / "out"
    base = ["download", "-w", server.url, "-p", "DEMO01", "-o", str(out), "--json"]
    code, first, _ = cli(*base)
    assert code == 0
    fetched = json.loads(first)["files"]
    walked = len(requests_logged(log))

    code, again, _ = cli(*base)
    assert code == 0
    doc = json.loads(again)
    assert doc["files"] == fetched
    assert doc["verified"] == fetched
    assert doc["sessions_unchanged"] == 4  # every session of DEMO01 in the demo archive
    rerun = requests_logged(log)[walked:]
    # Log in, the project list, DEMO01's subjects and experiments, log out: nothing per session.
    assert len(rerun) <= 5, rerun
    assert not any("/scans" in r or "/files" in r for r in rerun)

    # A file added to one session changes its last_modified: only that session is walked.
    sessions = requests.get(f"{server.url}/data/projects/DEMO01/experiments?format=json",
                            auth=ADMIN, timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
    changed, gone = sessions[0], sessions[1]
    put = requests.put(
        f"{server.url}/data/experiments/{changed['ID']}/scans/1/resources/DICOM/files/new.dcm",
        data=b"new bytes", params={"inbody": "true"}, auth=ADMIN, timeout=30,
    )  # fmt: skip
    assert put.status_code in (200, 201), put.text
    before = len(requests_logged(log))
    code, third, _ = cli(*base)
    assert code == 0
    doc = json.loads(third)
    assert doc["files"] == fetched + 1
    assert doc["sessions_unchanged"] == 3
    walked_now = requests_logged(log)[before:]
    per_session = {r.split("/")[3] for r in walked_now if r.split(" ")[1].startswith("/data/exp")}
    assert per_session == {changed["ID"]}
    assert any(p.endswith("/new.dcm") for p in local_files(out))

    # A session deleted on the server is reported, its files kept; --prune removes them.
    kept = {p for p in local_files(out) if f"/{gone['label']}/" in f"/{p}"}
    assert kept
    deleted = requests.delete(f"{server.url}/data/experiments/{gone['ID']}?removeFiles=true",
                              auth=ADMIN, timeout=30)  # fmt: skip
    assert deleted.ok, deleted.text
    code, fourth, _ = cli(*base)
    assert code == 0
    doc = json.loads(fourth)
    assert [v.endswith(f"/{gone['label']} ({gone['ID']})") for v in doc["vanished"]] == [True]
    assert doc["pruned"] == 0
    assert kept <= set(local_files(out))
    code, _, err = cli(*base[:-1], "--prune")
    assert code == 0
    assert "vanished: DEMO01/" in err
    assert f"pruned {len(kept)} files of those sessions" in err
    assert not kept & set(local_files(out))
    assert not list(out.rglob(gone["label"]))  # its folders went with its files
    code, checked, _ = cli("verify", "-o", str(out), "--offline")
    assert code == 0, checked


def test_prune_is_refused_with_a_shard(shared_server: Server, tmp_path: Path) -> None:
    code, _, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-o", str(tmp_path),
                       "--shard", "0/2", "--prune")  # fmt: skip
    assert code == 2
    assert "--prune cannot be used with --shard" in err


def test_a_record_is_reused_only_for_the_same_selection() -> None:
    from xnat_downloader.plan.sync import known_sessions, make_record, selection_key, vanished
    from xnat_downloader.xnat.model import Session
    from xnat_downloader.xnat.selection import Selection
    from xnat_downloader.xnat.walk import Gap

    one = Session("E1", "MR1", "P", "S1", "SUB", None, "xnat:mrSessionData", stamp="t1")
    two = Session("E2", "MR2", "P", "S1", "SUB", None, "xnat:mrSessionData", stamp="t2")
    key = selection_key(Selection(projects=("P",)))
    record = make_record(key, [one, two], [], [], [Gap("a.dcm", "no usable URI", "E2")])
    assert set(known_sessions(record, key)) == {"E1"}  # E2 was not listed whole: walked again
    assert known_sessions(record, selection_key(Selection(projects=("P", "Q")))) == {}
    assert known_sessions({"version": 1, "selection": key, "sessions": {"E1": 3}}, key) == {}
    assert [v.id for v in vanished(record, {"E2"})] == ["E1"]
    assert vanished({"version": 99, "sessions": {"E1": {}}}, set()) == []
    # A record damaged or edited by hand (lists for tables, numbers for lists) is read as
    # far as it makes sense, never a traceback (sessions as a list ended a run so).
    for damaged, gone in (({"version": 1, "sessions": [], "gone": 7}, []),
                          ({"version": 1, "sessions": {"E1": 5}, "gone": {"G": {"uris": 9}}},
                           ["G"])):  # fmt: skip
        assert [v.id for v in vanished(damaged, set())] == gone
        assert known_sessions(damaged, key) == {}


def test_rescan_lists_every_session_again(serve: Callable[..., Server], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = serve("--access-log", str(log))
    base = ["download", "-w", server.url, "-p", "DEMO02", "-o", str(tmp_path / "o"), "-q"]
    assert cli(*base)[0] == 0
    first = len(requests_logged(log))
    assert cli(*base, "--rescan")[0] == 0
    rescanned = requests_logged(log)[first:]
    assert sum("/scans" in r for r in rescanned) >= 4  # each session's scans listed again


def test_an_unchanged_rerun_with_metadata_asks_only_for_project_and_subject_documents(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    server = serve("--access-log", str(log))
    out = tmp_path / "out"
    base = ["download", "-w", server.url, "-p", "DEMO01", "-o", str(out), "--metadata", "xml",
            "--json"]  # fmt: skip
    code, first, _ = cli(*base)
    assert code == 0
    walked = len(requests_logged(log))
    code, again, _ = cli(*base)
    assert code == 0
    doc = json.loads(again)
    assert doc["failed"] == 0
    assert doc["files"] == json.loads(first)["files"]
    rerun = requests_logged(log)[walked:]
    assert not any(" /data/experiments/" in r for r in rerun), rerun  # no session or scan
    assert any(r.startswith("GET /data/projects/DEMO01?") for r in rerun)  # project doc again
    code, checked, _ = cli("verify", "-o", str(out), "--offline")
    assert code == 0, checked


def test_a_file_the_walk_could_not_use_fails_again_on_an_unchanged_rerun(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A listing row with no usable URI is a failure, named; the session it belongs to is
    not recorded as walked, so an unchanged re-run asks about it again and fails the same
    way instead of reusing a record that lacks the file (a silent gap)."""
    server = serve()
    sessions = requests.get(f"{server.url}/data/projects/DEMO01/experiments?format=json",
                            auth=ADMIN, timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
    spoiled = sessions[0]

    class SpoilsOneRow(PassThrough):
        upstream = server.url

        def edit(self, path: str, answer: requests.Response) -> bytes:
            if f"/experiments/{spoiled['ID']}/scans/ALL/files" not in path:
                return answer.content
            doc = answer.json()
            doc["ResultSet"]["Result"][0]["URI"] = ""
            return json.dumps(doc).encode()

    url, stop = serve_standin(SpoilsOneRow)
    try:
        out = tmp_path / "out"
        base = ["download", "-w", url, "-p", "DEMO01", "-o", str(out), "--json"]
        for _ in range(2):
            code, printed, err = cli(*base)
            assert code == 1, err
            doc = json.loads(printed)
            assert doc["failed"] == 1, doc
            assert f"a scan file of {spoiled['label']}" in err
    finally:
        stop()

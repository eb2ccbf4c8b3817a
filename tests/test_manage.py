"""``xnat-downloader project create`` and ``prearchive ls|archive|move|delete`` against
minixnat, with an upload to the prearchive checked when it is archived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, start_server
from tests.test_download import cli, local_files

ADMIN = ("admin", "admin")


@pytest.fixture
def server(archive: Path) -> Server:
    started = start_server(archive)
    yield started  # type: ignore[misc]
    started.stop()


def test_project_create(server: Server) -> None:
    code, out, err = cli("project", "create", "-w", server.url, "NEWP", "--name", "New one",
                         "--description", "made by the test", "--access", "protected")  # fmt: skip
    assert code == 0, err
    assert out.strip() == "created project NEWP (protected)"
    project = requests.get(f"{server.url}/data/projects/NEWP?format=json", auth=ADMIN, timeout=30)
    fields = project.json()["items"][0]["data_fields"]
    assert (fields["name"], fields["description"]) == ("New one", "made by the test")
    access = requests.get(f"{server.url}/data/projects/NEWP/accessibility", auth=ADMIN, timeout=30)
    assert access.text == "protected"
    code, out, err = cli("project", "create", "-w", server.url, "NEWP")
    assert code == 1
    assert "exists already" in err
    code, out, _ = cli("project", "create", "-w", server.url, "NEWQ", "--json")
    assert code == 0
    assert json.loads(out) == {"id": "NEWQ", "created": True}
    # An empty ID would ask for the project listing, which always "exists".
    code, out, err = cli("project", "create", "-w", server.url, " ")
    assert code == 2
    assert "name the project to create" in err


def test_upload_to_a_missing_project_names_the_command(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "x.zip"
    data.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    code, _, err = cli("upload", "-w", server.url, "-p", "NOPE", str(data))
    assert code == 2
    assert f"xnat-downloader project create -w {server.url} NOPE" in err


def test_prearchive_upload_archive_is_verified(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A downloaded session, uploaded to the prearchive of a new project.
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                       "-o", str(tmp_path / "dl"))  # fmt: skip
    assert code == 0, err
    assert cli("project", "create", "-w", server.url, "PRE")[0] == 0
    tree = tmp_path / "dl" / "DEMO01"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, out, err = cli("upload", "-w", server.url, "-p", "PRE", "--dest", "prearchive",
                         str(tree))  # fmt: skip
    assert code == 0, err
    records = list((tmp_path / "state").rglob("*.json"))
    assert len(records) == 1
    # ls, in text and JSON.
    code, out, _ = cli("prearchive", "ls", "-w", server.url, "-p", "PRE")
    assert code == 0
    assert out.strip().endswith("prearchive: 1 session")
    code, out, _ = cli("prearchive", "ls", "-w", server.url, "-p", "PRE", "--json")
    listed = json.loads(out)
    assert [s["name"] for s in listed] == ["DEMO01_S001_MR1"]
    # Archive by name: the archived files are checked against the record of the upload.
    code, out, err = cli("prearchive", "archive", "-w", server.url, "-p", "PRE",
                         "DEMO01_S001_MR1")  # fmt: skip
    assert code == 0, err
    dicoms = len(list(tree.glob("*/*/scans/*/resources/DICOM/files/*")))
    assert f"{dicoms} files verified against the upload" in out
    assert not list((tmp_path / "state").rglob("*.json"))  # the record is done with
    assert out.splitlines()[-1] == "archive: 1 session, 0 failed"
    code, _, err = cli("download", "-w", server.url, "-p", "PRE", "-o", str(tmp_path / "back"))
    assert code == 0, err
    dicom_files = {k: v for k, v in local_files(tree).items() if "/DICOM/" in k}
    back = local_files(tmp_path / "back" / "PRE")
    assert sorted(dicom_files.values()) == sorted(v for k, v in back.items() if "/DICOM/" in k)


def test_prearchive_move_delete_and_unknown_names(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                       "-o", str(tmp_path / "dl"))  # fmt: skip
    assert code == 0, err
    for project in ("PA", "PB"):
        assert cli("project", "create", "-w", server.url, project)[0] == 0
    tree = tmp_path / "dl" / "DEMO01"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli("upload", "-w", server.url, "-p", "PA", "--dest", "prearchive", str(tree))[0] == 0
    code, out, err = cli("prearchive", "move", "-w", server.url, "-p", "PA", "--all", "--to", "PB")
    assert code == 0, err
    assert json.loads(cli("prearchive", "ls", "-w", server.url, "-p", "PA", "--json")[1]) == []
    moved = json.loads(cli("prearchive", "ls", "-w", server.url, "-p", "PB", "--json")[1])
    assert len(moved) == 1
    code, out, err = cli("prearchive", "delete", "-w", server.url, "-p", "PB", "NO_SUCH")
    assert code == 2
    assert "no prearchive session 'NO_SUCH'" in err
    code, out, _ = cli("prearchive", "delete", "-w", server.url, moved[0]["src"], "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    assert json.loads(cli("prearchive", "ls", "-w", server.url, "-p", "PB", "--json")[1]) == []
    # Nothing left: --all has nothing to do (not a failure); no names and no --all is a
    # usage error, also as --json's one document.
    code, out, err = cli("prearchive", "archive", "-w", server.url, "-p", "PB", "--all")
    assert (code, out.strip()) == (0, "archive: 0 sessions, 0 failed"), err
    code, out, err = cli("prearchive", "archive", "-w", server.url, "-p", "PB", "--json")
    assert code == 2
    assert json.loads(out) == {"ok": False, "error": "name the sessions (or --all); see "
                               "'prearchive ls'", "exit": 2}  # fmt: skip


def test_a_prearchive_record_that_cannot_be_written_or_read_costs_only_the_check(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of what an upload sent to the prearchive is a local file. Where it cannot
    be written the upload still stands (a note says the later check is lost); where it
    cannot be read any more, 'prearchive archive' archives and says it could not check,
    exit 1 -- never a traceback."""
    code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                       "-o", str(tmp_path / "dl"))  # fmt: skip
    assert code == 0, err
    assert cli("project", "create", "-w", server.url, "PRE")[0] == 0
    tree = tmp_path / "dl" / "DEMO01"
    (tmp_path / "file").write_text("a file where the records' folder would go")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))
    code, _, err = cli("upload", "-w", server.url, "-p", "PRE", "--dest", "prearchive",
                       str(tree))  # fmt: skip
    assert code == 0, err
    assert "what was sent could not be recorded" in err
    assert "Traceback" not in err
    code, out, err = cli("prearchive", "archive", "-w", server.url, "-p", "PRE", "--all")
    assert code == 0, err  # nothing recorded: archived unchecked, as before records existed

    assert cli("project", "create", "-w", server.url, "PRE2")[0] == 0
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, _, err = cli("upload", "-w", server.url, "-p", "PRE2", "--dest", "prearchive",
                       str(tree))  # fmt: skip
    assert code == 0, err
    (record,) = (tmp_path / "state").rglob("*.json")
    record.write_text('[[12, "abc"], "not a file"]')
    code, out, err = cli("prearchive", "archive", "-w", server.url, "-p", "PRE2", "--all")
    assert code == 1, err
    assert "Traceback" not in err
    assert f"archived, but the record of what was sent ({record}) cannot be read" in out + err

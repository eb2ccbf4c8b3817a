"""minixnat.testing: the pytest fixture other projects use to test their XNAT scripts,
driven here the way they would drive it, with xnatpy and pyxnat."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyxnat
import requests
import xnat

from minixnat.testing import MiniXnat, start


def test_fixture_serves_an_empty_archive_to_xnatpy(minixnat: MiniXnat, tmp_path: Path) -> None:
    assert (minixnat.root / "minixnat.sqlite").exists()
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        assert list(session.projects) == []
        session.put("/data/projects/P1")
        session.clearcache()
        project = session.projects["P1"]
        subject = session.classes.SubjectData(parent=project, label="S1")
        session.clearcache()
        assert [s.label for s in session.projects["P1"].subjects.values()] == ["S1"]
        resource = session.classes.ResourceCatalog(parent=subject, label="NOTES")
        note = tmp_path / "note.txt"
        note.write_text("hello")
        resource.upload(str(note), "note.txt")
        session.clearcache()
        files = session.projects["P1"].subjects["S1"].resources["NOTES"].files
        assert list(files.keys()) == ["note.txt"]
        assert int(files["note.txt"].size) == 5


def test_fixture_works_with_pyxnat(minixnat: MiniXnat) -> None:
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    project = interface.select.project("P2")
    project.insert()
    subject = project.subject("S1")
    subject.insert()
    assert subject.exists()
    assert [p.id() for p in interface.select.projects()] == ["P2"]
    interface.disconnect()


def test_each_test_gets_a_fresh_server(minixnat: MiniXnat) -> None:
    projects = requests.get(f"{minixnat.url}/data/projects", auth=minixnat.auth, timeout=10)
    assert projects.json()["ResultSet"]["Result"] == []  # nothing from the tests before


def test_start_outside_pytest_and_stop(tmp_path: Path) -> None:
    began = time.monotonic()
    server = start(tmp_path / "a", user="ci", password="secret", latency_ms=0)
    ready_after = time.monotonic() - began
    try:
        answer = requests.get(f"{server.url}/data/auth", auth=("ci", "secret"), timeout=10)
        assert answer.text == "User 'ci' is logged in"
        assert ready_after < 30  # generous: a hung start fails, the speed is measured in bench
    finally:
        server.stop()
    try:
        requests.get(f"{server.url}/data/auth", timeout=2)
        raise AssertionError("the server still answers after stop()")
    except requests.ConnectionError:
        pass


def test_another_projects_suite_gets_the_fixture_either_way(tmp_path: Path) -> None:
    """As another project runs it: by the entry point alone, and named with
    `pytest -p minixnat.testing` (CONTRACT), which failed ('Plugin already registered under
    a different name') while the entry point had another name."""
    (tmp_path / "test_theirs.py").write_text(
        "import requests\n\n"
        "def test_theirs(minixnat):\n"
        "    got = requests.get(minixnat.url + '/data/projects', auth=minixnat.auth, timeout=10)\n"
        "    assert got.status_code == 200\n"
    )
    for extra in ([], ["-p", "minixnat.testing"]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout

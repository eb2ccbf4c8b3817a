"""Shared fixtures: demo archives and minixnat servers running as real processes on 127.0.0.1.

The tests drive the client and the server only through their public faces (HTTP, the
command lines, the Python API), as users and third-party clients do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
LAPTOP = {"width": 1366, "height": 860}
# As the machine's probe found: without these, Chromium keeps calling home on a closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SMALL = [
    "--projects",
    "2",
    "--subjects",
    "2",
    "--sessions",
    "2",
    "--scans",
    "3",
    "--files",
    "3",
    "--file-kb",
    "16",
    "--seed",
    "7",
]


def make_archive(root: Path, *extra: str) -> Path:
    subprocess.run(
        [BIN / "minixnat", "demo-data", str(root), *SMALL, *extra], check=True, capture_output=True
    )
    return root


@dataclass
class Server:
    url: str
    root: Path
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(root: Path, *flags: str, snapshots: bool = False, stderr: bool = False) -> Server:
    """``minixnat serve`` on a free port.  Without ``snapshots`` it makes none (the flag
    ``--no-snapshots``): tests that compare a session's files with what they sent must not
    meet a SNAPSHOTS resource that appears a moment after the import.  ``stderr``: kept
    for the test to read (``server.process.stderr``) once the server is stopped."""
    if not snapshots:
        flags = (*flags, "--no-snapshots")
    proc = subprocess.Popen(
        [BIN / "minixnat", "serve", "--root", str(root), "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr else None,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    scheme = "https" if "--tls-cert" in flags else "http"
    assert line.startswith(f"minixnat listening on {scheme}://127.0.0.1:"), line
    return Server(line.rsplit(" ", 1)[1], root, proc)


@pytest.fixture(scope="session")
def base_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_archive(tmp_path_factory.mktemp("base") / "archive")


@pytest.fixture
def archive(base_archive: Path, tmp_path: Path) -> Path:
    """A private copy of the demo archive, free to change."""
    copy = tmp_path / "archive"
    shutil.copytree(base_archive, copy)
    return copy


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started (a server's worker processes)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Running (a zombie left for a parent that never reaps counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Those of ``pids`` still running after ``timeout`` seconds (none, hopefully)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def new_project(archive: Path) -> Path:
    """The test's private archive with an empty project NEW, for imports to land in."""
    server = start_server(archive)
    created = requests.put(server.url + "/data/projects/NEW", auth=("admin", "admin"), timeout=60)
    server.stop()
    assert created.status_code == 200, created.text
    return archive


@pytest.fixture(scope="session")
def shared_server(base_archive: Path) -> Iterator[Server]:
    """One read-only server for tests that change nothing."""
    server = start_server(base_archive)
    yield server
    server.stop()


@pytest.fixture
def serve(archive: Path) -> Iterator[Callable[..., Server]]:
    """Start servers (with fault switches) on the test's private archive."""
    started: list[Server] = []

    def start(*flags: str, root: Path | None = None) -> Server:
        server = start_server(root or archive, *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Records the client keeps between runs (prearchive uploads) go to a test folder,
    never into the home folder of whoever runs the suite."""
    import os

    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


# -- the browser tests' Chromium -----------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one test module."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package, which "
            "`make test` installs (apt-get install chromium)"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) at laptop width, downloads allowed."""
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()

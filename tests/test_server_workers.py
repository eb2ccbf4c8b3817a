"""``minixnat serve --workers N``: one archive served from several processes.

Every worker answers requests (the kernel spreads connections over them), each sees what
the others wrote, a stop signal ends them all, and ``kill -9`` of the server leaves no
worker behind on its port.  An import cut short by ``kill -9`` is whole or absent after a
restart, as with one process.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import requests

from minixnat.store import Store
from minixnat.store.workflows import SNAPSHOTS
from tests.conftest import start_server
from tests.test_crash_safety import IMPORT, _bundle, assert_consistent
from tests.test_minixnat_writes import ADMIN, call, dicom_md5s, server_md5s
from tests.test_snapshots import snapshot_rows, wait_done


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:"):
            found.add(target)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie left for a parent that never reaps counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_every_worker_serves_and_sees_the_others_writes(archive: Path) -> None:
    server = start_server(archive, "--workers", "2")
    try:
        parent = server.process.pid
        (worker,) = workers_of(parent)
        before = {parent: sockets_of(parent), worker: sockets_of(worker)}
        # 24 kept-alive connections, each of which creates a subject and then reads back,
        # over a new connection each time, every subject made so far.
        sessions = [requests.Session() for _ in range(24)]
        made: list[str] = []
        for i, session in enumerate(sessions):
            label = f"W{i:02d}"
            url = f"{server.url}/data/projects/DEMO01/subjects/{label}"
            assert session.put(url, auth=ADMIN, timeout=30).status_code in (200, 201)
            made.append(label)
            for seen in made:
                got = requests.get(
                    f"{server.url}/data/projects/DEMO01/subjects/{seen}",
                    params={"format": "json"},
                    auth=ADMIN,
                    timeout=30,
                )
                assert got.status_code == 200, (seen, got.status_code)
        grown = {pid: len(sockets_of(pid) - old) for pid, old in before.items()}
        # Both processes hold some of the 24 open connections.
        assert grown[parent] > 0, grown
        assert grown[worker] > 0, grown
        assert grown[parent] + grown[worker] >= 24, grown
        for session in sessions:
            session.close()
    finally:
        server.stop()


def test_a_stop_signal_ends_every_worker(archive: Path) -> None:
    server = start_server(archive, "--workers", "3")
    workers = workers_of(server.process.pid)
    assert len(workers) == 2
    assert call(server, "GET", "/data/projects?format=json").status_code == 200
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    assert wait_gone(workers) == []


def test_kill_9_leaves_no_worker_on_the_port(archive: Path) -> None:
    server = start_server(archive, "--workers", "3")
    workers = workers_of(server.process.pid)
    port = server.url.rsplit(":", 1)[1]
    server.process.kill()
    server.process.wait(timeout=10)
    assert wait_gone(workers) == [], "workers outlived a killed server"
    # Nobody answers on the port any more, and a new server can take it.
    try:
        requests.get(server.url + "/data/projects", timeout=2)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("something still answers on the killed server's port")
    again = start_server(archive, "--port", port, "--workers", "2")
    try:
        assert again.url == server.url
        assert call(again, "GET", "/data/projects?format=json").status_code == 200
    finally:
        again.stop()


def test_imports_killed_with_workers_are_whole_or_absent(new_project: Path) -> None:
    """Real SIGKILLs at random moments of imports sent to several workers at once."""
    archive = new_project
    body = _bundle(archive)
    rng = random.Random(7)
    for _ in range(3):
        server = start_server(archive, "--workers", "2")
        workers = workers_of(server.process.pid)

        def send(url: str = server.url) -> None:
            try:  # answered or cut off: the archive must be consistent either way
                requests.post(
                    url + IMPORT + "&overwrite=delete",
                    data=body,
                    auth=ADMIN,
                    headers={"Content-Type": "application/zip"},
                    timeout=60,
                )
            except requests.ConnectionError:
                pass

        senders = [threading.Thread(target=send) for _ in range(2)]
        for sender in senders:
            sender.start()
        time.sleep(rng.uniform(0.05, 0.6))
        server.process.kill()
        server.process.wait(timeout=10)
        assert wait_gone(workers) == []
        for sender in senders:
            sender.join(timeout=60)
        assert_consistent(archive)
    server = start_server(archive, "--workers", "2")
    try:
        assert_consistent(archive)
        for session in ("DEMO01_S001_MR1", "DEMO01_S001_MR2"):
            uri = f"/data/archive/projects/NEW/subjects/DEMO01_S001/experiments/{session}"
            if call(server, "GET", f"{uri}?format=json").status_code == 200:
                assert server_md5s(server, uri) == dicom_md5s(archive, session)
    finally:
        server.stop()


def test_snapshot_runs_queued_elsewhere_are_made_by_the_first_process(archive: Path) -> None:
    """Only the first process draws snapshots; a run that another process queues (here a
    second connection to the database, as a worker's is) is found in the queue and made."""
    server = start_server(archive, "--workers", "2", snapshots=True)
    try:
        other = Store(archive)
        try:
            session = next(e for e in other.list_experiments(sessions_only=True))
            assert not other.pending_workflows(SNAPSHOTS)
            queued = other.queue_snapshots(session, user="admin", why="queued elsewhere")
        finally:
            other.close()
        done = wait_done(server, session.id)
        assert done["wrk_workflowData_id"] == str(queued.wrk_id), done
        assert done["status"] == "Complete", done
        scans = requests.get(
            f"{server.url}/data/experiments/{session.id}/scans",
            params={"format": "json"},
            auth=ADMIN,
            timeout=30,
        ).json()["ResultSet"]["Result"]
        assert any(snapshot_rows(server, session.id, scan["ID"]) for scan in scans)
    finally:
        server.stop()

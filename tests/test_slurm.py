"""Sharded downloads, ``slurm`` and ``status``: on a real single-node Slurm (issue 17)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, Server, start_server
from tests.slurmcluster import Cluster
from xnat_downloader.cli.main import build_parser
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.plan import Plan, PlanEntry
from xnat_downloader.plan.shard import Shard, assign, parse_shard, select
from xnat_downloader.xnat.model import RemoteFile

PASSWORD = "Sh4rd-pa55-word"


# -- the shard decision, pure -----------------------------------------------------------------
def entry(session: str, name: str, size: int) -> PlanEntry:
    remote = RemoteFile(f"/data/experiments/{session}/scans/1/resources/DICOM/files/{name}",
                        name, size, None, "P", "S", session, session, "scan", "DICOM")  # fmt: skip
    return PlanEntry(remote, f"P/S/{session}/{name}")


def test_shards_keep_sessions_whole_balance_bytes_and_cover_the_plan_once() -> None:
    sizes = {"E1": 900, "E2": 500, "E3": 400, "E4": 300, "E5": 200, "E6": 100}
    plan = Plan([entry(s, f"f{i}", size // 2) for s, size in sizes.items() for i in range(2)])
    where = assign(plan, 3)
    assert assign(plan, 3) == where  # every task computes the same
    loads: Counter[int] = Counter()
    for e in plan.entries:
        loads[where[f"P/{e.file.session_id}"]] += e.file.size or 0
    assert sorted(loads.values()) == [700, 800, 900]  # largest first, to the lightest
    parts = [select(plan, Shard(k, 3)) for k in range(3)]
    locals_ = [e.local for part in parts for e in part.entries]
    assert sorted(locals_) == sorted(e.local for e in plan.entries)  # all, once
    for part in parts:
        sessions = {e.file.session_id for e in part.entries}
        for s in sessions:  # a session's files are all in the same shard
            assert all(e in part.entries for e in plan.entries if e.file.session_id == s)


def test_shard_flags() -> None:
    assert parse_shard("2/4", {}) == Shard(2, 4)
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    assert parse_shard("slurm", env) == Shard(2, 4)
    for bad, message in (("4/4", "from 0 to N-1"), ("x", "give K/N"), ("slurm", "SLURM_ARRAY")):
        with pytest.raises(UsageError, match=message):
            parse_shard(bad, {})


def test_array_flags_out_of_range_are_refused_before_anything_is_asked(tmp_path: Path) -> None:
    """--max-running 0 is refused (it read as "no limit"), as is --shards 0; nothing is
    written and no server is asked (this one does not exist)."""
    from xnat_downloader import Connection, Selection, prepare_array

    conn = Connection("http://127.0.0.1:9")
    for flags, message in (({"shards": 2, "max_running": 0}, "--max-running 0"),
                           ({"shards": 0}, "--shards 0")):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            prepare_array(conn, Selection(projects=("P",)), tmp_path / "out", **flags)
    assert not (tmp_path / "out").exists()


def test_status_reads_around_a_damaged_array_record(tmp_path: Path) -> None:
    """The array's record (array.json: how many shards, the script) damaged or edited by
    hand is read around (the shards' folders say what there is), never a traceback."""
    from xnat_downloader.api.cluster import status

    slurm = tmp_path / ".xnat-downloader" / "slurm"
    slurm.mkdir(parents=True)
    for text in ("{not json", '{"shards": "four"}', '{"shards": 0}', "[4]"):
        (slurm / "array.json").write_text(text)
        assert status(tmp_path).shards == []
    (slurm / "array.json").write_text('{"shards": 2, "script": 7}')
    found = status(tmp_path)
    assert [(r.shard, r.state) for r in found.shards] == [
        ("0/2", "not started"),
        ("1/2", "not started"),
    ]
    assert "sbatch" not in found.rerun


def test_what_the_plan_could_not_cover_fails_in_the_array_too(
    shared_server: Server, tmp_path: Path
) -> None:
    """A selected session that is not there was said by 'slurm' and then forgotten: the
    array's tasks and 'status' reported everything done. The manifest now keeps it; shard 0
    counts it as failed, with its reason, and status says the array is not done."""
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    out = tmp_path / "out"
    planned = xdl("slurm", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
                  "-s", "NO_SUCH_SESSION", "-o", out, "--shards", "2", env=env)  # fmt: skip
    assert planned.returncode == 1, planned.stderr
    assert "not in the plan: session NO_SUCH_SESSION" in planned.stderr
    manifest = out / ".xnat-downloader" / "slurm" / "manifest.json"
    codes = []
    for k in range(2):
        task = xdl("download", "-w", shared_server.url, "--manifest", manifest, "-o", out,
                   "--shard", f"{k}/2", env=env)  # fmt: skip
        codes.append(task.returncode)
        if k == 0:
            assert "failed: session NO_SUCH_SESSION: not found" in task.stderr
            assert task.stdout.splitlines()[-1].endswith(" 1 failed")
    assert codes == [1, 0]
    summary = xdl("status", "-o", out, "--json", env=env)
    assert summary.returncode == 1
    assert json.loads(summary.stdout)["failed"] == 1


def test_a_request_ceiling_is_shared_by_the_tasks_that_run_at_once(
    shared_server: Server, tmp_path: Path
) -> None:
    """--max-requests 10 with two tasks at a time: each task starts at most 5 a second, and
    its command line says so in a form the download command reads."""
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    out = tmp_path / "out"
    done = xdl("slurm", "-w", shared_server.url, "-p", "DEMO01", "-o", out, "--shards", "4",
               "--max-running", "2", "--max-requests", "10", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = (out / ".xnat-downloader" / "slurm" / "array.sbatch").read_text()
    assert "starting at most 10 requests a second (5 each)" in script
    command = next(line for line in script.splitlines() if line.startswith("exec "))
    argv = shlex.split(command.replace("${SLURM_ARRAY_TASK_ID}", "0"))
    args = build_parser().parse_args(argv[argv.index("download") :])
    assert args.max_requests == 5
    assert args.shard == "0/4"


# -- on Slurm --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("slurm"))
    yield running
    running.stop()


@pytest.fixture
def server(archive: Path) -> Iterator[Server]:
    subprocess.run([BIN / "minixnat", "user", "add", "--root", str(archive), "carol",
                    "--password", PASSWORD], check=True)  # fmt: skip
    subprocess.run([BIN / "minixnat", "project", "member", "--root", str(archive), "DEMO01",
                    "carol", "member"], check=True)  # fmt: skip
    running = start_server(archive)
    yield running
    running.stop()


def xdl(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "xnat-downloader", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def verified_by_shard(out: Path) -> Counter[str]:
    """How many times each local path was reported verified, over every shard's reports."""
    seen: Counter[str] = Counter()
    for report in (out / ".xnat-downloader" / "shards").glob("*/reports/*.jsonl"):
        for line in report.read_text().splitlines():
            row = json.loads(line)
            if row["status"] == "verified":
                seen[row["local"]] += 1
    return seen


def test_a_slurm_array_downloads_the_selection_once_and_a_cancelled_task_is_resubmitted(
    cluster: Cluster, server: Server, tmp_path: Path
) -> None:
    env = {**cluster.env, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("XNAT_PASS", None)
    # The reference: the same selection as one ordinary download.
    whole = tmp_path / "whole"
    one = xdl("download", "-w", server.url, "-u", "carol", "--password", PASSWORD,
              "-p", "DEMO01", "-o", whole, "-q", env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    expected = sorted(
        p.relative_to(whole).as_posix()
        for p in whole.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts
    )  # fmt: skip

    out = tmp_path / "array"
    made = xdl("slurm", "-w", server.url, "-u", "carol", "--password", PASSWORD, "-p", "DEMO01",
               "-o", out, "--shards", "4", "--max-running", "2", "-j", "2", "--submit",
               "--json", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert (job["shards"], job["max_running"], job["connections"]) == (4, 2, 4)
    script = Path(job["script"])
    assert script == out.resolve() / ".xnat-downloader" / "slurm" / "array.sbatch"
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text
    assert PASSWORD not in text  # an alias token in a file only the user reads instead
    token = out / ".xnat-downloader" / "slurm" / "netrc"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert PASSWORD not in token.read_text()
    cluster.wait_for_job(job["job_id"])
    got = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts
    )  # fmt: skip
    assert got == expected
    seen = verified_by_shard(out)
    assert sorted(seen) == expected
    assert set(seen.values()) == {1}  # every file verified once, by one shard
    status = xdl("status", "-o", out, "--json", env=env)
    assert status.returncode == 0, status.stdout
    doc = json.loads(status.stdout)
    assert [r["state"] for r in doc["runs"]] == ["done"] * 4
    assert doc["verified"] == len(expected)

    # Again into a fresh tree, one task at a time; cancel the last task before it starts.
    again = tmp_path / "again"
    made = xdl("slurm", "-w", server.url, "-u", "carol", "--password", PASSWORD, "-p", "DEMO01",
               "-o", again, "--shards", "4", "--max-running", "1", "--submit", "--json",
               env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["job_id"]
    cancelled = cluster.run("scancel", f"{job_id}_3")
    assert cancelled.returncode == 0, cancelled.stderr
    cluster.wait_for_job(job_id)
    status = xdl("status", "-o", again, env=env)
    assert status.returncode == 1
    assert "shard 3/4: not started" in status.stdout
    rerun = next(line for line in status.stdout.splitlines() if line.startswith("to finish: "))
    command = rerun.removeprefix("to finish: ")
    assert command.startswith("sbatch --array=3 ")
    submitted = subprocess.run(
        [*command.split(" ", 2)[:2], "--parsable", command.split(" ", 2)[2]],
        env=cluster.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    cluster.wait_for_job(submitted.stdout.strip().split(";")[0])
    final = xdl("status", "-o", again, env=env)
    assert final.returncode == 0, final.stdout
    assert final.stdout.strip().splitlines()[-1].startswith("status: 4 runs, 4 done, 0 failed")
    got = sorted(
        p.relative_to(again).as_posix()
        for p in again.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts
    )  # fmt: skip
    assert got == expected
    checked = xdl("verify", "-o", again, "--offline", env=env)
    assert checked.returncode == 0, checked.stdout
    assert os.path.exists(again / ".xnat-downloader" / "shards" / "3-of-4" / "state.sqlite")


def verified_in(folder: Path) -> int:
    """How many files a shard's state database records as verified (0 before it has one)."""
    database = folder / "state.sqlite"
    if not database.exists():
        return 0
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM files WHERE status='verified'").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def test_status_tells_running_unfinished_and_done_shards_apart(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    slow = serve("--latency-ms", "150")
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    out = tmp_path / "out"
    first = xdl("download", "-w", slow.url, "-p", "DEMO01", "-o", out, "--shard", "0/2", "-q",
                env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = subprocess.Popen(
        [BIN / "xnat-downloader", "download", "-w", slow.url, "-p", "DEMO01", "-o", str(out),
         "--shard", "1/2", "-j", "1", "-q"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        folder = out / ".xnat-downloader" / "shards" / "1-of-2"
        deadline = time.monotonic() + 60
        while not verified_in(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = xdl("status", "-o", out, env=env)
        assert "shard 0/2: done" in running.stdout
        assert re.search(r"shard 1/2: running, \d+ of \d+ verified, 0 failed", running.stdout)
        assert running.returncode == 1
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    stopped = xdl("status", "-o", out, "--json", env=env)
    doc = json.loads(stopped.stdout)
    assert [(r["shard"], r["state"]) for r in doc["runs"]] == [("0/2", "done"),
                                                                ("1/2", "unfinished")]  # fmt: skip
    # Killed before its report: what its state records so far, of what its plan holds.
    planned = len(json.loads((folder / "manifest.json").read_text())["files"])
    assert (doc["runs"][1]["verified"], doc["runs"][1]["files"]) == (verified_in(folder), planned)
    assert 0 < verified_in(folder) < planned
    assert doc["rerun"].endswith("--shard 1/2")
    resumed = xdl("download", "-w", slow.url, "-p", "DEMO01", "-o", out, "--shard", "1/2", "-q",
                  env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    done = xdl("status", "-o", out, env=env)
    assert done.returncode == 0
    assert done.stdout.strip().splitlines()[-1].startswith("status: 2 runs, 2 done, 0 failed")

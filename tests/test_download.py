"""xnat-downloader end to end against minixnat: selection, layouts, resume, faults, bad input."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import BIN, Server, start_server
from tests.standins import Canned, serve
from xnat_downloader import Mode, Selection, download
from xnat_downloader.cli.main import run

ENV = {"XNAT_USER": "admin", "XNAT_PASS": "admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process (non-interactive), returning (exit, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in ("XNAT_USER", "XNAT_PASS", "XNAT_HOST")}
    os.environ.update(env if env is not None else ENV)
    try:
        code = run(list(args), stdout=out, stderr=err, interactive=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return code, out.getvalue(), err.getvalue()


def remote_files(server: Server, session: str = "XNAT_E00001") -> dict[str, tuple[int, str]]:
    rows = requests.get(
        f"{server.url}/data/experiments/{session}/scans/ALL/files",
        auth=("admin", "admin"),
        timeout=30,
    ).json()["ResultSet"]["Result"]
    return {r["URI"].split("/files/", 1)[1]: (int(r["Size"]), r["digest"]) for r in rows}


def local_files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and ".xnat-downloader" not in p.parts
    }


def count_files(root: Path) -> int:
    """How many files a running download has written so far (names only: a partial file
    may be renamed between being listed and being read)."""
    return sum(1 for p in root.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts)


def test_dry_run_prints_plan_and_fetches_nothing(shared_server: Server, tmp_path: Path) -> None:
    code, out, _ = cli(
        "download", "-w", shared_server.url, "-p", "DEMO01", "-o", str(tmp_path / "o"), "--dry-run"
    )
    assert code == 0
    last = out.strip().splitlines()[-1]
    count, size = last.removeprefix("plan: ").removesuffix(" bytes").split(" files, ")
    assert int(count) > 0
    assert int(size) > 0
    assert not (tmp_path / "o").exists()


def test_download_verifies_every_file_and_rerun_skips(
    shared_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    code, stdout, _ = cli(
        "download", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1", "-o", str(out)
    )
    assert code == 0
    remote = remote_files(shared_server)
    base = out / "DEMO01" / "DEMO01_S001" / "DEMO01_S001_MR1" / "scans"
    got = {
        str(p.relative_to(base)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in base.rglob("*")
        if p.is_file()
    }
    assert len(got) == len(remote)
    for rel, (_size, digest) in remote.items():
        assert digest in got.values(), rel
    assert stdout.strip().endswith(f"{len(remote)} verified, 0 failed")
    assert not list(out.rglob("*.xnatdl-part"))
    code, stdout, err = cli(
        "download", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1", "-o", str(out)
    )
    assert code == 0
    assert stdout.startswith(f"done: {len(remote)} files")
    # Nothing was fetched, so the summary gives no rate (it once said "0 B/s").
    summary = next(line for line in err.splitlines() if line.endswith("already verified"))
    assert re.fullmatch(
        rf"{len(remote)} files \(.+\) in \d+\.\d+ s; {len(remote)} already verified", summary
    )
    report = sorted((out / ".xnat-downloader" / "reports").glob("*.jsonl"))[-1]
    statuses = {json.loads(line)["status"] for line in report.read_text().splitlines()}
    assert statuses == {"skipped"}


@pytest.mark.parametrize(
    ("layout", "flags", "expected"),
    [
        (
            "xnat",
            [],
            "DEMO01/DEMO01_S001/DEMO01_S001_MR1/scans/1-T1w/resources/NIFTI/files/sidecar/T1w.json",
        ),
        (
            "xnat",
            ["--no-include-project", "--no-include-subject"],
            "DEMO01_S001_MR1/scans/1-T1w/resources/NIFTI/files/sidecar/T1w.json",
        ),
        ("simplified", [], "DEMO01/DEMO01_S001/DEMO01_S001_MR1/1-T1w/NIFTI/sidecar/T1w.json"),
        ("flat", [], "DEMO01/DEMO01_S001/DEMO01_S001_MR1/1-T1w_NIFTI_sidecar_T1w.json"),
    ],
)
def test_layouts(
    shared_server: Server, tmp_path: Path, layout: str, flags: list[str], expected: str
) -> None:
    code, _, _ = cli(
        "download",
        "-w",
        shared_server.url,
        "-p",
        "DEMO01",
        "-s",
        "DEMO01_S001_MR1",
        "--resource",
        "NIFTI",
        "--layout",
        layout,
        *flags,
        "-o",
        str(tmp_path),
    )
    assert code == 0
    assert (tmp_path / expected).is_file()
    assert len(local_files(tmp_path)) == 2


def test_selection_dimensions(shared_server: Server, tmp_path: Path) -> None:
    def plan(*flags: str) -> list[str]:
        code, out, err = cli(
            "download",
            "-w",
            shared_server.url,
            "-p",
            "DEMO01",
            "-o",
            str(tmp_path),
            "--dry-run",
            "--json",
            *flags,
        )
        assert code == 0, err
        return [e["local"] for e in json.loads(out)]

    everything = plan()
    t1 = plan("--scan-type", "t1*")
    assert t1
    assert all("/scans/1-T1w/" in p for p in t1)
    by_description = plan("--scan-type", "*mprage*")
    assert by_description == t1
    usable = plan("--quality", "usable")
    assert 0 < len(usable) < len(everything)
    mixed = plan("-s", "DEMO01_S001_MR1", "-s", "XNAT_E00003")
    assert {p.split("/")[2] for p in mixed} <= {"DEMO01_S001_MR1", "DEMO01_S001_MR2"}
    assert len({p.split("/")[2] for p in mixed}) == 2
    subject = plan("--subject", "DEMO01_S002")
    assert subject
    assert all(p.split("/")[1] == "DEMO01_S002" for p in subject)
    dicom = plan("--resource", "DICOM")
    assert all("/resources/DICOM/" in p for p in dicom)
    # Exclusions: what they match leaves, the rest stays, and they beat an inclusion.
    no_dicom = plan("--exclude-resource", "dicom")
    assert no_dicom
    assert sorted(no_dicom + dicom) == sorted(everything)
    assert plan("--resource", "DICOM", "--exclude-resource", "DIC*") == []
    no_t1 = plan("--exclude-scan-type", "*mprage*")
    assert sorted(no_t1 + t1) == sorted(everything)
    extras = plan("--no-scans", "--session-resources", "--assessors", "--recons")
    assert any("/resources/QC/files/report.txt" in p for p in extras)
    assert any("/assessors/" in p for p in extras)
    assert any("/reconstructions/" in p for p in extras)
    ranged = plan("--since", "2100-01-01")
    assert ranged == []
    # The demo archive was made today: added since 2000, not until then.
    assert plan("--added-since", "2000-01-01") == everything
    assert plan("--added-until", "2000-01-01") == []


def test_list_file_with_bom_crlf_header(shared_server: Server, tmp_path: Path) -> None:
    listing = tmp_path / "sessions.csv"
    listing.write_bytes("\ufeffsession,note\r\nDEMO01_S001_MR1,x\r\n\r\nXNAT_E00003,y\r\n".encode())
    code, out, _ = cli(
        "download",
        "-w",
        shared_server.url,
        "-p",
        "DEMO01",
        "-s",
        f"@{listing}",
        "-o",
        str(tmp_path / "o"),
        "--dry-run",
        "--json",
    )
    assert code == 0
    sessions = {e["local"].split("/")[2] for e in json.loads(out)}
    assert sessions == {"DEMO01_S001_MR1", "DEMO01_S001_MR2"}
    bad = tmp_path / "bad.txt"
    bad.write_text("DEMO01_S001_MR1\nnot a label\n")
    code, _, err = cli(
        "download",
        "-w",
        shared_server.url,
        "-p",
        "DEMO01",
        "-s",
        f"@{bad}",
        "-o",
        str(tmp_path / "o"),
        "--dry-run",
    )
    assert code == 2
    assert "line 2" in err


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--since", "2020-13-01"], ENV, "--since '2020-13-01'"),
        (
            ["--added-since", "2025-02-01", "--added-until", "2025-01-01"],
            ENV,
            "--added-since 2025-02-01 is after --added-until 2025-01-01",
        ),
        (["-p", "NOPE"], ENV, "project 'NOPE' does not exist"),
        ([], {"XNAT_USER": "admin", "XNAT_PASS": "wrong"}, "wrong user name or password"),
        (["-j", "0"], ENV, "jobs (-j) must be between 1 and 32, not 0"),
        (["-j", "33"], ENV, "jobs (-j) must be between 1 and 32, not 33"),
        (["--max-rate", "0"], ENV, "--max-rate 0.0 must be a positive"),
        (["--max-requests", "-1"], ENV, "--max-requests -1 must be a positive number"),
        (["-p", "@/nonexistent/list.txt"], ENV, "cannot read list file /nonexistent/list.txt"),
    ],
)
def test_bad_input_exits_2(
    shared_server: Server, tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    base = ["download", "-w", shared_server.url, "-o", str(tmp_path / "o")]
    if "-p" not in args:
        base += ["-p", "DEMO01"]
    code, _, err = cli(*base, *args, env=env)
    assert code == 2
    assert needle in err


def test_unwritable_output_exits_before_any_request(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x")
    # The server URL points nowhere: an exit 2 naming the directory proves no request ran.
    code, _, err = cli(
        "download", "-w", "http://127.0.0.1:9", "-p", "P", "-o", str(blocked / "sub")
    )
    assert code == 2
    assert "output directory" in err


def test_nothing_matched_is_exit_0_and_says_so(shared_server: Server, tmp_path: Path) -> None:
    code, out, _ = cli(
        "download",
        "-w",
        shared_server.url,
        "-p",
        "DEMO01",
        "--scan-type",
        "nonexistent*",
        "-o",
        str(tmp_path),
    )
    assert code == 0
    assert "nothing matched" in out
    assert "nonexistent*" in out


def test_ls_counts_scan_types(shared_server: Server) -> None:
    code, out, _ = cli("ls", "-w", shared_server.url, "-p", "DEMO01", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["scan_types"]
    assert sum(doc["scan_types"].values()) > 0
    assert doc["bytes"] > 0
    assert all(s["project"] == "DEMO01" for s in doc["sessions"])


@pytest.mark.parametrize("transfer", ["files", "zip"])
@pytest.mark.parametrize(
    "flags",
    [
        ["--drop-rate", "0.3", "--chaos-seed", "3"],
        ["--error-rate", "0.2", "--chaos-seed", "5"],
        # Without Range every drop costs the whole file again, and a file dropped many
        # times over waits out the backoff of each try (0.5 s, 1 s, 2 s, …): at 0.3 one
        # unlucky file made this test take 50 s; at 0.2 such runs of drops are rare.
        ["--drop-rate", "0.2", "--no-range", "--chaos-seed", "9"],
    ],
)
def test_faults_still_give_every_file_verified(
    serve: Callable[..., Server], tmp_path: Path, flags: list[str], transfer: str
) -> None:
    server = serve(*flags)
    code, out, err = cli(
        "download",
        "-w",
        server.url,
        "-p",
        "DEMO01",
        "-o",
        str(tmp_path),
        "--session-resources",
        "--transfer",
        transfer,
    )
    assert code == 0, err
    files, rest = out.strip().removeprefix("done: ").split(" files, ", 1)
    assert rest.endswith(f"{files} verified, 0 failed")
    assert not list(tmp_path.rglob("*.xnatdl-part"))


def test_session_expiry_relogs_in(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve("--session-ttl", "0.3", "--latency-ms", "60")
    code, out, err = cli(
        "download", "-w", server.url, "-p", "DEMO01", "-o", str(tmp_path), "-j", "2"
    )
    assert code == 0, err
    assert out.strip().endswith(" 0 failed")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_kill_then_resume_completes(
    serve: Callable[..., Server], tmp_path: Path, how: signal.Signals
) -> None:
    """Killed outright, or stopped by SIGTERM (`kill`, Slurm's scancel), which ends the run
    as Ctrl-C does: one line saying how to resume, exit 143, no traceback."""
    server = serve("--latency-ms", "100")  # file by file, 2 at once: 42 files take seconds
    out = tmp_path / "o"
    env = {**os.environ, **ENV}
    cmd = [
        BIN / "xnat-downloader",
        "download",
        "-w",
        server.url,
        "-p",
        "DEMO01",
        "-o",
        str(out),
        "--transfer",
        "files",
        "-j",
        "2",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and count_files(out) < 3:
        time.sleep(0.1)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    if how == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.decode().splitlines()[-1] == "interrupted: run the same command again to resume"
        assert b"Traceback" not in err
    before = {p: d for p, d in local_files(out).items() if not p.endswith(".xnatdl-part")}
    assert before, "nothing was downloaded before the kill"
    done = subprocess.run(
        [*cmd[:-2], "-j", "8"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(" 0 failed")
    after = local_files(out)
    assert not [p for p in after if p.endswith(".xnatdl-part")]
    for path, digest in before.items():
        assert after[path] == digest
    report = sorted((out / ".xnat-downloader" / "reports").glob("*.jsonl"))[-1]
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    skipped = {r["local"] for r in rows if r["status"] == "skipped"}
    assert set(before) <= skipped  # nothing verified before the kill was fetched again


def test_second_run_on_same_directory_refuses(serve: Callable[..., Server], tmp_path: Path) -> None:
    # Slow enough that the first run is still going when the second starts.
    server = serve("--conn-mbps", "0.1", "--latency-ms", "200")
    env = {**os.environ, **ENV}
    cmd = [
        str(BIN / "xnat-downloader"),
        "download",
        "-w",
        server.url,
        "-p",
        "DEMO01",
        "-o",
        str(tmp_path),
    ]
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline
            and not (tmp_path / ".xnat-downloader" / "state.sqlite").exists()
        ):
            time.sleep(0.05)
        second = subprocess.run(
            cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
        assert second.returncode == 2
        assert "another xnat-downloader run" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_catalog_from_download_page_round_trip(shared_server: Server, tmp_path: Path) -> None:
    spec = {
        "sessions": ["DEMO01:DEMO01_S001:DEMO01_S001_MR1:XNAT_E00001"],
        "projectIds": ["DEMO01"],
        "scan_types": ["T1w", "T2w"],
        "scan_formats": ["DICOM"],
    }
    cid = requests.post(
        shared_server.url + "/xapi/archive/download", json=spec, auth=("admin", "admin"), timeout=30
    ).text
    xml = requests.get(
        f"{shared_server.url}/xapi/archive/download/{cid}/xml", auth=("admin", "admin"), timeout=30
    ).content
    catalog = tmp_path / "catalog.xml"
    catalog.write_bytes(xml)
    out = tmp_path / "o"
    code, _stdout, err = cli(
        "download", "-w", shared_server.url, "--catalog", str(catalog), "-o", str(out)
    )
    assert code == 0, err
    got = local_files(out)
    assert all(p.startswith("DEMO01_S001_MR1/scans/") for p in got)
    assert {p.split("/")[2] for p in got} == {"1-T1w", "2-T2w"}
    # The run saved its manifest: a dry run from it plans the same files.
    manifest = out / ".xnat-downloader" / "manifest.json"
    code, again, _ = cli(
        "download",
        "-w",
        shared_server.url,
        "--manifest",
        str(manifest),
        "-o",
        str(out),
        "--dry-run",
    )
    assert code == 0
    assert again.strip().splitlines()[-1].startswith(f"plan: {len(got)} files")
    saved = (out / ".xnat-downloader" / "manifest.xml").read_text()
    assert saved.count("<cat:entry ") == len(got)


CHOOSER = b"Choose the project(s): "  # the seed tool's prompt, word for word


def on_pty(argv: list[str], env: dict[str, str], reply: bytes, stdout: Path | None = None,
           before: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[bytes, int]:  # fmt: skip
    """Run ``argv`` on a pseudo-terminal (stdout to the file ``stdout`` if given), answer
    each prompt of ``before`` in turn, then the project chooser's with ``reply``; what the
    terminal showed, and the exit."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: the program under test, on a terminal
        if stdout is not None:
            os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.execve(argv[0], argv, env)
    prompts = [*before, (CHOOSER, reply)]
    seen, answered = b"", 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if answered < len(prompts) and seen.endswith(prompts[answered][0]):
            os.write(fd, prompts[answered][1])
            answered += 1
    _, status = os.waitpid(pid, 0)
    assert answered == len(prompts), seen.decode(errors="replace")[-500:]
    return seen, os.waitstatus_to_exitcode(status)


def test_legacy_seed_invocation_with_chooser(shared_server: Server, tmp_path: Path) -> None:
    """``python -m xnat_downloader -o DIR -w URL -u USER`` with the menu, on a real pty."""
    out_file = tmp_path / "stdout.txt"
    argv = [str(BIN / "python"), "-m", "xnat_downloader", "-o", str(tmp_path), "-w",
            shared_server.url, "-u", "admin", "-s", "DEMO02_S001_MR1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("XNAT_PASS", "XNAT_USER")}
    # The seed's own dialogue: "password: " (no echo), then "Choose the project(s): ".
    seen, code = on_pty(argv, {**env, "HOME": str(tmp_path)}, b"2\n", out_file,
                        before=((b"password: ", b"admin\n"),))  # fmt: skip
    assert b"admin" not in seen.split(b"password: ", 1)[1].split(b"\n", 1)[0]  # not echoed
    assert b"1) DEMO01" in seen
    assert b"2) DEMO02" in seen
    assert code == 0, seen.decode(errors="replace")[-500:]
    assert (tmp_path / "DEMO02" / "DEMO02_S001" / "DEMO02_S001_MR1").is_dir()
    # The menu and prompt went to the terminal; stdout (a file here) holds the result.
    printed = out_file.read_text()
    assert "DEMO01" not in printed
    assert "Choose" not in printed
    assert printed.strip().splitlines()[-1].startswith("done: ")


def test_alias_token_login_and_a_revoked_token(shared_server: Server, tmp_path: Path) -> None:
    """A token is used as user and password; a wrong secret is refused once, with the
    lockout warning, and the secret is never echoed."""
    token = requests.get(
        f"{shared_server.url}/data/services/tokens/issue", auth=("admin", "admin"), timeout=30
    ).json()
    alias, secret = token["alias"], token["secret"]
    base = ["download", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1"]
    code, out, err = cli(
        *base, "-o", str(tmp_path / "a"), env={"XNAT_USER": alias, "XNAT_PASS": secret}
    )
    assert code == 0, err
    assert out.strip().splitlines()[-1].endswith(" 0 failed")
    code, _, err = cli(
        *base, "-o", str(tmp_path / "b"), env={"XNAT_USER": alias, "XNAT_PASS": secret + "x"}
    )
    assert code == 2
    assert f"wrong user name or password for {alias!r}" in err
    assert "tried once" in err
    assert secret not in err


def test_debug_log_per_run_without_secrets(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, err = cli(
        "download",
        "-w",
        shared_server.url,
        "-u",
        "admin",
        "--password",
        "admin",
        "-p",
        "DEMO01",
        "-s",
        "DEMO01_S001_MR1",
        "--max-rate",
        "100",
        "-o",
        str(out),
        env={},
    )
    assert code == 0, err
    logs = list((out / ".xnat-downloader" / "logs").glob("run-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert f"debug log: {logs[0]}" in err
    assert "--password ***" in text
    assert "admin --password admin" not in text
    assert "JSESSIONID" not in text
    assert "GET " in text  # every request is there, with its status
    verified = [line for line in text.splitlines() if " verified " in line]
    assert len(verified) == len(local_files(out))


def test_zip_mode_gives_the_same_files_and_says_why(shared_server: Server, tmp_path: Path) -> None:
    base = ["download", "-w", shared_server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1"]
    code, _, err = cli(*base, "-o", str(tmp_path / "zip"), "--transfer", "zip", "-v")
    assert code == 0, err
    assert "zip: /data/experiments/" in err
    code, _, err = cli(*base, "-o", str(tmp_path / "files"), "--transfer", "files")
    assert code == 0, err
    zipped, single = local_files(tmp_path / "zip"), local_files(tmp_path / "files")
    assert zipped
    assert zipped == single
    log = next((tmp_path / "zip" / ".xnat-downloader" / "logs").glob("*.log")).read_text()
    assert "format=zip" in log  # the bytes really came as zips
    assert not re.search(r"GET \S+/files/2\.25\.", log)  # ... and not file by file


def test_server_restart_mid_run(archive: Path, tmp_path: Path) -> None:
    """The server goes away mid-run and comes back on the same port: the run waits,
    retries, and finishes with every file verified."""
    port = free_port()
    server = start_server(archive, "--port", str(port), "--conn-mbps", "1")
    out = tmp_path / "o"
    env = {**os.environ, **ENV}
    proc = subprocess.Popen(
        [BIN / "xnat-downloader", "download", "-w", server.url, "-p", "DEMO01", "-o", str(out),
         "-j", "4", "--transfer", "files"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count_files(out) < 3:
            time.sleep(0.1)
        server.process.kill()
        server.process.wait()
        time.sleep(1.0)
        server = start_server(archive, "--port", str(port))
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 0, stderr
    files, rest = stdout.strip().splitlines()[-1].removeprefix("done: ").split(" files, ", 1)
    assert rest.endswith(f"{files} verified, 0 failed")
    assert not list(out.rglob("*.xnatdl-part"))


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, limit: int) -> Callable[[], None]:
    """Data writes find the disk full (ENOSPC) once ``limit`` bytes are written; the
    returned function gives the space back."""
    import xnat_downloader.transfer.download as download_mod
    import xnat_downloader.transfer.zipfetch as zipfetch_mod

    real = download_mod.write_chunk
    written = [0]

    def full(handle: Any, md5: Any, data: bytes) -> None:
        written[0] += len(data)
        if written[0] > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, md5, data)

    def restore() -> None:
        monkeypatch.setattr(download_mod, "write_chunk", real)
        monkeypatch.setattr(zipfetch_mod, "write_chunk", real)

    monkeypatch.setattr(download_mod, "write_chunk", full)
    monkeypatch.setattr(zipfetch_mod, "write_chunk", full)
    return restore


@pytest.mark.parametrize("mode", [Mode.FILES, Mode.ZIP])
def test_full_disk_leaves_no_partial_file_and_a_rerun_finishes(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: Mode
) -> None:
    """ENOSPC injected after some bytes: every file not fetched failed with 'disk full', no
    partial or final file for what failed; with space again, a re-run completes."""
    restore = fill_disk_after(monkeypatch, 40_000)
    out = tmp_path / "o"
    selection = Selection(projects=("DEMO01",), sessions=("DEMO01_S001_MR1",))
    report = download(shared_server.url, selection, out, user="admin", password="admin", mode=mode)
    assert report.failed > 0
    errors = {o.error for o in report.outcomes if o.status == "failed"}
    assert all("disk full" in e for e in errors), errors
    assert not list(out.rglob("*.xnatdl-part"))
    failed = {o.job.local for o in report.outcomes if o.status == "failed"}
    assert not [p for p in failed if (out / p).exists()]
    restore()
    again = download(shared_server.url, selection, out, user="admin", password="admin", mode=mode)
    assert again.ok
    assert again.skipped == report.files - report.failed


@pytest.mark.parametrize("jobs", ["1", "16"])
@pytest.mark.parametrize("mode", ["files", "zip"])
def test_full_disk_is_said_once_and_nothing_more_is_started(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, jobs: str
) -> None:
    """The first file to find the disk full says so, naming the file system; no other file
    is started; every file not verified is counted in 'done:' and the exit status is 1."""
    fill_disk_after(monkeypatch, 40_000)
    out = tmp_path / "o"
    code, text, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-s",
                          "DEMO01_S001_MR1", "-o", str(out), "--transfer", mode,
                          "-j", jobs)  # fmt: skip
    assert code == 1, err
    failed_lines = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed_lines) == 1, err
    assert "disk full" in failed_lines[0]
    assert "file system /" in failed_lines[0]
    done = text.splitlines()[-1]
    verified = len([p for p in out.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts])
    total = len(remote_files(shared_server))
    assert done.endswith(f" {total - verified} failed"), (done, verified)
    assert total - verified > 1
    assert not list(out.rglob("*.xnatdl-part"))


def ends_with_one_error(server: Server, out: Path, mode: str) -> tuple[tuple[str, ...], str]:
    """Download one session into ``out``, a run that a local write failure ends: exit 1,
    no traceback, one ``error:`` line.  That line, and the arguments to run it again."""
    args = ("download", "-w", server.url, "-p", "DEMO01", "-s", "DEMO01_S001_MR1",
            "-o", str(out), "--transfer", mode)  # fmt: skip
    code, _, err = cli(*args)
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return args, errors[0]


@pytest.mark.parametrize("mode", ["files", "zip"])
def test_full_disk_on_the_state_ends_the_run_cleanly(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The state database cannot be written (SQLite's 'database or disk is full') after
    some files: one error line naming the file system, exit 1, no traceback, the files
    recorded so far kept, nothing half-written; with space again a re-run completes."""
    import sqlite3

    real_connect = sqlite3.connect
    full = [True]

    class FillsUp:
        """The state's connection; its second group of verified rows finds the disk full."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn, self.groups = conn, 0

        def executemany(self, *args: Any) -> Any:
            self.groups += 1
            if full[0] and self.groups > 1:
                raise sqlite3.OperationalError("database or disk is full")
            return self.conn.executemany(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

    import xnat_downloader.transfer.download as download_mod

    monkeypatch.setattr(download_mod, "GROUP_FILES", 3)

    def connect(path: Any, *args: Any, **kwargs: Any) -> Any:
        conn = real_connect(path, *args, **kwargs)
        return FillsUp(conn) if Path(path).name == "state.sqlite" else conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    out = tmp_path / "o"
    args, error = ends_with_one_error(shared_server, out, mode)
    assert "disk full" in error
    assert "state.sqlite" in error
    assert "file system /" in error
    # Files cut short stay partial files (continued by the re-run); none looks complete.
    served = {md5 for _size, md5 in remote_files(shared_server).values()}
    finished = {k: v for k, v in local_files(out).items() if not k.endswith(".xnatdl-part")}
    assert all(md5 in served for md5 in finished.values()), finished
    full[0] = False
    code, text, err = cli(*args)
    assert code == 0, err
    done = text.splitlines()[-1]
    assert done.endswith(" 0 failed"), done
    total = len(remote_files(shared_server))
    assert f"{total} files" in done
    assert f"{total} verified" in done


@pytest.mark.parametrize("mode", ["files", "zip"])
def test_a_failed_sync_records_nothing_it_was_to_make_durable(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The file system reports failed writes only when synced (network and cluster file
    systems can): one error line, exit 1, and no file of that group or after it is
    recorded as verified (a re-run hashes them again, and completes)."""
    import xnat_downloader.transfer.download as download_mod

    real = download_mod.sync_filesystem
    synced_before_failing: list[int] = []
    failing = [True]

    def sync(folder: Path) -> None:
        if failing[0] and synced_before_failing:
            raise OSError(errno.EIO, "Input/output error")
        synced_before_failing.append(count_files(out))
        real(folder)

    monkeypatch.setattr(download_mod, "GROUP_FILES", 3)
    monkeypatch.setattr(download_mod, "sync_filesystem", sync)
    out = tmp_path / "o"
    args, error = ends_with_one_error(shared_server, out, mode)
    assert "Input/output error" in error
    with sqlite3.connect(out / ".xnat-downloader" / "state.sqlite") as db:
        (recorded,) = db.execute("SELECT count(*) FROM files WHERE status='verified'").fetchone()
    assert 0 < recorded <= synced_before_failing[0]
    assert recorded < count_files(out)
    failing[0] = False
    code, text, err = cli(*args)
    assert code == 0, err
    total = len(remote_files(shared_server))
    assert text.splitlines()[-1].endswith(f"{total} verified, 0 failed")


def test_a_log_that_cannot_be_written_is_one_warning(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's log hits a full disk: one warning, no 'Logging error' traceback, and the
    download itself completes."""
    from xnat_downloader.cli.common import RunLogHandler

    class FullFile(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunLogHandler, "_open", lambda self: FullFile())
    out = tmp_path / "o"
    code, text, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-s",
                          "DEMO01_S001_MR1", "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert "Traceback" not in err
    assert "Logging error" not in err
    warnings = [line for line in err.splitlines() if "the run's log stops here" in line]
    assert len(warnings) == 1, err
    assert "disk full" in warnings[0]
    assert "file system /" in warnings[0]
    assert text.splitlines()[-1].endswith(" 0 failed")


@pytest.mark.parametrize("target", ["manifest.json", "report"])
def test_full_disk_on_the_manifest_or_report(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """No room for the manifest (written before the first file): the run ends with one
    line, exit 1.  No room for the report (written after the last): the files stay
    verified, exit 0, one warning.  Neither leaves a half-written file behind."""
    real = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        wanted = f"{target}.tmp" if target != "report" else ".jsonl.tmp"
        if self.name.endswith(wanted):
            real(self, "{")  # a partial file, as a full disk leaves one
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "o"
    code, text, err = cli("download", "-w", shared_server.url, "-p", "DEMO01", "-s",
                          "DEMO01_S001_MR1", "-o", str(out))  # fmt: skip
    assert "Traceback" not in err
    assert not list(out.rglob("*.tmp"))
    if target == "report":
        assert code == 0, err
        assert text.splitlines()[-1].endswith(" 0 failed")
        warnings = [line for line in err.splitlines() if line.startswith("warning: no report")]
        assert len(warnings) == 1, err
        assert "disk full" in warnings[0]
        assert not list(out.rglob("*.jsonl"))
    else:
        assert code == 1, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert "disk full" in errors[0]
        assert "manifest.json" in errors[0]
        assert not list(out.rglob("*.dcm"))


def test_no_access_to_a_private_project(
    archive: Path, serve: Callable[..., Server], tmp_path: Path
) -> None:
    mx = [str(BIN / "minixnat")]
    subprocess.run(
        [*mx, "user", "add", "--root", str(archive), "bob", "--password", "pw"], check=True
    )
    subprocess.run(
        [*mx, "project", "access", "--root", str(archive), "DEMO01", "private"], check=True
    )
    server = serve()
    code, _, err = cli(
        "download", "-w", server.url, "-p", "DEMO01", "-o", str(tmp_path / "o"),
        env={"XNAT_USER": "bob", "XNAT_PASS": "pw"},
    )  # fmt: skip
    assert code == 2
    assert "'DEMO01'" in err
    assert "no access" in err
    assert not local_files(tmp_path / "o")


def test_unreachable_server_exits_2(tmp_path: Path) -> None:
    code, _, err = cli(
        "download", "-w", f"http://127.0.0.1:{free_port()}", "-p", "P", "-o", str(tmp_path)
    )
    assert code == 2
    assert "cannot reach http://127.0.0.1:" in err


class _LoginPortal(Canned):
    """A hostile stand-in: every URL answers 200 with an HTML login page (as an SSO portal
    in front of XNAT does)."""

    def answer(self, path: str) -> tuple[str, bytes]:
        return "text/html", b"<!DOCTYPE html><html><body><form>Login</form></body></html>"


def _download_from(stand_in: type[Canned], out: Path) -> tuple[int, str, str]:
    """``download -p P -o out`` from a stand-in server; its exit code, stdout and stderr."""
    url, stop = serve(stand_in)
    try:
        return cli("download", "-w", url, "-p", "P", "-o", str(out))
    finally:
        stop()


def test_login_page_is_an_error_never_data(tmp_path: Path) -> None:
    code, _, err = _download_from(_LoginPortal, tmp_path / "o")
    assert code == 2
    assert "HTML page" in err
    assert not local_files(tmp_path / "o")


class _DeepJson(Canned):
    """A hostile stand-in: logs anyone in, then answers every listing with JSON nested
    200,000 deep (Python's parser gives up with RecursionError, not a ValueError)."""

    def answer(self, path: str) -> tuple[str, bytes]:
        if path.startswith("/data/JSESSION"):
            return "text/plain", b"0123456789ABCDEF"
        return "application/json", b"[" * 200_000 + b"]" * 200_000


def test_json_nested_too_deeply_is_an_error_not_a_crash(tmp_path: Path) -> None:
    code, out, err = _download_from(_DeepJson, tmp_path / "o")
    assert code == 1
    assert "Traceback" not in err + out
    assert "is not JSON" in err
    assert not local_files(tmp_path / "o")


def test_ctrl_c_at_the_chooser_starts_nothing(shared_server: Server, tmp_path: Path) -> None:
    """On a real pty: Ctrl-C at the project prompt says nothing was started and leaves no
    output folder."""
    out = tmp_path / "never"
    argv = [str(BIN / "xnat-downloader"), "-o", str(out), "-w", shared_server.url, "-u", "admin"]
    seen, code = on_pty(argv, {**os.environ, "XNAT_PASS": "admin"}, b"\x03")
    assert b"nothing was started" in seen
    assert code == 2
    assert not out.exists()

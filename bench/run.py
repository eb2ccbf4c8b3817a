"""Benchmarks: minixnat against nginx, and xnat-downloader against other clients.

Not a test: it prints figures and writes ``bench/results.json`` and ``bench/results.svg``.
Run it with the project's venv (``make bench``); it needs Debian's ``nginx``, ``curl`` and
``aria2c``.  Parts:

* ``server`` (minixnat's speed and memory): one 1 GiB file fetched with curl from minixnat
  and from nginx serving the same archive folder (MB/s); 2,000 files of 300 KiB fetched by
  ``curl --parallel`` from both (files/s); minixnat's peak RSS while it serves the 1 GiB
  file, a zip and a tar.gz of it.
* ``client`` (the engine): the same 2,000 files fetched by xnat-downloader, by xnatpy's
  ``download_dir`` per session, by a sequential per-file client (the seed tool's way), and
  by ``curl --parallel`` and ``aria2c`` at the same parallelism, from minixnat with
  ``--latency-ms 20 --conn-mbps 20`` (a remote server) and without (loopback).
* ``rss``: xnat-downloader's peak RSS over a 5 GiB download.
* ``upload``: 8 session zips imported by xnat-downloader (4 at once), by xnatpy's
  ``services.import_`` loop and by ``curl`` POSTs (one after another, and 4 in parallel);
  300 files of 100 KiB put into a resource by xnat-downloader and by xnatpy's
  ``resource.upload`` loop; on loopback and with ``--latency-ms 20``.
* ``shards``: the same 2,000 files over the remote link, by one xnat-downloader process
  with ``-j 16`` and by 4 shard processes with ``-j 4`` each from one saved plan (``slurm``
  plans once; its planning time counts).
* ``sync``: a project of 800 sessions (one small file each) behind ``--latency-ms 20``:
  the first download, then a re-run with nothing changed; requests counted from the
  server's access log.
* ``dicom``: 2,000 instances of ~300 KiB sent over C-STORE to dcmtk's ``storescp`` (forking,
  every transfer syntax) by dcmtk's ``storescu`` and by ``xnat-downloader dicom-send``
  (``-j 1`` and ``-j 4``); then by both to minixnat's receiver (its MB/s).  Needs dcmtk.

Every client's output is checked (file count and bytes) so that a fast wrong answer cannot
win.  Timings are wall-clock seconds of one run each; the machine is shared by client and
server, as a laptop next to a test server would be.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MIB = 1024 * 1024


# -- servers ----------------------------------------------------------------------------
@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match
        return int(match.group(1)) / 1024


def start_minixnat(root: Path, *flags: str, snapshots: bool = False) -> Running:
    """Without ``snapshots`` the server makes none: a snapshot run after each import would
    share the CPU with the transfers being measured (part_snapshots measures that)."""
    more = [] if snapshots else ["--no-snapshots"]
    proc = subprocess.Popen(
        [str(BIN / "minixnat"), "serve", "--root", str(root), "--port", "0", *flags, *more],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("minixnat listening on "):
        raise SystemExit(f"minixnat did not start: {line!r}")
    return Running(line.rsplit(" ", 1)[1], proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(docroot: Path, work: Path) -> Running:
    port = free_port()
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 2;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp;
  uwsgi_temp_path {prefix}/tmp;
  scgi_temp_path {prefix}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {docroot};
  }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            return Running(url, proc)
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("nginx did not start")


# -- data -------------------------------------------------------------------------------
def demo_data(root: Path, *counts: str) -> None:
    """``minixnat demo-data ROOT COUNTS…`` (quietly)."""
    subprocess.run([str(BIN / "minixnat"), "demo-data", str(root), *counts],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def make_archive(root: Path, files: int, file_kb: int) -> None:
    """About ``files`` DICOM files of ``file_kb`` KiB: 10 subjects x 2 sessions x 4 scans."""
    if (root / "minixnat.sqlite").exists():
        return
    per_scan = max(1, files // 80)
    subprocess.run(
        [
            str(BIN / "minixnat"),
            "demo-data",
            str(root),
            "--projects", "1", "--subjects", "10", "--sessions", "2", "--scans", "4",
            "--files", str(per_scan), "--file-kb", str(file_kb), "--seed", "1",
        ],
        check=True,
    )  # fmt: skip


def add_big_files(root: Path, label: str, count: int, size: int) -> None:
    """A session resource of ``count`` random files of ``size`` bytes (minixnat's Store API:
    demo DICOM cannot be that large)."""
    from minixnat.store import Store

    store = Store(root)
    try:
        session = store.list_experiments(project="DEMO01", sessions_only=True)[0]
        if any(r.label == label for r in store.list_resources("experiment", session.id)):
            return
        res = store.add_resource(
            "experiment", session.id, label, f"DEMO01/arc001/{session.label}/RESOURCES/{label}"
        )
        for i in range(count):

            def chunks(total: int = size) -> object:
                left = total
                while left:
                    n = min(left, 4 * MIB)
                    yield os.urandom(n)
                    left -= n

            store.write_file(res, f"big{i:02d}.bin", chunks())  # type: ignore[arg-type]
    finally:
        store.close()


def login(url: str) -> requests.Session:
    s = requests.Session()
    s.auth = ("admin", "admin")
    s.get(f"{url}/data/JSESSION", timeout=30).raise_for_status()
    s.auth = None
    return s


def file_rows(url: str, session: requests.Session) -> list[dict[str, str]]:
    """Every DICOM scan file of project DEMO01: (URI, Size, digest, session label...)."""
    exps = session.get(
        f"{url}/data/projects/DEMO01/experiments", params={"format": "json"}, timeout=60
    ).json()["ResultSet"]["Result"]
    rows = []
    for e in exps:
        for r in session.get(
            f"{url}/data/experiments/{e['ID']}/scans/ALL/files",
            params={"format": "json"},
            timeout=60,
        ).json()["ResultSet"]["Result"]:
            if r["collection"] == "DICOM":
                rows.append({**r, "session": e["label"], "session_id": e["ID"]})
    return rows


def archive_paths(root: Path) -> dict[str, str]:
    """Map each DICOM's name to its path relative to ``root/archive``."""
    return {
        p.name: str(p.relative_to(root / "archive"))
        for p in (root / "archive").rglob("*")
        if p.is_file() and "/DICOM/" in str(p)
    }


def placed(folder: Path, row: dict[str, str]) -> Path:
    """Where the generic clients put a file: ``{session}/{path in resource}``."""
    return folder / row["session"] / row["URI"].split("/files/", 1)[1]


def tree_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def curl_config(urls: list[tuple[str, Path]], cookie: str, path: Path) -> Path:
    lines = [f'cookie = "{cookie}"'] if cookie else []
    for url, out in urls:
        lines.append(f'url = "{url}"')
        lines.append(f'output = "{out}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def run_curl(config: Path, parallel: int) -> int:
    """Run curl's parallel mode; returns the bytes it received."""
    out = subprocess.run(
        [
            "curl", "--parallel", "--parallel-max", str(parallel), "--create-dirs",
            "--no-progress-meter", "--fail", "-w", "%{size_download}\\n", "-K", str(config),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return sum(int(n) for n in out.stdout.split())


def run_aria2(urls: list[tuple[str, Path]], cookie: str, parallel: int, work: Path) -> None:
    listing = work / "aria2.txt"
    with open(listing, "w") as out:
        for url, dest in urls:
            out.write(f"{url}\n  dir={dest.parent}\n  out={dest.name}\n")
    subprocess.run(
        [
            "aria2c", "-q", "-i", str(listing), "-j", str(parallel), "-x", "1",
            "--header", f"Cookie: {cookie}", "--auto-file-renaming=false",
            "--allow-overwrite=true", "--file-allocation=none", "--console-log-level=error",
            "--max-connection-per-server", "16",
        ],
        check=True,
    )  # fmt: skip


def max_rss_of(cmd: list[str]) -> float:
    """Peak RSS (MB) of a command, read from its own rusage after it ends."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True)
    return int(out.stdout.decode().split()[-1]) / 1024


# -- parts --------------------------------------------------------------------------------
def part_server(work: Path, root: Path, results: dict[str, object], parallel: int) -> None:
    add_big_files(root, "BIG1G", 1, 1024 * MIB)
    mx = start_minixnat(root)
    ngx = start_nginx(root / "archive", work)
    try:
        s = login(mx.url)
        cookie = f"JSESSIONID={s.cookies['JSESSIONID']}"
        exp = s.get(
            f"{mx.url}/data/projects/DEMO01/experiments", params={"format": "json"}, timeout=30
        ).json()["ResultSet"]["Result"][0]
        big_uri = f"/data/experiments/{exp['ID']}/resources/BIG1G/files/big00.bin"
        big_disk = next((root / "archive").rglob("RESOURCES/BIG1G/big00.bin")).relative_to(
            root / "archive"
        )
        out: dict[str, object] = {}

        def one_big(url: str, use_cookie: bool) -> float:
            cmd = ["curl", "--no-progress-meter", "--fail", "-o", "/dev/null", url]
            if use_cookie:
                cmd[1:1] = ["-b", cookie]
            return min(timed(lambda: subprocess.run(cmd, check=True)) for _ in range(3))

        t_mx = one_big(mx.url + big_uri, True)
        t_ng = one_big(f"{ngx.url}/{big_disk}", False)
        out["big_file_mb_s"] = {"minixnat": 1024 / t_mx, "nginx": 1024 / t_ng}

        rows = file_rows(mx.url, s)
        paths = archive_paths(root)
        mx.stop()
        # Bodies go to /dev/null: this measures the servers, not the disk.  Each the best
        # of three runs: one run takes well under a second, and this machine's noise is
        # of that order.  Each minixnat run is a fresh server's first pass over the files
        # (it remembers lookups while its database is unchanged, and a second pass over
        # the same URLs would measure that).  nginx runs 2 worker processes; minixnat
        # runs with 1, 2 and 4 (the kernel deals each connection to one of minixnat's
        # workers by a hash, so 16 connections often split 11 to 5 over two; over four
        # the split evens out, and the two cores are shared by the scheduler).
        null = Path("/dev/null")
        expected = sum(int(r["Size"]) for r in rows)

        def one_pass(base: str, urls: list[str], cookie: str) -> float:
            config = curl_config([(base + u, null) for u in urls], cookie, work / "c.cfg")
            got: list[int] = []
            took = timed(lambda: got.append(run_curl(config, parallel)))
            assert got == [expected], (got, expected)
            return took

        files_per_s: dict[str, float] = {}
        for workers in (1, 2, 4):
            name = "minixnat" if workers == 1 else f"minixnat --workers {workers}"
            for _ in range(3):
                server = start_minixnat(root, "--workers", str(workers))
                try:
                    session = login(server.url)
                    cookie = f"JSESSIONID={session.cookies['JSESSIONID']}"
                    rate = len(rows) / one_pass(server.url, [r["URI"] for r in rows], cookie)
                    files_per_s[name] = max(rate, files_per_s.get(name, rate))
                finally:
                    server.stop()
        ng_urls = [f"/{paths[r['URI'].rsplit('/', 1)[1]]}" for r in rows]
        t_ng = min(one_pass(ngx.url, ng_urls, "") for _ in range(3))
        files_per_s["nginx"] = len(rows) / t_ng
        out["small_files"] = {
            "count": len(rows),
            "files_per_s": files_per_s,
            # The headline is minixnat as `minixnat serve` runs it: one process.
            "minixnat_to_nginx": files_per_s["minixnat"] / files_per_s["nginx"],
            "two_workers_to_nginx": files_per_s["minixnat --workers 2"] / files_per_s["nginx"],
            "four_workers_to_nginx": files_per_s["minixnat --workers 4"] / files_per_s["nginx"],
            "parallel": parallel,
        }

        # Memory: a fresh server, then a 1 GiB file, its zip and its tar.gz.
        fresh = start_minixnat(root)
        try:
            fs = login(fresh.url)
            base_rss = fresh.peak_rss_mb()
            for params in ({}, {"format": "zip"}, {"format": "tar.gz"}):
                target = big_uri if not params else big_uri.rsplit("/files/", 1)[0] + "/files"
                with fs.get(fresh.url + target, params=params, stream=True, timeout=600) as r:
                    r.raise_for_status()
                    got = sum(len(c) for c in r.iter_content(MIB))
                    assert got >= 1024 * MIB, (params, got)
            out["server_peak_rss_mb"] = {
                "idle": base_rss,
                "after_1gib_file_zip_targz": fresh.peak_rss_mb(),
            }
        finally:
            fresh.stop()
        results["server"] = out
    finally:
        mx.stop()
        ngx.stop()


def part_client(
    work: Path, root: Path, results: dict[str, object], parallel: int, wan: bool
) -> None:
    flags = ["--latency-ms", "20", "--conn-mbps", "20"] if wan else []
    server = start_minixnat(root, *flags)
    key = "wan" if wan else "loopback"
    timings: dict[str, float] = {}
    try:
        s = login(server.url)
        cookie = f"JSESSIONID={s.cookies['JSESSIONID']}"
        rows = file_rows(server.url, s)
        expected = (len(rows), sum(int(r["Size"]) for r in rows))

        def fresh(name: str) -> Path:
            d = work / "out" / key / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            return d

        def check(name: str, folder: Path) -> None:
            got = tree_size(folder)
            if got != expected:
                raise SystemExit(f"{name} fetched {got}, expected {expected}")

        # The parallel clients, each the best of three runs into a fresh folder: one run
        # takes a few seconds, and this machine's disk makes the same run vary by a second.
        def best_of_3(name: str, run: Callable[[Path], object]) -> None:
            for _ in range(3):
                d = fresh(name.replace(" ", "_"))
                took = timed(lambda d=d: run(d))
                check(name, d)
                timings[name] = min(took, timings.get(name, took))

        # xnat-downloader: the default (auto: a streamed zip per resource of small files),
        # and forced per-file GETs.  Every file is checked against the server's MD5.
        env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
        for name, extra in (
            ("xnat-downloader", []),
            ("xnat-downloader --transfer files", ["--transfer", "files"]),
        ):
            best_of_3(name, lambda d, extra=extra: subprocess.run(
                [str(BIN / "xnat-downloader"), "download", "-w", server.url, "-p", "DEMO01",
                 "--resource", "DICOM", "-j", str(parallel), "-o", str(d), "-q", *extra],
                check=True, env=env, stdout=subprocess.DEVNULL))  # fmt: skip

        # curl --parallel and aria2c on the same URLs, same parallelism, no verification.
        def urls_into(d: Path) -> list[tuple[str, Path]]:
            return [
                (server.url + r["URI"], d / r["session"] / r["URI"].split("/files/")[1])
                for r in rows
            ]

        best_of_3(
            "curl --parallel",
            lambda d: run_curl(curl_config(urls_into(d), cookie, work / "c.cfg"), parallel),
        )
        best_of_3("aria2c", lambda d: run_aria2(urls_into(d), cookie, parallel, work))

        # The sequential per-file client: one GET after another, as the seed tool does.
        d = fresh("sequential")

        def sequential() -> None:
            for r in rows:
                target = placed(d, r)
                target.parent.mkdir(parents=True, exist_ok=True)
                with s.get(server.url + r["URI"], stream=True, timeout=120) as resp:
                    resp.raise_for_status()
                    with open(target, "wb") as out:
                        for chunk in resp.iter_content(MIB):
                            out.write(chunk)

        timings["sequential client"] = timed(sequential)
        check("sequential", d)

        # xnatpy's download_dir, one session after another.
        d = fresh("xnatpy")

        def xnatpy() -> None:
            import xnat

            with xnat.connect(server.url, user="admin", password="admin") as conn:
                for exp in conn.projects["DEMO01"].experiments.values():
                    exp.download_dir(str(d), verbose=False)

        timings["xnatpy download_dir"] = timed(xnatpy)
        n, _size = tree_size(d)
        if n < expected[0]:  # xnatpy also fetches the non-DICOM resources of each session
            raise SystemExit(f"xnatpy fetched {n} files, expected at least {expected[0]}")
    finally:
        server.stop()
    fastest_generic = min(timings["curl --parallel"], timings["aria2c"])
    results[f"client_{key}"] = {
        "files": expected[0],
        "bytes": expected[1],
        "parallel": parallel,
        "seconds": timings,
        "xnat-downloader MB/s": expected[1] / 1e6 / timings["xnat-downloader"],
        "ratio_vs_fastest_generic": timings["xnat-downloader"] / fastest_generic,
        "speedup_vs_xnatpy": timings["xnatpy download_dir"] / timings["xnat-downloader"],
        "speedup_vs_sequential": timings["sequential client"] / timings["xnat-downloader"],
    }


def part_upload(work: Path, results: dict[str, object], wan: bool) -> None:
    """Imports of 8 session zips and uploads of 300 resource files of 100 KiB, by
    xnat-downloader and by the ways people do it today, into fresh projects each."""
    import zipfile

    source = work / "archive-upload"
    if not (source / "minixnat.sqlite").exists():
        demo_data(source, "--projects", "1", "--subjects", "4", "--sessions", "2", "--scans",
                  "4", "--files", "25", "--file-kb", "300", "--seed", "5")  # fmt: skip
    zips = work / "upload-zips"
    if not zips.exists():
        zips.mkdir()
        for session in sorted((source / "archive" / "DEMO01" / "arc001").iterdir()):
            with zipfile.ZipFile(zips / f"{session.name}.zip", "w") as zf:
                for dcm in sorted(session.glob("SCANS/*/DICOM/*")):
                    scan = dcm.parent.parent.name
                    zf.write(dcm, f"{session.name}/scans/{scan}/resources/DICOM/files/{dcm.name}")
    files = work / "upload-files"
    if not files.exists():
        files.mkdir()
        for i in range(300):
            (files / f"f{i:03d}.bin").write_bytes(os.urandom(100 * 1024))
    archives = sorted(zips.glob("*.zip"))
    target = work / f"upload-target-{'wan' if wan else 'loopback'}"
    shutil.rmtree(target, ignore_errors=True)
    demo_data(target, "--projects", "0")
    # Two workers, one per core: an import is the server's CPU work (unpacking, reading
    # headers, hashing), and clients that send several at once should meet a server that
    # can do two at once, as XNAT's Tomcat does.
    server = start_minixnat(target, "--workers", "2", *(["--latency-ms", "20"] if wan else []))
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    timings: dict[str, float] = {}
    try:
        s = login(server.url)
        cookie = f"JSESSIONID={s.cookies['JSESSIONID']}"
        # Each client twice, into fresh projects each time (a second upload into the same
        # project would find its sessions there), the best time kept: one run takes a second
        # or two, and this machine's disk varies by that much.
        for rep in ("1", "2"):
            _upload_round(server.url, s, cookie, rep, archives, files, env, timings)
    finally:
        server.stop()
    # What every xnat-downloader run pays before its first request (Python and aiohttp
    # starting), and curl does not: the part of the gap that no transfer change can close.
    version = [str(BIN / "xnat-downloader"), "--version"]
    timings["xnat-downloader --version (start-up only)"] = min(
        timed(lambda: subprocess.run(version, check=True, stdout=subprocess.DEVNULL))
        for _ in range(3)
    )
    key = "upload_wan" if wan else "upload_loopback"
    results[key] = {
        "sessions": len(archives),
        "session_bytes": sum(a.stat().st_size for a in archives),
        "resource_files": 300,
        "seconds": timings,
        "imports_vs_curl4": timings["xnat-downloader upload (-j 4)"]
        / timings["curl POSTs, 4 in parallel"],
        "imports_speedup_vs_xnatpy": timings["xnatpy services.import_ loop"]
        / timings["xnat-downloader upload (-j 4)"],
        "resources_speedup_vs_xnatpy": timings["xnatpy resource.upload loop"]
        / timings["xnat-downloader upload --resource (-j 8)"],
    }


def _upload_round(
    url: str,
    s: requests.Session,
    cookie: str,
    rep: str,
    archives: list[Path],
    files: Path,
    env: dict[str, str],
    timings: dict[str, float],
) -> None:
    """One round of every upload client, each into projects of its own; ``timings`` keeps
    each client's best time."""
    import xnat

    def keep(name: str, fn: Callable[[], object]) -> None:
        took = timed(fn)
        timings[name] = min(took, timings.get(name, took))

    names = {p: p + rep for p in ("XDL", "XNATPY", "CURL1", "CURL4", "RXDL", "RXNATPY")}
    for project in names.values():
        s.put(f"{url}/data/projects/{project}", timeout=30).raise_for_status()
    for subject in (names["RXDL"], names["RXNATPY"]):
        s.put(f"{url}/data/projects/{subject}/subjects/S", timeout=30)

    def curl(project: str, archive: Path) -> list[str]:
        target = f"{url}/data/services/import?PROJECT_ID={project}&dest=/archive/projects/{project}"
        return ["curl", "-sf", "-o", "/dev/null", "-b", cookie,
                "-H", "Content-Type: application/zip",
                "--data-binary", f"@{archive}", target]  # fmt: skip

    keep("xnat-downloader upload (-j 4)", lambda: subprocess.run(
        [str(BIN / "xnat-downloader"), "upload", "-w", url, "-p", names["XDL"],
         "-j", "4", "-q", *map(str, archives)],
        check=True, env=env, stdout=subprocess.DEVNULL))  # fmt: skip

    def xnatpy_imports() -> None:
        with xnat.connect(url, user="admin", password="admin") as conn:
            for archive in archives:
                conn.services.import_(str(archive), project=names["XNATPY"], destination="/archive")

    keep("xnatpy services.import_ loop", xnatpy_imports)
    keep(
        "curl POSTs, one after another",
        lambda: [subprocess.run(curl(names["CURL1"], a), check=True) for a in archives],
    )

    def curl4() -> None:
        running = [subprocess.Popen(curl(names["CURL4"], a)) for a in archives[:4]]
        queue = list(archives[4:])
        while running:
            done = running.pop(0)
            if done.wait() != 0:
                raise SystemExit("curl import failed")
            if queue:
                running.append(subprocess.Popen(curl(names["CURL4"], queue.pop(0))))

    keep("curl POSTs, 4 in parallel", curl4)
    for project in (names["XDL"], names["XNATPY"], names["CURL1"], names["CURL4"]):
        got = s.get(f"{url}/data/projects/{project}/experiments?format=json",
                    timeout=30).json()["ResultSet"]["Result"]  # fmt: skip
        if len(got) != len(archives):
            raise SystemExit(f"{project}: {len(got)} sessions, expected {len(archives)}")

    keep("xnat-downloader upload --resource (-j 8)", lambda: subprocess.run(
        [str(BIN / "xnat-downloader"), "upload", "-w", url, "-p", names["RXDL"],
         "--subject", "S", "--resource", "FILES", "-j", "8", "-q", str(files)],
        check=True, env=env, stdout=subprocess.DEVNULL))  # fmt: skip

    def xnatpy_resources() -> None:
        with xnat.connect(url, user="admin", password="admin") as conn:
            subject = conn.projects[names["RXNATPY"]].subjects["S"]
            resource = conn.classes.ResourceCatalog(parent=subject, label="FILES")
            for path in sorted(files.iterdir()):
                resource.upload(str(path), path.name)

    keep("xnatpy resource.upload loop", xnatpy_resources)


def part_dicom(work: Path, results: dict[str, object], count: int = 2000) -> None:
    """C-STORE of ``count`` instances: dcmtk's storescu against dicom-send, into storescp
    and into minixnat's receiver.  Every run's receiver must hold every instance."""
    sys.path.insert(0, str(HERE.parent))
    from pydicom.uid import generate_uid
    from tests.dicomfiles import dcmtk_path, instance

    # dcmtk's tools, not pynetdicom's apps of the same names in this environment's bin.
    storescp_bin, storescu_bin = dcmtk_path("storescp"), dcmtk_path("storescu")
    if storescp_bin is None or storescu_bin is None:
        raise SystemExit("dcmtk's storescp and storescu are needed: apt-get install dcmtk")

    files = work / "dicom-files"
    if len(list(files.glob("*.dcm"))) != count:
        shutil.rmtree(files, ignore_errors=True)
        study = generate_uid(entropy_srcs=["bench"])
        for i in range(count):  # 388 x 388 x 16 bit: ~300 KiB of pixels each
            sop = generate_uid(entropy_srcs=[str(i)])
            instance(files / f"{i:05d}.dcm", study=study, side=388, instance_number=i + 1,
                     series_number=1 + i // 250, sop=sop)  # fmt: skip
    paths = sorted(str(p) for p in files.glob("*.dcm"))
    total = sum(Path(p).stat().st_size for p in paths)
    env = {**os.environ, "XDG_STATE_HOME": str(work / "dicom-state")}
    timings: dict[str, float] = {}

    def storescp(out: Path) -> tuple[subprocess.Popen[bytes], int]:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        port = free_port()
        proc = subprocess.Popen(
            [storescp_bin, "--fork", "-aet", "STORESCP", "+xa", "-od", str(out), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        return proc, port

    def received(out: Path) -> None:
        got = len(list(out.iterdir()))
        if got != count:
            raise SystemExit(f"storescp holds {got} instances, expected {count}")

    def ours(port: int, title: str, jobs: int) -> None:
        subprocess.run(
            [str(BIN / "xnat-downloader"), "dicom-send", "--to", f"{title}@127.0.0.1:{port}",
             "--resend", "-q", "-j", str(jobs), str(files)],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    for name, run in (
        ("dcmtk storescu -> storescp",
         lambda port: subprocess.run([storescu_bin, "-aec", "STORESCP", "127.0.0.1", str(port),
                                      *paths], check=True)),
        ("dicom-send -j 1 -> storescp", lambda port: ours(port, "STORESCP", 1)),
        ("dicom-send -j 4 -> storescp", lambda port: ours(port, "STORESCP", 4)),
    ):  # fmt: skip
        out = work / "storescp-out"
        proc, port = storescp(out)
        try:
            timings[name] = timed(lambda run=run, port=port: run(port))  # type: ignore[misc]
            received(out)
        finally:
            proc.terminate()
            proc.wait()

    def storescu(port: int) -> None:
        subprocess.run([storescu_bin, "-aec", "MINIXNAT", "127.0.0.1", str(port), *paths],
                       check=True)  # fmt: skip

    for name, jobs in (("dcmtk storescu -> minixnat", 0), ("dicom-send -j 4 -> minixnat", 4)):
        target = work / "dicom-target"
        shutil.rmtree(target, ignore_errors=True)
        demo_data(target, "--projects", "0")
        server = start_minixnat(target, "--dicom-port", "0", "--dicom-quiet", "600")
        assert server.process.stdout is not None
        port = int(server.process.stdout.readline().decode().strip().rsplit(":", 1)[1])
        try:
            if jobs:
                timings[name] = timed(lambda port=port, jobs=jobs: ours(port, "MINIXNAT", jobs))
            else:
                timings[name] = timed(lambda port=port: storescu(port))  # type: ignore[misc]
            got = len(list((target / "dicom" / "studies").rglob("*.dcm")))
            if got != count:
                raise SystemExit(f"minixnat's spool holds {got} instances, expected {count}")
        finally:
            server.stop()
    base = timings["dcmtk storescu -> storescp"]
    results["dicom"] = {
        "instances": count,
        "bytes": total,
        "seconds": timings,
        "send_j1_vs_storescu": timings["dicom-send -j 1 -> storescp"] / base,
        "send_j4_vs_storescu": timings["dicom-send -j 4 -> storescp"] / base,
        "receiver_mb_s_from_storescu": total / MIB / timings["dcmtk storescu -> minixnat"],
        "receiver_mb_s_from_dicom_send_j4": total / MIB / timings["dicom-send -j 4 -> minixnat"],
    }


def part_sync(work: Path, results: dict[str, object]) -> None:
    """A re-run on an unchanged project of 800 sessions costs O(projects) requests."""
    root = work / "archive-sync"
    if not (root / "minixnat.sqlite").exists():
        demo_data(root, "--projects", "1", "--subjects", "400", "--sessions", "2", "--scans",
                  "1", "--files", "1", "--file-kb", "1")  # fmt: skip
    log = work / "sync-access.log"
    log.unlink(missing_ok=True)
    server = start_minixnat(root, "--latency-ms", "20", "--access-log", str(log))
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    out = work / "out" / "sync"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(BIN / "xnat-downloader"), "download", "-w", server.url, "-p", "DEMO01",
           "-o", str(out), "-j", "16", "-q"]  # fmt: skip
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        for name in ("first download", "re-run, nothing changed"):
            before = len(log.read_text().splitlines()) if log.exists() else 0
            timings[name] = timed(
                lambda: subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            )
            time.sleep(0.2)  # the access log is written as each request ends
            counts[name] = len(log.read_text().splitlines()) - before
    finally:
        server.stop()
    results["sync"] = {"sessions": 800, "seconds": timings, "requests": counts}


def part_shards(work: Path, root: Path, results: dict[str, object]) -> None:
    """One process with -j 16 against 4 shard processes with -j 4 each, remote link."""
    server = start_minixnat(root, "--latency-ms", "20", "--conn-mbps", "20")
    env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    timings: dict[str, float] = {}
    try:
        s = login(server.url)
        rows = file_rows(server.url, s)
        expected = (len(rows), sum(int(r["Size"]) for r in rows))
        xdl = str(BIN / "xnat-downloader")
        many = work / "out" / "shards" / "four"
        shutil.rmtree(many, ignore_errors=True)
        timings["plan once (slurm, no submit)"] = timed(lambda: subprocess.run(
            [xdl, "slurm", "-w", server.url, "-p", "DEMO01", "--resource", "DICOM",
             "-o", str(many), "--shards", "4", "-j", "4", "-q"], check=True, env=env,
            stdout=subprocess.DEVNULL))  # fmt: skip
        manifest = many / ".xnat-downloader" / "slurm" / "manifest.json"

        def fresh(name: str) -> Path:
            folder = work / "out" / "shards" / name
            shutil.rmtree(folder, ignore_errors=True)
            return folder

        def single() -> None:
            out = fresh("one")
            subprocess.run([xdl, "download", "-w", server.url, "-p", "DEMO01", "--resource",
                            "DICOM", "-j", "16", "-o", str(out), "-q"],
                           check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip

        def shards() -> None:
            # The plan stays where slurm wrote it; only the data and the shards' state go.
            for path in many.iterdir():
                if path.name != ".xnat-downloader":
                    shutil.rmtree(path)
            for path in (many / ".xnat-downloader").iterdir():
                if path.name != "slurm":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            running = [
                subprocess.Popen([xdl, "download", "-w", server.url, "--manifest", str(manifest),
                                  "-o", str(many), "--shard", f"{k}/4", "-j", "4", "-q"],
                                 env=env, stdout=subprocess.DEVNULL)
                for k in range(4)
            ]  # fmt: skip
            if any(p.wait() != 0 for p in running):
                raise SystemExit("a shard failed")

        def single_from_plan() -> None:
            # The same saved plan fetched by one process with the same total -j: planning
            # is paid once in both, so this is the like-for-like comparison.
            out = fresh("one-from-plan")
            subprocess.run([xdl, "download", "-w", server.url, "--manifest", str(manifest),
                            "-o", str(out), "-j", "16", "-q"],
                           check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip

        # Three rounds, the three ways taking turns; each way's best time is kept (one run
        # takes about three seconds, and this machine's noise is a tenth of that).
        ways = (
            ("one process, -j 16", single, "one"),
            ("4 shard processes, -j 4 each", shards, "four"),
            ("one process from the plan, -j 16", single_from_plan, "one-from-plan"),
        )
        for _ in range(3):
            for name, run, folder in ways:
                took = timed(run)
                timings[name] = min(took, timings.get(name, took))
                got = tree_size(work / "out" / "shards" / folder)
                if got != expected:
                    raise SystemExit(f"{name} fetched {got}, expected {expected}")
    finally:
        server.stop()
    results["shards_wan"] = {
        "seconds": timings,
        "shards_vs_one": (timings["plan once (slurm, no submit)"]
                          + timings["4 shard processes, -j 4 each"])
        / timings["one process, -j 16"],
        "shards_vs_one_from_plan": timings["4 shard processes, -j 4 each"]
        / timings["one process from the plan, -j 16"],
    }  # fmt: skip


def part_snapshots(work: Path, results: dict[str, object]) -> None:
    """CPU time of the snapshots of one 200-slice series (256 x 256, 16 bit), and the wall
    time of importing 2,000 files with snapshots on against off (they are made after the
    import has answered, so the import should not wait for them)."""
    import statistics
    import zipfile

    from minixnat.snapshots import generate
    from minixnat.store import Store

    series = work / "archive-snap-series"
    shutil.rmtree(series, ignore_errors=True)
    demo_data(series, "--projects", "1", "--subjects", "1", "--sessions", "1", "--scans", "1",
              "--files", "200", "--file-kb", "128")  # fmt: skip
    store = Store(series)
    scan = store.list_scans(store.list_experiments(sessions_only=True)[0].id)[0]
    cpu = []
    for _ in range(5):
        started = time.process_time()
        assert generate.pictures_of(*generate.image_files(store, scan)) is not None
        cpu.append(time.process_time() - started)
    store.close()
    source = work / "archive-snap-import"
    if not (source / "minixnat.sqlite").exists():
        demo_data(source, "--projects", "1", "--subjects", "1", "--sessions", "1", "--scans",
                  "4", "--files", "500", "--file-kb", "16")  # fmt: skip
    archive = work / "snap-import.zip"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w") as zf:
            for dcm in sorted(source.glob("archive/DEMO01/arc001/*/SCANS/*/DICOM/*")):
                zf.write(dcm, f"s/{dcm.parent.parent.name}/{dcm.name}")
    walls: dict[str, list[float]] = {"snapshots off": [], "snapshots on": []}
    # One import into a fresh, idle server per sample, the two modes alternated: the
    # machine's drift (page cache, writeback) lands on both sides.
    for mode, on in [("snapshots off", False), ("snapshots on", True)] * 5:
        target = work / "snap-target"
        shutil.rmtree(target, ignore_errors=True)
        demo_data(target, "--projects", "0")
        server = start_minixnat(target, snapshots=on)
        try:
            s = login(server.url)
            s.put(f"{server.url}/data/projects/P", timeout=30).raise_for_status()
            url = f"{server.url}/data/services/import?PROJECT_ID=P&SUBJECT_ID=S&EXPT_LABEL=E"
            zip_type = {"Content-Type": "application/zip"}
            with open(archive, "rb") as body:
                started = time.perf_counter()
                s.post(f"{url}&dest=/archive", data=body, timeout=600, headers=zip_type)
                walls[mode].append(time.perf_counter() - started)
        finally:
            server.stop()
    imports = {mode: statistics.median(times) for mode, times in walls.items()}
    results["snapshots"] = {
        "series_200_slices_cpu_s": round(min(cpu), 3),
        "import_2000_files_s": {k: round(v, 2) for k, v in imports.items()},
        "import_slowdown": round(imports["snapshots on"] / imports["snapshots off"], 3),
    }
    print(json.dumps(results["snapshots"]), flush=True)


def part_rss(work: Path, results: dict[str, object], parallel: int) -> None:
    root = work / "archive-5g"
    make_archive(root, 80, 64)
    add_big_files(root, "BIG5G", 20, 256 * MIB)
    server = start_minixnat(root)
    try:
        d = work / "out" / "rss"
        shutil.rmtree(d, ignore_errors=True)
        cmd = [
            str(BIN / "xnat-downloader"), "download", "-w", server.url, "-u", "admin",
            "--password", "admin", "-p", "DEMO01", "--session-resources", "--no-scans",
            "--resource", "BIG5G", "-j", str(parallel), "-o", str(d), "-q",
        ]  # fmt: skip
        start = time.perf_counter()
        peak = max_rss_of(cmd)
        seconds = time.perf_counter() - start
        n, size = tree_size(d)
        assert (n, size) == (20, 20 * 256 * MIB), (n, size)
        shutil.rmtree(d)
        results["client_rss"] = {"bytes": size, "peak_rss_mb": peak, "seconds": seconds}
    finally:
        server.stop()


# -- report -------------------------------------------------------------------------------
def svg(results: dict[str, object], path: Path) -> None:
    """A bar chart of the client timings (seconds, shorter is better)."""
    rows: list[tuple[str, str, float]] = []
    for key in ("client_wan", "client_loopback"):
        part = results.get(key)
        if isinstance(part, dict):
            for name, seconds in part["seconds"].items():
                rows.append((key.removeprefix("client_"), name, float(seconds)))
    if not rows:
        return
    top = max(r[2] for r in rows)
    width, bar_h, left = 760, 22, 330
    height = 40 + len(rows) * (bar_h + 6)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        '<text x="10" y="20" font-weight="bold">Seconds to fetch the same files '
        "(shorter is better)</text>",
    ]
    for i, (where, name, seconds) in enumerate(rows):
        y = 34 + i * (bar_h + 6)
        w = max(1.0, (width - left - 80) * seconds / top)
        colour = "#2a7ab9" if name == "xnat-downloader" else "#9aa5b1"
        parts.append(f'<text x="10" y="{y + 15}">{where}: {name}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{seconds:.1f} s</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/xnatdl-bench"))
    ap.add_argument("--parts", default="server,client,rss,upload,shards,sync,dicom,snapshots")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kb", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=16)
    args = ap.parse_args()
    parts = args.parts.split(",")
    # dcmtk's tools are looked up by the dicom part itself (see part_dicom).
    needs = {"server": ("nginx", "curl"), "client": ("curl", "aria2c"), "upload": ("curl",)}
    for tool in sorted({t for part in parts for t in needs.get(part, ())}):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install nginx curl aria2 dcmtk")
    # As an installed package would be (and as `make bench` does): the editable install
    # runs src/ itself, and without its bytecode on disk a process where
    # PYTHONDONTWRITEBYTECODE is set compiles every module at each start (~50 ms).
    compileall.compile_dir(HERE.parent / "src", quiet=1)
    args.work.mkdir(parents=True, exist_ok=True)
    root = args.work / "archive"
    if {"server", "client", "shards"} & set(parts):
        make_archive(root, args.files, args.file_kb)
    results_path = HERE / "results.json"
    results: dict[str, object] = (
        json.loads(results_path.read_text()) if results_path.exists() else {}
    )
    if "server" in parts:
        part_server(args.work, root, results, args.jobs)
    if "client" in parts:
        part_client(args.work, root, results, args.jobs, wan=True)
        part_client(args.work, root, results, args.jobs, wan=False)
    if "rss" in parts:
        part_rss(args.work, results, args.jobs)
    if "upload" in parts:
        part_upload(args.work, results, wan=False)
        part_upload(args.work, results, wan=True)
    if "shards" in parts:
        part_shards(args.work, root, results)
    if "sync" in parts:
        part_sync(args.work, results)
    if "dicom" in parts:
        part_dicom(args.work, results)
    if "snapshots" in parts:
        part_snapshots(args.work, results)
    results["machine"] = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    svg(results, HERE / "results.svg")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

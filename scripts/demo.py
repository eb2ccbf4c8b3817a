"""`make demo`: a synthetic archive, minixnat on a free port, one project downloaded.

Runs the two programs as a user would (as subprocesses): the client and the server never
import each other.  Exits with the downloader's status; never prompts.  The archive stays
in ``demo-archive/`` and the last lines say what to try next; with ``--serve`` (``make demo
SERVE=1``) the server stays up, with its web pages, until Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


ARCHIVE = Path("demo-archive")


def next_steps(url: str, out: Path, serving: bool) -> str:
    """What to try after the demo (the server's address while it is up)."""
    login = "XNAT_USER=admin XNAT_PASS=admin"
    start = (
        f"  the web pages: {url}/ (admin / admin); Ctrl-C stops the server"
        if serving
        else f"  minixnat serve --root {ARCHIVE} --port 8080   # then open "
        "http://127.0.0.1:8080/ (admin / admin)"
    )
    server = url if serving else "http://127.0.0.1:8080"
    return "\n".join([
        f"demo: done; the files are in {out}/, the archive in {ARCHIVE}/. Try next:",
        start,
        f"  {login} xnat-downloader ls -w {server} -p DEMO02",
        f"  {login} xnat-downloader download -w {server} -p DEMO02 --modality CT "
        "--scan-type 'CT HEAD' -o ct-head",
        f"  xnat-downloader verify -o {out}",
        "  (the commands are in .venv/bin; 'make demo SERVE=1' keeps this server up)"
        if not serving else "",
    ]).rstrip()  # fmt: skip


def snapshots_done(url: str, timeout: float = 60.0) -> bool:
    """Wait until the server has made every queued snapshot run (so the download that
    follows sees each session whole, pictures included)."""
    request = urllib.request.Request(
        f"{url}/data/services/workflows/WebBasedQCImageCreator?format=json",
        headers={"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as answer:
            rows = json.load(answer)["ResultSet"]["Result"]
        if rows and all(r["status"] in ("Complete", "Failed") for r in rows):
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    serving = "--serve" in sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="xnat-demo-"))
    out = Path("demo-output")
    shutil.rmtree(ARCHIVE, ignore_errors=True)
    archive = ARCHIVE
    subprocess.run(
        [
            BIN / "minixnat",
            "demo-data",
            archive,
            "--projects",
            "2",
            "--subjects",
            "3",
            "--sessions",
            "2",
            "--scans",
            "3",
            "--files",
            "8",
            "--file-kb",
            "128",
            "--snapshots",
        ],
        check=True,
    )
    server = subprocess.Popen(
        [BIN / "minixnat", "serve", "--root", archive, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("minixnat listening on "):
            print(f"demo: minixnat did not start: {line!r}", file=sys.stderr)
            return 1
        url = line.rsplit(" ", 1)[1]
        print(f"demo: {line}; making snapshots of every scan", flush=True)
        if not snapshots_done(url):
            print("demo: the snapshots did not finish within a minute", file=sys.stderr)
            return 1
        print(f"demo: downloading project DEMO01 into {out}/", flush=True)
        env = {**os.environ, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
        done = subprocess.run(
            [
                BIN / "xnat-downloader",
                "download",
                "-w",
                url,
                "-p",
                "DEMO01",
                "-o",
                str(out),
                "--session-resources",
                "--assessors",
                "--recons",
                "-j",
                "8",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        print(next_steps(url, out, serving), flush=True)
        if serving:
            try:
                server.wait()
            except KeyboardInterrupt:
                print("\ndemo: server stopped", flush=True)
        return done.returncode
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

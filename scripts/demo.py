"""`make demo`: a synthetic archive, minixnat on a free port, one project downloaded.

Runs the two programs as a user would (as subprocesses): the client and the server never
import each other.  Exits with the downloader's status; never prompts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="xnat-demo-"))
    out = Path("demo-output")
    archive = work / "archive"
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
        print(f"demo: {line}; downloading project DEMO01 into {out}/", flush=True)
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
        return done.returncode
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

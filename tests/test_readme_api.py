"""The README's Python API example runs as written, against minixnat (with its receiver)."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import requests

from tests.conftest import start_server
from tests.dicomfiles import archived, receiver_port, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


def test_the_readme_python_example_runs(archive: Path, tmp_path: Path) -> None:
    server = start_server(archive, "--dicom-port", "0", "--dicom-quiet", "0.3")
    cwd = Path.cwd()
    try:
        port = receiver_port(server.process)
        (tmp_path / "receiver.txt").write_text(f"MINIXNAT@127.0.0.1:{port}\n")
        script = tmp_path / "example.py"
        script.write_text(example().replace("http://127.0.0.1:8080", server.url))
        os.chdir(tmp_path)
        runpy.run_path(str(script), run_name="__main__")
        # What the example says it did, seen from the server.
        listing = requests.get(
            f"{server.url}/data/projects/DEMO02/experiments",
            params={"format": "json", "columns": "label,UID"},
            auth=("admin", "admin"),
            timeout=30,
        ).json()["ResultSet"]["Result"]
        copy = [row for row in listing if row["label"] == "COPY_MR1"]
        assert len(copy) == 1
        assert list((tmp_path / "data" / "DEMO01").glob("*/*/scans"))
        # DEMO02 archives what arrives (XNAT's default for a project): DICOM_MR1 appears.
        rows = wait_for(
            lambda: [r for r in archived(server.url, copy[0]["UID"]) if r["label"] == "DICOM_MR1"],
            "the send",
        )
        assert [(r["project"], r["subject_label"], r["label"]) for r in rows] == [
            ("DEMO02", "DICOM", "DICOM_MR1")
        ]
    finally:
        os.chdir(cwd)
        server.stop()

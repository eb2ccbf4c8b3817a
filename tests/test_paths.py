"""XNAT's paths are built in xnat/paths.py only, with every segment quoted."""

from __future__ import annotations

import subprocess
from pathlib import Path

from xnat_downloader.xnat import paths

SRC = Path(__file__).resolve().parent.parent / "src" / "xnat_downloader"


def test_every_segment_is_quoted() -> None:
    assert paths.owner("P 1", "S/2", "E#3", "4?") == (
        "/data/projects/P%201/subjects/S%2F2/experiments/E%233/scans/4%3F"
    )
    assert paths.resource_files("/data/projects/P", "MY RES") == (
        "/data/projects/P/resources/MY%20RES/files"
    )
    assert paths.prearchive() == "/data/prearchive/projects"
    assert paths.prearchive("A B") == "/data/prearchive/projects/A%20B"
    assert paths.split_resource_file("/data/x/resources/DICOM/files/a/b.dcm") == (
        "/data/x/resources/DICOM", "a/b.dcm"
    )  # fmt: skip
    assert paths.files_listing_of("/data/x/resources/R/files/a%20b") == (
        "/data/x/resources/R/files", "a%20b"
    )  # fmt: skip


def test_no_xnat_rest_path_is_built_outside_xnat() -> None:
    """Outside xnat/, no code names a REST path (the HTTP client is given its login path)."""
    found = subprocess.run(
        ["grep", "-rnE", r"""f?["']/(data|xapi|REST)/""", str(SRC), "--include=*.py"],
        capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    outside = [
        line for line in found
        if "/xnat/" not in line.split(":", 1)[0] and '"""' not in line and "``" not in line
    ]  # fmt: skip
    assert outside == []

"""--path-template: folders and names of the user's own, made safe, checked before any
request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Server
from tests.test_download import cli, local_files
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.layout import check_template, template_parts
from xnat_downloader.xnat.model import RemoteFile

SCAN = RemoteFile("/data/experiments/E1/scans/3/resources/DICOM/files/a/b.dcm", "a/b.dcm", 1,
                  None, "P", "s1", "e1", "E1", "scan", "DICOM", "3", "T1w")  # fmt: skip
SESSION_RESOURCE = RemoteFile("/data/experiments/E1/resources/QC/files/q.txt", "q.txt", 1,
                              None, "P", "s1", "e1", "E1", "session", "QC")  # fmt: skip
PROJECT_RESOURCE = RemoteFile("/data/projects/P/resources/1/files/r.txt", "r.txt", 1, None,
                              "P", "", "", "", "project", "DOCS")  # fmt: skip


def test_a_folder_whose_fields_a_file_lacks_is_left_out_for_it() -> None:
    template = "{project}/{subject}/{session}/{scan_id}-{scan_type}/{resource}/{path}"
    assert template_parts(template, SCAN) == ["P", "s1", "e1", "3-T1w", "DICOM", "a", "b.dcm"]
    assert template_parts(template, SESSION_RESOURCE) == ["P", "s1", "e1", "QC", "q.txt"]
    assert template_parts(template, PROJECT_RESOURCE) == ["P", "DOCS", "r.txt"]
    # {name} drops the resource's sub-folders; format specs apply; literals stay.
    assert template_parts("sub-{subject}/{scan_id:0>3}_{name}", SCAN) == ["sub-s1", "003_b.dcm"]


def test_what_the_server_names_cannot_leave_the_output_folder() -> None:
    hostile = RemoteFile("/data/x/resources/R/files/../../etc/passwd", "../../etc/passwd", 1,
                         None, "../..", "..", "a/b", "E", "scan", "R:\\", "..", "CON")  # fmt: skip
    parts = template_parts("{project}/{subject}/{session}/{scan_id}_{scan_type}/{resource}/{path}",
                           hostile)  # fmt: skip
    assert all(p not in ("", ".", "..") and "/" not in p and "\\" not in p for p in parts)
    assert parts[-1] == "passwd"


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("/data/{path}", "starts at /"),
        ("{subject}/../{path}", "'..' folder"),
        ("a//{path}", "empty"),
        ("{subjct}/{path}", "no such field {subjct}"),
        ("{}/{path}", "no such field {}"),
        ("{subject.upper}/{path}", "no such field {subject.upper}"),
        ("{subject}/{session}", "needs {path} or {name}"),
        ("{subject!r}/{path}", "no conversion"),
        ("{scan_id:d}/{path}", "Unknown format code"),
        ("{subject/{path}", "does not parse"),
    ],
)
def test_a_template_that_cannot_place_files_is_refused(template: str, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_template(template)
    assert said in str(refused.value)


def test_a_download_by_template_is_verified_resumed_and_checked(
    shared_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    template = "{subject}/{session}/{scan_id}-{scan_type}/{path}"
    base = ["download", "-w", shared_server.url, "-p", "DEMO01", "--resource", "DICOM",
            "-s", "DEMO01_S001_MR1", "-o", str(out), "--path-template", template]  # fmt: skip
    code, stdout, err = cli(*base)
    assert code == 0, err
    got = local_files(out)
    assert got
    assert all(p.startswith("DEMO01_S001/DEMO01_S001_MR1/") for p in got)
    assert {p.split("/")[2] for p in got} == {"1-T1w", "2-T2w", "3-rest fMRI"}
    assert stdout.strip().splitlines()[-1].endswith(f"{len(got)} verified, 0 failed")
    code, stdout, _ = cli(*base)
    assert code == 0
    code, stdout, _ = cli("verify", "-o", str(out))
    assert code == 0
    assert stdout.strip().splitlines()[-1].startswith(f"verify: {len(got)} files, {len(got)} ok")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--layout", "flat"], "leave out --layout"),
        (["--no-include-subject"], "leave out --[no-]include-subject"),
        (["--metadata", "xml"], "leave out --path-template, or --metadata"),
        (
            ["--catalog", "x.xml"],
            "--catalog fixes what is fetched and where it goes: leave out -p, --path-template",
        ),
    ],
)
def test_flags_a_template_contradicts_are_refused_before_any_request(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """Nothing listens on the address: a command that got as far as a request would fail
    for that instead."""
    code, _, err = cli("download", "-w", "http://127.0.0.1:9", "-p", "P", "-o",
                       str(tmp_path / "o"), "--path-template", "{path}", *flags)  # fmt: skip
    assert code == 2
    assert said in err
    assert not (tmp_path / "o").exists()

"""xget mode end to end against minixnat: xget's flags, its zip names and contents, -z,
-overwrite, -longname, session files, DDMMYYYY dates, and what happens when a file fails."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import requests

from tests.conftest import Server
from tests.test_download import cli, local_files


def xget(*args: str) -> tuple[int, str, str]:
    return cli("xget", *args)


def server_members(server: Server, session: str, resource: str = "DICOM") -> dict[str, str]:
    """What the zip of ``session``'s scans should hold: member path -> MD5."""
    project = session.split("_", 1)[0]
    base = f"{server.url}/data/projects/{project}/experiments/{session}"
    auth = ("admin", "admin")
    fmt = {"format": "json"}
    scans = {
        r["ID"]: r["type"]
        for r in requests.get(f"{base}/scans", params=fmt, auth=auth, timeout=30).json()[
            "ResultSet"
        ]["Result"]
    }
    rows = requests.get(f"{base}/scans/ALL/files", params=fmt, auth=auth, timeout=30).json()[
        "ResultSet"
    ]["Result"]
    out = {}
    for r in rows:
        if r["collection"] != resource:
            continue
        scan = r["URI"].split("/scans/", 1)[1].split("/", 1)[0]
        path = r["URI"].split("/files/", 1)[1]
        out[f"{session}/scans/{scan}-{scans[scan]}/resources/{resource}/files/{path}"] = r["digest"]
    return out


def zip_members(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {n: hashlib.md5(zf.read(n)).hexdigest() for n in zf.namelist()}


def test_project_gives_one_verified_zip_per_session(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, stdout, _ = xget("-host", shared_server.url, "-proj", "DEMO01", "-o", str(out))
    assert code == 0, stdout
    zips = sorted(p.name for p in out.glob("*.zip"))
    labels = [
        r["label"]
        for r in requests.get(
            f"{shared_server.url}/data/projects/DEMO01/experiments",
            params={"format": "json"},
            auth=("admin", "admin"),
            timeout=30,
        ).json()["ResultSet"]["Result"]
    ]
    # The default -format is DICOM, which only scans have in the demo data.
    assert zips == sorted(f"{label}_acq.zip" for label in labels)
    assert zip_members(out / "DEMO01_S001_MR1_acq.zip") == server_members(
        shared_server, "DEMO01_S001_MR1"
    )
    assert stdout.strip().splitlines()[-1].endswith("0 failed")
    # The staging area is emptied once the zips are written; nothing else is left around.
    assert not any((out / ".xnat-downloader" / "xget").rglob("*.dcm"))
    assert not list(out.glob("*.xnatdl-part"))


def test_format_all_adds_assessor_and_recon_zips(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, err = xget(
        "-host", shared_server.url, "-s", "DEMO01_S001_MR1", "-format", "ALL", "-o", str(out)
    )
    assert code == 0, err
    names = sorted(p.name for p in out.glob("*.zip"))
    assert names == [
        "DEMO01_S001_MR1_acq.zip",
        "DEMO01_S001_MR1_ass.zip",
        "DEMO01_S001_MR1_recon.zip",
    ]
    ass = zip_members(out / "DEMO01_S001_MR1_ass.zip")
    assert ass
    assert all(n.startswith("DEMO01_S001_MR1/assessors/") for n in ass)
    recon = zip_members(out / "DEMO01_S001_MR1_recon.zip")
    assert recon
    assert all(n.startswith("DEMO01_S001_MR1/reconstructions/") for n in recon)


def test_constraints_and_longname(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, err = xget(
        "-host",
        shared_server.url,
        "-s",
        "DEMO01_S001_MR1,XNAT_E00003",  # a label and an ID (DEMO01_S001_MR2), without -proj
        "-acq",
        "1,T2*",
        "-q",
        "usable",
        "-longname",
        "-o",
        str(out),
    )
    assert code == 0, err
    names = sorted(p.name for p in out.glob("*.zip"))
    assert names, err
    assert all(n.endswith("_acq_1_T2__q_usable_f_DICOM.zip") for n in names), names
    assert names[0].startswith("p_DEMO01_sess_DEMO01_S001_MR1_acq_")
    members = zip_members(out / names[0])
    folders = {m.split("/")[2] for m in members}
    assert folders
    assert all(f.startswith("1-") or "-T2" in f for f in folders), folders


def test_quality_filter_matches_server(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, err = xget(
        "-host", shared_server.url, "-proj", "DEMO02", "-q", "unusable", "-z", "-o", str(out)
    )
    assert code == 0, err
    rows = requests.get(
        f"{shared_server.url}/data/experiments",
        params={"project": "DEMO02", "format": "json"},
        auth=("admin", "admin"),
        timeout=30,
    ).json()["ResultSet"]["Result"]
    expected = set()
    for row in rows:
        for scan in requests.get(
            f"{shared_server.url}/data/experiments/{row['ID']}/scans",
            params={"format": "json"},
            auth=("admin", "admin"),
            timeout=30,
        ).json()["ResultSet"]["Result"]:
            if scan["quality"] == "unusable":
                expected.add(f"{row['label']}/scans/{scan['ID']}-{scan['type']}")
    got = {"/".join(p.split("/")[:3]) for p in local_files(out)}
    assert got == expected


def test_extract_is_the_zip_unpacked(shared_server: Server, tmp_path: Path) -> None:
    zipped, extracted = tmp_path / "zipped", tmp_path / "extracted"
    base = ("-host", shared_server.url, "-s", "DEMO01_S002_MR1", "-proj", "DEMO01")
    assert xget(*base, "-o", str(zipped))[0] == 0
    code, _, err = xget(*base, "-z", "-o", str(extracted))
    assert code == 0, err
    assert not list(extracted.glob("*.zip"))
    assert local_files(extracted) == zip_members(zipped / "DEMO01_S002_MR1_acq.zip")


def test_existing_zip_is_kept_unless_overwrite(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    stale = out / "DEMO01_S001_MR1_acq.zip"
    stale.write_bytes(b"an older zip")
    base = ("-host", shared_server.url, "-s", "DEMO01_S001_MR1", "-o", str(out))
    code, _, err = xget(*base)
    assert code == 0
    assert stale.read_bytes() == b"an older zip"
    assert "kept" in err
    assert "-overwrite" in err
    code, _, err = xget(*base, "-overwrite")
    assert code == 0, err
    assert zip_members(stale) == server_members(shared_server, "DEMO01_S001_MR1")


def test_session_file_and_passfile(shared_server: Server, tmp_path: Path) -> None:
    passfile = tmp_path / "pass"
    passfile.write_text(f"+admin@{shared_server.url}=admin\n")
    sessions = tmp_path / "sessions.txt"
    sessions.write_text("DEMO01_S001_MR1,DEMO02_S001_MR1\r\n\r\nDEMO01_S002_CT2\r\n")
    out = tmp_path / "o"
    # Host, user and password all come from the pass file, as in xget.
    code, _, err = cli(
        "xget", "-passfile", str(passfile), "-s", str(sessions), "-o", str(out), env={}
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.zip")) == [
        "DEMO01_S001_MR1_acq.zip",
        "DEMO01_S002_CT2_acq.zip",
        "DEMO02_S001_MR1_acq.zip",
    ]


def test_dates_are_ddmmyyyy(shared_server: Server, tmp_path: Path) -> None:
    rows = requests.get(
        f"{shared_server.url}/data/projects/DEMO01/experiments",
        params={"format": "json", "columns": "label,date"},
        auth=("admin", "admin"),
        timeout=30,
    ).json()["ResultSet"]["Result"]
    dates = sorted({r["date"] for r in rows})
    middle = dates[len(dates) // 2]
    y, m, d = middle.split("-")
    out = tmp_path / "o"
    code, _, err = xget(
        "-host", shared_server.url, "-proj", "DEMO01", "-start", f"{d}{m}{y}", "-o", str(out)
    )
    assert code == 0, err
    expected = {f"{r['label']}_acq.zip" for r in rows if r["date"] >= middle}
    assert {p.name for p in out.glob("*.zip")} == expected
    code, _, err = xget("-host", shared_server.url, "-proj", "DEMO01", "-end", "2024-01-31")
    assert code == 2
    assert "'2024-01-31'" in err
    assert "DDMMYYYY" in err


def test_subject_constraint(shared_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, err = xget(
        "-host", shared_server.url, "-proj", "DEMO01", "-subj", "DEMO01_S002", "-o", str(out)
    )
    assert code == 0, err
    names = {p.name for p in out.glob("*.zip")}
    assert names
    assert all(n.startswith("DEMO01_S002_") for n in names)


def test_bad_input(shared_server: Server, tmp_path: Path) -> None:
    code, _, err = xget("-host", shared_server.url, "-o", str(tmp_path))
    assert code == 2
    assert "-s" in err
    assert "-proj" in err
    code, _, err = xget(
        "-host", shared_server.url, "-proj", "DEMO01", "-acq", "NONE,1", "-o", str(tmp_path)
    )
    assert code == 2
    assert "NONE" in err
    code, _, err = cli(
        "xget", "-host", shared_server.url, "-u", "admin", "-p", "nope", "-proj", "DEMO01",
        "-o", str(tmp_path), env={},
    )  # fmt: skip
    assert code == 2
    assert "wrong user name or password" in err
    assert "nope" not in err


def test_failed_file_means_no_zip_and_a_rerun_finishes(
    serve: Callable[..., Server], archive: Path, tmp_path: Path
) -> None:
    """A zip is only ever written from verified files.  A file whose bytes do not match
    XNAT's digest fails; its session's zip is not written; once the server's file is right
    again, a re-run fetches only what is missing and writes the zip."""
    server = serve()
    victim = sorted((archive / "archive" / "DEMO01").rglob("*.dcm"))[0]
    session_label = next(p for p in victim.parents if p.parent.name.startswith("arc")).name
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # same size, other bytes
    out = tmp_path / "o"
    base = ("-host", server.url, "-s", session_label, "-proj", "DEMO01", "-o", str(out))
    code, stdout, err = xget(*base)
    assert code == 1
    assert f"did not write {out / (session_label + '_acq.zip')}" in err
    assert not (out / f"{session_label}_acq.zip").exists()
    assert not list(out.glob("*.xnatdl-part"))
    assert stdout.strip().splitlines()[-1].endswith(", 1 failed")
    victim.write_bytes(good)
    code, stdout, err = xget(*base)
    assert code == 0, err
    assert zip_members(out / f"{session_label}_acq.zip") == server_members(server, session_label)
    assert "already verified" in err
    assert " 0 already verified" not in err


def test_xget_exits_2_when_nothing_matched(shared_server: Server, tmp_path: Path) -> None:
    code, out, _ = cli("xget", "-host", shared_server.url, "-proj", "DEMO01", "-acq", "NOSUCH*",
                       "-o", str(tmp_path))  # fmt: skip
    assert code == 2
    assert "nothing matched" in out

"""The pure decisions behind uploads, both sides: which local files make which session,
how a destination reads, which archive members are refused, and the streamed zip."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minixnat.http.messages import HttpError
from minixnat.importer.build import safe_label, seed_layout
from minixnat.importer.unpack import Budget, UnpackError, safe_member, unpack
from minixnat.rest.imports import parse_dest
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.upload import (
    OwnResourceFile,
    find_own_resources,
    find_sessions,
    is_metadata,
    own_resource_groups,
    parse_subjects,
    resource_files,
    resource_folders_only,
)
from xnat_downloader.transfer.upload import zip_body

P = PurePosixPath


def test_find_sessions_reads_our_download_layout() -> None:
    files = [
        P("DIR/PROJ/S1/MR1/scans/1-T1w/resources/DICOM/files/a.dcm"),
        P("DIR/PROJ/S1/MR1/scans/1-T1w/resources/NIFTI/files/sidecar/t1.json"),
        P("DIR/PROJ/S1/MR1/scans/2/resources/DICOM/files/sub/b.dcm"),
        P("DIR/PROJ/S1/MR1/resources/NOTES/files/n.txt"),
        P("DIR/PROJ/S1/MR1/assessors/QC/resources/DATA/files/q.xml"),
        P("DIR/PROJ/S1/MR1/.xnat-downloader/state.json"),
        P("DIR/PROJ/S1/MR1/assessors/QC/assessor.xml"),
        P("DIR/PROJ/S1/MR1/assessors/QC/assessor.json"),  # not what an upload reads
        P("DIR/PROJ/S1/MR1/reconstructions/R1/resources/NIFTI/files/m.nii"),
        P("DIR/PROJ/README.txt"),
        P("DIR/other/resources/X/files/lonely.txt"),  # a resource tree with no scans
    ]
    sessions, loose = find_sessions(files)
    assert len(sessions) == 1
    (s,) = sessions
    assert (s.label, s.subject) == ("MR1", "S1")
    assert s.imported == [
        (files[0], "MR1/scans/1/resources/DICOM/files/a.dcm"),
        (files[2], "MR1/scans/2/resources/DICOM/files/sub/b.dcm"),
    ]
    assert {(e.scan, e.resource, e.relpath) for e in s.extras} == {
        ("1", "NIFTI", "sidecar/t1.json"),
        (None, "NOTES", "n.txt"),
    }
    assert s.scan_types == {"1": "T1w"}
    # Assessors and reconstructions: their documents and resource files, by folder.
    qc, recon = s.derived[("assessors", "QC")], s.derived[("reconstructions", "R1")]
    assert (qc.document, [(f.resource, f.relpath) for f in qc.files]) == (
        files[6],
        [("DATA", "q.xml")],
    )
    assert (recon.document, [(f.resource, f.relpath) for f in recon.files]) == (
        None,
        [("NIFTI", "m.nii")],
    )
    assert s.ignored == [files[7]]
    assert loose == [P("DIR/PROJ/README.txt"), P("DIR/other/resources/X/files/lonely.txt")]


def test_the_project_and_subject_folders_own_resources_are_found_among_the_rest() -> None:
    scan = "scans/1/resources/DICOM/files/a.dcm"
    files = [
        P(f"D/PROJ/S1/MR1/{scan}"),
        P(f"D/PROJ/S2/MR1/{scan}"),
        P("D/PROJ/resources/DOCS/files/readme.txt"),  # the project's
        P("D/PROJ/S1/resources/NOTES/files/deep/resources/x/files/n.txt"),  # S1's
        P("D/PROJ/S3/resources/NOTES/files/m.txt"),  # S3 has no session here: still a subject
        P("D/PROJ/S1/MR2/resources/QC/files/q.txt"),  # a session folder without scans
        P("D/resources/X/files/above.txt"),  # above the project folder
        P("D/PROJ/project.xml"),
        P("D/PROJ/S1/MR1/scans/1/scan.xml"),
        P("D/PROJ/S1/MR1/reconstructions/R1/resources/NIFTI/files/r.nii"),
    ]
    sessions, loose = find_sessions(files)
    assert [s.folder for s in sessions] == [P("D/PROJ/S1/MR1"), P("D/PROJ/S2/MR1")]
    assert sessions[0].ignored == []
    assert [f.local for f in sessions[0].derived[("reconstructions", "R1")].files] == [files[-1]]
    own, rest = find_own_resources(sessions, loose)
    assert {(o.subject, o.resource, o.relpath) for o in own} == {
        (None, "DOCS", "readme.txt"),
        ("S1", "NOTES", "deep/resources/x/files/n.txt"),
        ("S3", "NOTES", "m.txt"),
    }
    assert sorted(rest) == sorted([files[5], files[6], files[7]])
    assert [r for r in rest if is_metadata(r)] == [files[7]]
    assert sessions[0].scan_documents == {"1": files[8]}  # its quality is set from it
    assert is_metadata(P("S/MR1/1-T1w_scan.xml"))  # the flat layout's
    assert is_metadata(P("S/MR1/MR1_QC_assessor.xml"))
    assert is_metadata(P("S/MR1/recon.json"))
    assert not is_metadata(P("S/MR1/notes.xml"))


def test_a_tree_of_resource_folders_alone_is_told_apart() -> None:
    only = [
        P("PROJ/resources/DOCS/files/a.txt"),
        P("PROJ/resources/DOCS/files/sub/b.txt"),
        P("PROJ/S1/resources/NOTES/files/n.txt"),
        P("PROJ/project.xml"),
        P("PROJ/.xnat-downloader/state.sqlite"),
    ]
    assert resource_folders_only(only) == [
        P("PROJ/S1/resources/NOTES/files"),
        P("PROJ/resources/DOCS/files"),
    ]
    assert resource_folders_only([*only, P("PROJ/scan0001.dcm")]) == []  # DICOM to import
    assert resource_folders_only([P("PROJ/resources/DOCS/a.txt")]) == []  # not our layout


def test_two_files_for_one_own_resource_path_are_refused() -> None:
    one = OwnResourceFile(None, "DOCS", "readme.txt", P("A/resources/DOCS/files/readme.txt"))
    other = OwnResourceFile(None, "DOCS", "readme.txt", P("B/resources/DOCS/files/readme.txt"))
    theirs = OwnResourceFile("S1", "DOCS", "readme.txt", P("B/S1/resources/DOCS/files/readme.txt"))
    groups = own_resource_groups([(P("/up"), one), (P("/up"), theirs)])
    assert groups == {
        (None, "DOCS"): [(P("/up/A/resources/DOCS/files/readme.txt"), "readme.txt")],
        ("S1", "DOCS"): [(P("/up/B/S1/resources/DOCS/files/readme.txt"), "readme.txt")],
    }
    with pytest.raises(UsageError, match=r"would both be uploaded as 'readme\.txt' of the project"):
        own_resource_groups([(P("/up"), one), (P("/up"), other)])


def test_resource_files_refuse_two_files_for_one_name() -> None:
    pairs = resource_files([(P("/a/x.txt"), []), (P("/b"), [P("y.txt"), P("s/z.txt")])])
    assert pairs == [
        (P("/b/s/z.txt"), "s/z.txt"),
        (P("/a/x.txt"), "x.txt"),
        (P("/b/y.txt"), "y.txt"),
    ]
    with pytest.raises(UsageError, match="both be uploaded"):
        resource_files([(P("/a/x.txt"), []), (P("/b"), [P("x.txt")])])


def test_subject_rows_errors_name_the_line() -> None:
    rows, errors = parse_subjects("Subject,Gender,YOB,group\ns1,m,1950,A\ns2,,2999,\n,,,\n")
    assert [(r.line, r.label, r.demographics, r.fields) for r in rows] == [
        (2, "s1", {"gender": "male", "yob": "1950"}, {"group": "A"})
    ]
    assert [(e.line, e.label) for e in errors] == [(3, "s2")]
    assert "year of birth" in errors[0].message
    with pytest.raises(UsageError, match="no label column"):
        parse_subjects("name,gender\nx,m\n")


@pytest.mark.parametrize(
    "text",
    [
        "Subject;Gender;YOB;group\ns1;m;1950;A\n",  # a spreadsheet where ',' is the decimal mark
        "Subject\tGender\tYOB\tgroup\ns1\tm\t1950\tA\n",  # a tab-separated export
        "\ufeffSubject,Gender,YOB,group\r\ns1,m,1950,A\r\n",  # Excel's UTF-8 CSV
    ],
)
def test_subject_rows_in_each_spreadsheet_export(text: str) -> None:
    rows, errors = parse_subjects(text)
    assert errors == []
    assert [(r.label, r.demographics, r.fields) for r in rows] == [
        ("s1", {"gender": "male", "yob": "1950"}, {"group": "A"})
    ]


def test_a_quoted_separator_in_the_header_does_not_count() -> None:
    rows, _ = parse_subjects('id,"a; b; c"\ns1,"x;y"\n')
    assert [(r.label, r.fields) for r in rows] == [("s1", {"a; b; c": "x;y"})]


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("", (False, "", "", "")),
        ("/prearchive", (False, "", "", "")),
        ("/prearchive/projects/P", (False, "P", "", "")),
        ("/archive", (True, "", "", "")),
        ("/archive/projects/P/subjects/S/experiments/L", (True, "P", "S", "L")),
    ],
)
def test_parse_dest(dest: str, expected: tuple[bool, str, str, str]) -> None:
    d = parse_dest(dest, auto_archive=False)
    assert (d.archive, d.project, d.subject, d.label) == expected


@pytest.mark.parametrize("dest", ["/elsewhere", "/archive/projects", "/archive/subjects/S"])
def test_parse_dest_refuses_nonsense(dest: str) -> None:
    with pytest.raises(HttpError):
        parse_dest(dest, auto_archive=False)


def test_seed_layout() -> None:
    assert seed_layout(P("x/S1/scans/4/resources/DICOM/files/a/b.dcm")) == (
        "S1",
        "4",
        "DICOM",
        "a/b.dcm",
    )
    assert seed_layout(P("S1/scans/4/resources/DICOM/files")) is None
    assert seed_layout(P("flat/a.dcm")) is None


@given(st.text(max_size=40))
def test_safe_label_is_safe(text: str) -> None:
    label = safe_label(text)
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in label)
    assert not label.startswith(".")


@given(st.lists(st.sampled_from(["a", "..", ".", "", "/", "b.dcm", "\\", "C:"]), max_size=6))
def test_safe_member_never_escapes(parts: list[str]) -> None:
    name = "/".join(parts)
    try:
        rel = safe_member(name)
    except UnpackError:
        return
    if rel is not None:
        assert not rel.is_absolute()
        assert ".." not in rel.parts
        assert ":" not in rel.parts[0][1:2]


def test_unpack_stops_at_the_byte_budget(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (4 << 20))
    with pytest.raises(UnpackError, match="zip bomb"):
        unpack(bomb, tmp_path / "out", Budget(10, 1 << 20))
    with pytest.raises(UnpackError, match="too many members"):
        unpack(bomb, tmp_path / "out2", Budget(0, 1 << 30))


def test_zip_body_streams_a_valid_zip(tmp_path: Path) -> None:
    files = []
    for i in range(5):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * (i * 300_000 + 1))
        files.append((path, f"S/scans/{i}/resources/DICOM/files/f{i}"))
    seen: list[int] = []

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in zip_body(files, seen.append)])

    data = asyncio.run(collect())
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == {a: p.read_bytes() for p, a in files}
    assert sum(seen) == sum(p.stat().st_size for p, _ in files)


def test_unpack_refuses_links(tmp_path: Path) -> None:
    tarred = tmp_path / "link.tar"
    with tarfile.open(tarred, "w") as tf:
        info = tarfile.TarInfo("S/scans/1/resources/DICOM/files/passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnpackError, match="link or device"):
        unpack(tarred, tmp_path / "out", Budget(10, 1 << 20))
    assert not (tmp_path / "out" / "S").exists()


def test_a_stored_member_is_hashed_from_its_byte_range_as_zipfile_reads_it(
    tmp_path: Path,
) -> None:
    """Members stored as they are are hashed straight from the archive's bytes, CRC checked;
    the result is what reading through zipfile gives. A deflated member is left to zipfile,
    and a stored member with a changed byte is refused, as zipfile refuses it."""
    from xnat_downloader.transfer.localfs import stored_member_digest

    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/stored.dcm", bytes(range(256)) * 5000, zipfile.ZIP_STORED)
        zf.writestr("b/deflated.txt", b"text " * 4000, zipfile.ZIP_DEFLATED)
        zf.writestr("c/empty", b"", zipfile.ZIP_STORED)
        # An extra field: where the data start is read from the member's local header.
        info = zipfile.ZipInfo("d/extra.bin")
        info.extra = b"\xfe\xca\x04\x00abcd"
        zf.writestr(info, b"xyz" * 1000, zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            got = stored_member_digest(raw, info)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                assert got is None
                continue
            data = zf.read(info)
            assert got == (hashlib.md5(data).hexdigest(), len(data))
        stored = zf.getinfo("a/stored.dcm")
    damaged = bytearray(path.read_bytes())
    start = stored.header_offset + 30 + len(stored.filename)
    damaged[start + 700] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            zf.read(stored.filename)
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            stored_member_digest(raw, zf.getinfo(stored.filename))


@pytest.mark.parametrize("grown_by", [-1, 1])
def test_a_file_body_sends_exactly_the_size_it_announced(tmp_path: Path, grown_by: int) -> None:
    """A body sent with a Content-Length: a file that is shorter or longer than planned is
    refused (as a local read error) instead of sending other bytes than announced."""
    from xnat_downloader.errors import LocalReadError
    from xnat_downloader.transfer.upload import file_body

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)

    async def drain(size: int) -> int:
        return sum([len(chunk) async for chunk in file_body(path, size)])

    assert asyncio.run(drain(3_000_000)) == 3_000_000
    with pytest.raises(LocalReadError, match="changed while it was being sent"):
        asyncio.run(drain(3_000_000 - grown_by))


def test_the_study_uid_is_found_in_a_header_by_its_tag(tmp_path: Path) -> None:
    """Explicit and implicit VR little endian headers give the StudyInstanceUID pydicom
    reads; bytes that look like the tag but hold no UID are passed over; no tag, None."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    from xnat_downloader.plan.upload import STUDY_UID_TAG, study_uid_in_header

    study = generate_uid()
    for syntax, implicit in ((ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True)):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PatientName = "A^B"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=implicit, little_endian=True)
        # A decoy before it: the tag's bytes inside another value, then no UID after them.
        decoy = STUDY_UID_TAG + b"UI\x08\x00not-a-ui"
        assert study_uid_in_header(decoy + buf.getvalue()) == study
        assert study_uid_in_header(buf.getvalue()) == study
    assert study_uid_in_header(b"\x00" * 1000) is None
    assert study_uid_in_header(STUDY_UID_TAG + b"UI\x40\x00" + b"1.2.3") is None  # cut short

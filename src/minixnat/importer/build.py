"""Group unpacked files into image sessions, the way XNAT's DICOM-zip importer does.

Two layouts are understood:

- seed 004's compressed-uploader layout,
  ``{session}/scans/{scan}/resources/{DICOM|ECAT}/files/{…}``: the folder names give the
  session label and the scan IDs; resources other than DICOM and ECAT are ignored;
- anything else: every file is read as DICOM and sorted by its header (one session per
  StudyInstanceUID, one scan per SeriesNumber).

The classic importer (``SI``) also takes ECAT 7 PET files, which have no UIDs: one session
per patient and scan day, one scan per file (or per scan folder in seed 004's layout), in an
``ECAT`` resource.  DICOM-zip refuses them, naming the importer that takes them.

Session, scan and subject facts come from the headers: modality picks the xsiType, the
series description becomes the scan type, and the UIDs are kept.  Nothing here touches the
archive; errors are :class:`BuildError` with a message fit for the HTTP response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from minixnat.errors import MinixnatError
from minixnat.importer.headers import Header, is_ecat, read_ecat, read_header

SESSION_TYPES = {
    "MR": "xnat:mrSessionData",
    "CT": "xnat:ctSessionData",
    "PT": "xnat:petSessionData",
    "US": "xnat:usSessionData",
    "CR": "xnat:crSessionData",
    "DX": "xnat:dxSessionData",
    "NM": "xnat:nmSessionData",
}
SCAN_TYPES = {
    "MR": "xnat:mrScanData",
    "CT": "xnat:ctScanData",
    "PT": "xnat:petScanData",
    "US": "xnat:usScanData",
    "CR": "xnat:crScanData",
    "DX": "xnat:dxScanData",
    "NM": "xnat:nmScanData",
}
IMPORTED_RESOURCES = ("DICOM", "ECAT")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class BuildError(MinixnatError):
    """The upload cannot be made into sessions (400 unless said otherwise)."""


@dataclass
class ImportFile:
    source: Path
    resource: str
    relpath: str
    md5: str = ""  # filled in before the session is committed (commit.hash_files)


@dataclass
class ImportScan:
    scan_id: str
    xsi_type: str = "xnat:otherDicomScanData"
    type: str = ""
    series_description: str = ""
    uid: str = ""
    modality: str = ""
    files: list[ImportFile] = field(default_factory=list)
    #: Header facts kept as the scan's fields (scanner, MR timing), by field path.
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class ImportSession:
    key: str
    label: str = ""
    subject: str = ""
    xsi_type: str = "xnat:otherDicomSessionData"
    modality: str = ""
    date: str = ""
    time: str = ""
    uid: str = ""
    scans: dict[str, ImportScan] = field(default_factory=dict)
    #: Header facts kept as the session's fields (scanner, site, accession number, …).
    fields: dict[str, str] = field(default_factory=dict)

    def file_count(self) -> int:
        return sum(len(s.files) for s in self.scans.values())


@dataclass
class Options:
    subject: str = ""
    label: str = ""
    ignore_unparsable: bool = False
    #: ECAT files are read (the classic importer) rather than refused (DICOM-zip).
    ecat: bool = False


@dataclass
class Built:
    sessions: list[ImportSession]
    ignored: list[str]  # names of files left out (other resources, unparsable when allowed)


def safe_label(text: str) -> str:
    """An XNAT-safe label: letters, digits, ``_``, ``-`` and ``.``; never empty or dotted."""
    cleaned = _UNSAFE.sub("_", text.strip()).strip("._")
    return cleaned


def seed_layout(rel: PurePosixPath) -> tuple[str, str, str, str] | None:
    """(session folder, scan, resource, path in resource) for seed 004's layout, else None."""
    parts = rel.parts
    # parts[i:i + 6] = session, "scans", scan, "resources", resource, "files"; then the path.
    for i in range(len(parts) - 6):
        if (
            parts[i + 1].lower() == "scans"
            and parts[i + 3].lower() == "resources"
            and parts[i + 5].lower() == "files"
        ):
            return parts[i], parts[i + 2], parts[i + 4], "/".join(parts[i + 6 :])
    return None


def _session_resource(rel: PurePosixPath, seed_sessions: set[str]) -> bool:
    """Whether ``rel`` is ``{session}/resources/{label}/files/…`` of a seed-layout session."""
    parts = rel.parts
    return any(
        parts[i] in seed_sessions
        and parts[i + 1].lower() == "resources"
        and parts[i + 3].lower() == "files"
        for i in range(len(parts) - 4)
    )


def _apply_header(session: ImportSession, scan: ImportScan, header: Header) -> None:
    if not (session.uid or session.modality):  # the first file's header names it
        session.uid = header.study_uid
        session.modality = header.modality
        session.xsi_type = SESSION_TYPES.get(header.modality, session.xsi_type)
        session.date = header.study_date
        session.time = header.study_time
        session.subject = session.subject or safe_label(header.patient_name or header.patient_id)
        session.label = session.label or safe_label(header.patient_id)
        session.fields = dict(header.session_fields)
    if not (scan.uid or scan.modality):
        scan.uid = header.series_uid
        scan.modality = header.modality
        scan.xsi_type = SCAN_TYPES.get(header.modality, scan.xsi_type)
        scan.series_description = header.series_description
        scan.type = header.series_description
        scan.fields = dict(header.scan_fields)


def _read(source: Path, rel: PurePosixPath, options: Options) -> Header | None:
    """The file's DICOM or ECAT header; None if it is neither (or ECAT to DICOM-zip)."""
    if not is_ecat(source):
        return read_header(source)
    if not options.ecat:
        raise BuildError(
            f"{rel}: ECAT files are imported by the classic importer: send "
            "import-handler=SI, or choose it on the upload page"
        )
    return read_ecat(source)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.partition(".")
    n = 2
    while f"{stem}-{n}{dot}{ext}" in taken:
        n += 1
    return f"{stem}-{n}{dot}{ext}"


def build(files: list[tuple[Path, PurePosixPath]], options: Options) -> Built:
    """Sessions from ``files`` ((path on disk, path inside the upload) pairs)."""
    sessions: dict[str, ImportSession] = {}
    ignored: list[str] = []
    unparsable: list[str] = []
    names: dict[tuple[str, str], set[str]] = {}
    seed_sessions = {laid[0] for _, rel in files if (laid := seed_layout(rel)) is not None}
    for source, rel in sorted(files, key=lambda pair: str(pair[1])):
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
            ignored.append(str(rel))  # .DS_Store and resource forks are never data
            continue
        if _session_resource(rel, seed_sessions):
            ignored.append(str(rel))  # {session}/resources/…: not imported, as seed 004 says
            continue
        laid_out = seed_layout(rel)
        if laid_out is not None:
            folder, scan_id, resource, relpath = laid_out
            resource = resource.upper()
            if resource not in IMPORTED_RESOURCES:
                ignored.append(str(rel))
                continue
            header = _read(source, rel, options)
            if header is None or header.kind != resource:
                unparsable.append(str(rel))
                continue
            key = f"folder:{folder}"
            session = sessions.setdefault(key, ImportSession(key, label=safe_label(folder)))
            scan_key = safe_label(scan_id)
        else:
            header = _read(source, rel, options)
            if header is None:
                unparsable.append(str(rel))
                continue
            if header.kind == "ECAT":
                key = f"ecat:{header.patient_id}:{header.study_date}"
                scan_key = safe_label(PurePosixPath(rel.name).stem)
            else:
                key = f"study:{header.study_uid}"
                scan_key = safe_label(header.series_number) or safe_label(header.series_uid)
            session = sessions.setdefault(key, ImportSession(key))
            resource, relpath = header.kind, rel.name
        if not scan_key:
            raise BuildError(f"{rel}: the scan folder name has no usable characters")
        scan = session.scans.setdefault(scan_key, ImportScan(scan_key))
        _apply_header(session, scan, header)
        taken = names.setdefault((key, scan_key), set())
        relpath = _unique(relpath, taken)
        taken.add(relpath)
        scan.files.append(ImportFile(source, resource, relpath))
    if unparsable and not options.ignore_unparsable:
        shown = ", ".join(unparsable[:5]) + (" …" if len(unparsable) > 5 else "")
        raise BuildError(
            f"{len(unparsable)} file(s) are not DICOM{' or ECAT' if options.ecat else ''}: "
            f"{shown}. Remove them, or send "
            "Ignore-Unparsable=true to leave them out"
        )
    ignored += unparsable
    found = [s for s in sessions.values() if s.scans]
    if not found:
        raise BuildError("Upload did not include parsable files for session generation.")
    if options.label and len(found) > 1:
        raise BuildError(
            f"EXPT_LABEL names one session, but the upload holds {len(found)} sessions; "
            "leave it out or upload the sessions one at a time"
        )
    _name_sessions(found, options)
    return Built(found, ignored)


def _name_sessions(found: list[ImportSession], options: Options) -> None:
    taken: set[str] = set()
    for session in found:
        if options.label:
            session.label = safe_label(options.label)
        if options.subject:
            session.subject = safe_label(options.subject)
        if not session.subject:
            raise BuildError(
                f"cannot tell the subject of session {session.label or session.uid}: its "
                "DICOM has no PatientName or PatientID; pass SUBJECT_ID"
            )
        label = session.label or safe_label(session.uid) or "session"
        base, n = label, 2
        while label in taken:
            label = f"{base}_{n}"
            n += 1
        taken.add(label)
        session.label = label

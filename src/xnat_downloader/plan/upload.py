"""What an upload sends, decided from local paths alone (pure: no I/O, no server).

``xnat-downloader upload`` takes archives, folders and spreadsheets.  A folder is read as
one of two things:

- a tree in our download layout (CONTRACT §5): every folder holding
  ``scans/{id}[-{type}]/resources/{RES}/files/…`` is a session.  Its DICOM and ECAT
  resources are imported, zipped in seed 004's layout; other scan resources and the
  session's own resources are uploaded as resource files after the import; the scan type
  in the folder name is set on the new scan; its assessors and reconstructions are made
  from the documents ``--metadata xml`` saved in their folders, and their resources'
  files uploaded.  The subject is the parent folder's name.
  The subject folders' and the project folder's own ``resources/{RES}/files/…`` (what
  ``--subject-resources`` and ``--project-resources`` download) are resource files of
  the subject and of the project uploaded to;
- anything else: a folder of DICOM, zipped as it is and sorted by the server from the
  headers.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import PurePosixPath

from xnat_downloader.errors import UsageError

IMPORTED = ("DICOM", "ECAT")
ARCHIVE_TYPES = {
    ".zip": "application/zip",
    ".tar.gz": "application/x-gtar",
    ".tgz": "application/x-gtar",
    ".tar": "application/x-tar",
}
SUBJECT_LABEL_COLUMNS = ("label", "subject", "subject_label", "subject_id", "id")
# XNAT's xnat:demographicData elements, by the lower-case column name that stands for each;
# a spreadsheet's other columns become custom fields.
DEMOGRAPHICS = {
    name.lower(): name
    for name in ("gender", "dob", "yob", "age", "handedness", "ses", "education",
                 "educationDesc", "race", "ethnicity", "weight", "height", "gestational_age",
                 "post_menstrual_age", "birth_weight")
}  # fmt: skip
WHOLE_NUMBERS = ("age", "ses", "education")  # xs:integer in XNAT's schema (yob: a year)
NUMBERS = ("weight", "height", "gestational_age", "post_menstrual_age", "birth_weight")
GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other",
           "other": "other", "u": "unknown", "unknown": "unknown"}  # fmt: skip
HANDEDNESS = ("right", "left", "ambidextrous", "unknown")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def archive_type(name: str) -> str | None:
    """The Content-Type to import a file as, from its name; None if it is no archive."""
    lowered = name.lower()
    for suffix, content_type in ARCHIVE_TYPES.items():
        if lowered.endswith(suffix):
            return content_type
    return None


def is_hidden(rel: PurePosixPath) -> bool:
    """Dot-files, dot-folders (our own ``.xnat-downloader`` state) and macOS forks."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def scan_folder(name: str) -> tuple[str, str]:
    """(scan ID, scan type) from a layout folder ``{id}-{type}`` (or just ``{id}``)."""
    scan_id, _, scan_type = name.partition("-")
    return scan_id, scan_type


@dataclass
class ResourceFile:
    """A file for a resource: which owner (scan ID or None for the session), label, path."""

    scan: str | None
    resource: str
    relpath: str
    local: PurePosixPath


@dataclass
class OwnResourceFile:
    """A file of a project's own resource (``subject`` None) or of a subject's."""

    subject: str | None
    resource: str
    relpath: str
    local: PurePosixPath


@dataclass
class DerivedFolder:
    """An assessor's or reconstruction's folder of a session (``assessors/{label}`` or
    ``reconstructions/{id}``): the document ``--metadata xml`` saved in it, which says what
    to make (its type, an assessor's fields), if there is one, and its resource files."""

    collection: str  # "assessors" or "reconstructions"
    name: str
    document: PurePosixPath | None = None
    files: list[ResourceFile] = field(default_factory=list)


# The document of an assessor's or reconstruction's folder, as --metadata xml names it.
DERIVED_DOCUMENTS = {"assessors": "assessor.xml", "reconstructions": "recon.xml"}


@dataclass
class SessionFolder:
    """A session found in a download-layout tree (paths relative to the upload root)."""

    folder: PurePosixPath
    imported: list[tuple[PurePosixPath, str]] = field(default_factory=list)  # (local, arcname)
    extras: list[ResourceFile] = field(default_factory=list)
    scan_types: dict[str, str] = field(default_factory=dict)
    # Each scan's scan.xml (what --metadata xml saves): its quality is set from it.
    scan_documents: dict[str, PurePosixPath] = field(default_factory=dict)
    derived: dict[tuple[str, str], DerivedFolder] = field(default_factory=dict)
    # Files under assessors/ and reconstructions/ that are neither a document nor a
    # resource file (a JSON document: what to make is read from XML).
    ignored: list[PurePosixPath] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.folder.name

    @property
    def subject(self) -> str:
        return self.folder.parent.name

    def sent_after_import(self) -> list[ResourceFile]:
        """The files that go once the session is archived: its other resources' and its
        assessors' and reconstructions' (those whose document says what to make)."""
        made = [f for d in self.derived.values() if d.document is not None for f in d.files]
        return [*self.extras, *made]


def _session_split(rel: PurePosixPath) -> tuple[PurePosixPath, list[str]] | None:
    """(session folder, parts below it) when ``rel`` is in the layout, else None."""
    parts = rel.parts
    for i in range(len(parts) - 1):
        below = parts[i + 1 :]
        scan_file = len(below) >= 6 and below[0] == "scans" and below[2] == "resources"
        if scan_file and below[4] == "files":
            return PurePosixPath(*parts[: i + 1]), list(below)
        if len(below) >= 4 and below[0] == "resources" and below[2] == "files":
            return PurePosixPath(*parts[: i + 1]), list(below)
        if below and below[0] in DERIVED and len(below) >= 2:
            return PurePosixPath(*parts[: i + 1]), list(below)
        if len(below) == 3 and below[0] == "scans" and below[2] == SCAN_DOCUMENT:
            return PurePosixPath(*parts[: i + 1]), list(below)
    return None


DERIVED = ("assessors", "reconstructions")  # made from their documents, if the tree has them
SCAN_DOCUMENT = "scan.xml"
# The documents --metadata saves (XNAT writes its own from what it stores).
METADATA_NAMES = {f"{level}.{kind}" for level in ("project", "subject", "session", "scan",
                                                  "assessor", "recon")
                  for kind in ("xml", "json")}  # fmt: skip
_FLAT_METADATA = tuple(f"_{level}.{kind}" for level in ("scan", "assessor", "recon")
                       for kind in ("xml", "json"))  # fmt: skip


def _resource_at(parts: tuple[str, ...], first: int = 0) -> int | None:
    """Where ``resources/{RES}/files/`` begins in a path with a file below it (the first
    such place from ``first``), or None."""
    return next(
        (i for i in range(first, len(parts) - 3)
         if parts[i] == "resources" and parts[i + 2] == "files"),
        None,
    )  # fmt: skip


def is_metadata(rel: PurePosixPath) -> bool:
    """A document ``--metadata`` saved (``{scan}_scan.xml`` and the like in the flat
    layout)."""
    return rel.name in METADATA_NAMES or rel.name.endswith(_FLAT_METADATA)


def find_own_resources(
    sessions: list[SessionFolder], loose: list[PurePosixPath]
) -> tuple[list[OwnResourceFile], list[PurePosixPath]]:
    """The subjects' and the project's own resource files among ``loose`` (files outside
    any session), and the rest.

    A subject folder is one that holds a session, or a folder beside one in the project
    folder; the project folder is the one that holds subject folders.  Each of them may
    have ``resources/{RES}/files/…`` of its own, as our layout puts them.
    """
    subjects = {s.folder.parent for s in sessions if len(s.folder.parts) > 1}
    projects = {f.parent for f in subjects if len(f.parts) > 1}
    own: list[OwnResourceFile] = []
    rest: list[PurePosixPath] = []
    for rel in loose:
        parts = rel.parts
        i = _resource_at(parts, first=1)
        if i is None:
            rest.append(rel)
            continue
        folder, below = PurePosixPath(*parts[:i]), parts[i + 1 :]
        relpath = "/".join(below[2:])
        if folder in projects:
            own.append(OwnResourceFile(None, below[0], relpath, rel))
        elif folder in subjects or folder.parent in projects:
            own.append(OwnResourceFile(folder.name, below[0], relpath, rel))
        else:
            rest.append(rel)
    return own, rest


def find_sessions(files: list[PurePosixPath]) -> tuple[list[SessionFolder], list[PurePosixPath]]:
    """Sessions in a download-layout tree, and the files outside any session.

    A folder counts as a session only if it has at least one scan resource, so a
    ``resources/…/files`` tree alone is not mistaken for one.
    """
    sessions: dict[PurePosixPath, SessionFolder] = {}
    loose: list[PurePosixPath] = []
    pending: list[tuple[PurePosixPath, PurePosixPath, list[str]]] = []
    for rel in sorted(files):
        if is_hidden(rel):
            continue
        split = _session_split(rel)
        if split is None:
            loose.append(rel)
            continue
        folder, below = split
        if below[0] == "scans" and len(below) > 3:  # a scan's file, not only its document
            sessions.setdefault(folder, SessionFolder(folder))
        pending.append((rel, folder, below))
    for rel, folder, below in pending:
        session = sessions.get(folder)
        if session is None:
            loose.append(rel)
            continue
        if below[0] == "scans":
            scan_id, scan_type = scan_folder(below[1])
            if scan_type:
                session.scan_types[scan_id] = scan_type
            if len(below) == 3:  # its scan.xml
                session.scan_documents[scan_id] = rel
                continue
            resource, relpath = below[3], "/".join(below[5:])
            if resource.upper() in IMPORTED:
                arcname = f"{session.label}/scans/{scan_id}/resources/{resource}/files/{relpath}"
                session.imported.append((rel, arcname))
            else:
                session.extras.append(ResourceFile(scan_id, resource, relpath, rel))
        elif below[0] == "resources":
            session.extras.append(ResourceFile(None, below[1], "/".join(below[3:]), rel))
        else:
            _derived_file(session, rel, below)
    return [s for s in sessions.values() if s.imported or s.extras], loose


def _derived_file(session: SessionFolder, rel: PurePosixPath, below: list[str]) -> None:
    """File ``rel`` (``below`` its session folder: ``assessors/{label}/…`` or
    ``reconstructions/{id}/…``) taken into its session's ``derived``, or ``ignored``."""
    collection, name, rest = below[0], below[1], below[2:]
    if rest == [DERIVED_DOCUMENTS[collection]]:
        folder = session.derived.setdefault((collection, name), DerivedFolder(collection, name))
        folder.document = rel
    elif len(rest) >= 4 and rest[0] == "resources" and rest[2] == "files":
        folder = session.derived.setdefault((collection, name), DerivedFolder(collection, name))
        folder.files.append(ResourceFile(None, rest[1], "/".join(rest[3:]), rel))
    else:
        session.ignored.append(rel)


def resource_folders_only(files: list[PurePosixPath]) -> list[PurePosixPath]:
    """The ``…/resources/{RES}/files`` folders of a tree that holds nothing else (besides
    hidden files and ``--metadata`` documents), else [].  Such a tree (a download with
    ``--no-scans``) has no session to import, and without one it cannot be told whether its
    top folder is a project's, a subject's or a session's: the caller asks for
    ``--resource`` rather than send it to the importer."""
    found: set[PurePosixPath] = set()
    for rel in files:
        if is_hidden(rel) or is_metadata(rel):
            continue
        at = _resource_at(rel.parts)
        if at is None:
            return []
        found.add(PurePosixPath(*rel.parts[: at + 3]))
    return sorted(found)


def own_resource_groups(
    files: list[tuple[PurePosixPath, OwnResourceFile]],
) -> dict[tuple[str | None, str], list[tuple[PurePosixPath, str]]]:
    """{(subject or None for the project, resource): [(local path, path in it)]} of the
    own resource files found in every folder uploaded (each file with the folder its
    ``local`` is relative to).  Two local files aimed at one remote path (two project
    folders uploaded into one project, say) are refused."""
    groups: dict[tuple[str | None, str], list[tuple[PurePosixPath, str]]] = {}
    chosen: dict[tuple[str | None, str, str], PurePosixPath] = {}
    for base, f in files:
        local = base / f.local
        key = (f.subject, f.resource, f.relpath)
        if key in chosen:
            owner = f"subject {f.subject}" if f.subject is not None else "the project"
            msg = (
                f"{chosen[key]} and {local} would both be uploaded as {f.relpath!r} of "
                f"{owner}'s resource {f.resource}: upload them in separate runs"
            )
            raise UsageError(msg)
        chosen[key] = local
        groups.setdefault((f.subject, f.resource), []).append((local, f.relpath))
    return groups


def resource_files(
    roots: list[tuple[PurePosixPath, list[PurePosixPath]]],
) -> list[tuple[PurePosixPath, str]]:
    """(local path, path in the resource) for ``--resource`` uploads.

    Each root is a file (its name becomes the path) or a folder (its contents keep their
    sub-folders).  Two local files aimed at one remote path are refused.
    """
    chosen: dict[str, PurePosixPath] = {}
    for root, inner in roots:
        pairs = (
            [(root, root.name)]
            if not inner
            else [(root / rel, rel.as_posix()) for rel in inner if not is_hidden(rel)]
        )
        for local, remote in pairs:
            if remote in chosen and chosen[remote] != local:
                msg = (
                    f"{chosen[remote]} and {local} would both be uploaded as {remote!r}; "
                    "upload them in separate runs or into different resources"
                )
                raise UsageError(msg)
            chosen[remote] = local
    return sorted(((local, remote) for remote, local in chosen.items()), key=lambda p: p[1])


# -- subjects from a spreadsheet -----------------------------------------------------------
@dataclass
class SubjectRow:
    line: int
    label: str
    demographics: dict[str, str]
    fields: dict[str, str]


@dataclass
class RowError:
    line: int
    label: str
    message: str


def _check_demographics(values: dict[str, str]) -> str | None:
    gender = values.get("gender", "")
    if gender and gender.lower() not in GENDERS:
        return f"gender {gender!r} is not male, female, other or unknown"
    if gender:
        values["gender"] = GENDERS[gender.lower()]
    hand = values.get("handedness", "")
    if hand and hand.lower() not in HANDEDNESS:
        return f"handedness {hand!r} is not one of {', '.join(HANDEDNESS)}"
    if hand:
        values["handedness"] = hand.lower()
    dob = values.get("dob", "")
    if dob:
        try:
            if date.fromisoformat(dob) > date.today():
                return f"date of birth {dob} is in the future"
        except ValueError:
            return f"date of birth {dob!r} is not YYYY-MM-DD"
    yob = values.get("yob", "")
    if yob and not (yob.isdigit() and len(yob) == 4 and int(yob) <= date.today().year):
        return f"year of birth {yob!r} is not a four-digit year"
    for name in WHOLE_NUMBERS:
        value = values.get(name, "")
        if value and not value.isdigit():
            return f"{name} {value!r} is not a whole number"
    for name in NUMBERS:
        value = values.get(name, "")
        try:
            if value and not 0 <= float(value) < float("inf"):
                raise ValueError(value)
        except ValueError:
            return f"{name} {value!r} is not a number"
    return None


CSV_DELIMITERS = (",", ";", "\t")


def delimiter_of(text: str) -> str:
    """The delimiter of a spreadsheet's CSV export, from its header row: a comma, or the
    semicolon that spreadsheets write where the comma is the decimal mark, or a tab;
    whichever the header holds most of (outside quotes), a comma when none."""
    header = text.split("\n", 1)[0]
    outside = "".join(part for i, part in enumerate(header.split('"')) if i % 2 == 0)
    counts = {d: outside.count(d) for d in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])  # first of equals: the comma
    return best if counts[best] else ","


def parse_subjects(text: str) -> tuple[list[SubjectRow], list[RowError]]:
    """Rows of a subjects CSV (header row first), and an error for each bad row.

    Cells are separated by commas, semicolons or tabs (:func:`delimiter_of`).  The label
    column is ``label`` (or ``subject``, ``subject_label``, ``subject_id``,
    ``id``); XNAT's demographics (``gender``, ``dob`` as YYYY-MM-DD, ``yob``, ``age``,
    ``handedness``, ``ses``, ``education``, ``educationDesc``, ``race``, ``ethnicity``,
    ``weight``, ``height``, ``gestational_age``, ``post_menstrual_age``, ``birth_weight``;
    any case) go where XNAT keeps them, checked for their kind of value; every other
    non-empty column is a custom field.  A bad row is reported and skipped; the good rows
    still go.
    """
    text = text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter_of(text))
    if not reader.fieldnames:
        raise UsageError("the subjects CSV is empty: its first row must name the columns")
    columns = {name.strip().lower(): name for name in reader.fieldnames if name}
    label_column = next((columns[c] for c in SUBJECT_LABEL_COLUMNS if c in columns), None)
    if label_column is None:
        msg = (
            "the subjects CSV has no label column: name one of "
            f"{', '.join(SUBJECT_LABEL_COLUMNS)} in the first row"
        )
        raise UsageError(msg)
    rows: list[SubjectRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            continue
        label = (record.get(label_column) or "").strip()
        if None in record:
            errors.append(RowError(line, label, "the row has more cells than the header"))
            continue
        if not _LABEL.match(label):
            errors.append(
                RowError(line, label, "the label must be letters, digits, '_', '-' or '.'")
            )
            continue
        if label in seen:
            errors.append(RowError(line, label, f"the label repeats line {seen[label]}"))
            continue
        seen[label] = line
        demographics: dict[str, str] = {}
        extra: dict[str, str] = {}
        for key, original in columns.items():
            value = (record.get(original) or "").strip()
            if original == label_column or not value:
                continue
            if key in DEMOGRAPHICS:
                demographics[DEMOGRAPHICS[key]] = value
            else:
                extra[original.strip()] = value
        problem = _check_demographics(demographics)
        if problem:
            errors.append(RowError(line, label, problem))
            continue
        rows.append(SubjectRow(line, label, demographics, extra))
    return rows, errors


# -- resuming ----------------------------------------------------------------------------
STAGING_SUFFIX = "_xnatdl_incomplete"


def staging_label(label: str) -> str:
    """The label a session is imported under until every part of it is on the server;
    renamed to ``label`` last, so an interrupted upload never looks finished."""
    return f"{label}{STAGING_SUFFIX}"


@dataclass(frozen=True)
class Comparison:
    """A session's files on the server against the files an upload would send (by content:
    XNAT renames imported DICOM files)."""

    missing: int  # files to send that the server lacks
    extra: int  # files on the server that the upload does not have

    @property
    def state(self) -> str:
        """``same``, ``incomplete`` (only some of ours are there) or ``different``."""
        if self.extra:
            return "different"
        return "incomplete" if self.missing else "same"


def compare_contents(local: list[tuple[int, str]], server: list[tuple[int, str]]) -> Comparison:
    """Compare two multisets of (size, md5)."""
    want = Counter(local)
    have = Counter(server)
    return Comparison(sum((want - have).values()), sum((have - want).values()))


def duplicate_labels(labels: list[str]) -> list[str]:
    """Labels that two or more parts of one upload would give their sessions."""
    return sorted(label for label, n in Counter(labels).items() if label and n > 1)


STUDY_UID_TAG = b"\x20\x00\x0d\x00"  # (0020,000D) StudyInstanceUID, little endian
_UID_VALUE = re.compile(rb"[0-9]+(\.[0-9]+)*")


def study_uid_in_header(data: bytes) -> str | None:
    """The study instance UID in the first bytes of a DICOM file, found by its tag in
    explicit or implicit VR little endian; None when no such element reads as a UID.

    A guess, not a parse: it only decides whether an archive's study may already be on the
    server and is worth a closer look (a miss means the archive is sent, as it would be
    anyway; a wrong hit costs the closer look)."""
    at = data.find(STUDY_UID_TAG)
    while at != -1:
        rest = data[at + 4 :]
        if rest[:2] == b"UI":  # explicit VR: two bytes of length
            length, value = int.from_bytes(rest[2:4], "little"), rest[4:]
        else:  # implicit VR: four bytes of length
            length, value = int.from_bytes(rest[:4], "little"), rest[4:]
        uid = value[:length].rstrip(b"\x00 ")
        if 0 < length <= 64 and len(value) >= length and _UID_VALUE.fullmatch(uid):
            return uid.decode("ascii")
        at = data.find(STUDY_UID_TAG, at + 1)
    return None

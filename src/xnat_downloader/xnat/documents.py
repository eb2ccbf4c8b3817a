"""XNAT's own descriptions of what a download holds: the project, subject, session, scan,
assessor and reconstruction documents (``GET …?format=xml|json``), as plan entries of
category ``metadata``.

XNAT lists no size or digest for them; the client checks that each parses instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

from xnat_downloader.xnat.derived import COLLECTION_OF, Derived
from xnat_downloader.xnat.model import RemoteFile, Scan, Session

FORMATS = ("xml", "json")
XNAT_NS = "http://nrg.wustl.edu/xnat"


def _q(text: str) -> str:
    return quote(text, safe="")


def document_files(sessions: list[Session], scans: list[Scan], fmt: str) -> list[RemoteFile]:
    """One document per project, subject, session and scan of the plan.  ``resource`` says
    the level (``project``, ``subject``, ``session``, ``scan``); the layout places each."""
    if fmt not in FORMATS:
        msg = f"metadata format must be xml or json, not {fmt!r}"
        raise ValueError(msg)
    by_id = {s.id: s for s in sessions}
    out: list[RemoteFile] = []

    def doc(uri: str, level: str, s: Session, owner: str = "", owner_type: str = "") -> None:
        out.append(_document(uri, level, fmt, s.project, s.subject_label, s, owner, owner_type))

    for s in sessions:
        doc(f"/data/projects/{_q(s.project)}", "project", s)
        doc(f"/data/projects/{_q(s.project)}/subjects/{_q(s.subject_id)}", "subject", s)
        doc(f"/data/experiments/{_q(s.id)}", "session", s)
    for scan in scans:
        session = by_id.get(scan.session_id)
        if session is not None:
            uri = f"/data/experiments/{_q(session.id)}/scans/{_q(scan.id)}"
            doc(uri, "scan", session, scan.id, scan.type)
    return out


def derived_documents(
    files: list[RemoteFile], derived: dict[str, list[Derived]], sessions: list[Session], fmt: str
) -> list[RemoteFile]:
    """One document per assessor and reconstruction of ``sessions`` that the walk selected
    (``derived``, by session ID: with or without files) or whose files are among ``files``
    (a session taken from a sync record made before records kept ``derived``): an upload
    of the tree makes each from it (its type, and an assessor's fields)."""
    by_id = {s.id: s for s in sessions}
    # (session ID, category, folder name) → the name the server's URL takes (its ID).
    wanted: dict[tuple[str, str, str], str] = {}
    for session_id, items in derived.items():
        for d in items:
            wanted.setdefault((session_id, d.category, d.name), d.source_id)
    for f in files:
        if f.category in ("assessor", "recon") and f.owner:
            wanted.setdefault((f.session_id, f.category, f.owner), f.owner)
    out: list[RemoteFile] = []
    for (session_id, category, name), on_server in wanted.items():
        session = by_id.get(session_id)
        if session is None:
            continue
        uri = f"/data/experiments/{_q(session_id)}/{COLLECTION_OF[category]}/{_q(on_server)}"
        out.append(
            _document(uri, category, fmt, session.project, session.subject_label, session, name)
        )
    return out


def scan_rating(document: bytes) -> dict[str, str] | None:
    """The ``quality`` and ``note`` a scan's XML document (``scan.xml``) gives, each where
    it gives one; None when it does not parse (pure)."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError:
        return None
    found = {}
    for name in ("quality", "note"):
        element = root.find(f"{{{XNAT_NS}}}{name}")
        if element is not None and (element.text or "").strip():
            found[name] = (element.text or "").strip()
    return found


def holder_documents(
    files: list[RemoteFile], sessions: list[Session], fmt: str, *, project_level: bool
) -> list[RemoteFile]:
    """Documents of the projects and subjects whose own resources are among ``files`` and
    that no session of the plan already describes (a subject reached only by
    ``--subject-resources``).  A project's document goes in the project folder, so only
    with ``project_level``; a subject's in its own (subject resources need that level)."""
    covered = {(s.project, "") for s in sessions} | {(s.project, s.subject_label) for s in sessions}
    holders = {
        (f.project, f.subject_label if f.category == "subject" else "")
        for f in files
        if f.category in ("project", "subject")
    }
    out: list[RemoteFile] = []
    for project, subject in sorted(holders - covered):
        if not subject and not project_level:
            continue
        uri = f"/data/projects/{_q(project)}" + (f"/subjects/{_q(subject)}" if subject else "")
        out.append(_document(uri, "subject" if subject else "project", fmt, project, subject))
    return out


def _document(
    uri: str, level: str, fmt: str, project: str, subject: str,
    session: Session | None = None, owner: str = "", owner_type: str = "",
) -> RemoteFile:  # fmt: skip
    """The plan entry of one document: ``resource`` names its level, the layout places it
    by that level and the labels (``session``'s, for a session's or a scan's)."""
    return RemoteFile(
        uri=f"{uri}?format={fmt}",
        path=f"{level}.{fmt}",
        size=None,
        md5=None,
        project=project,
        subject_label=subject,
        session_label=session.label if session else "",
        session_id=session.id if session else "",
        category="metadata",
        resource=level,
        owner=owner,
        owner_type=owner_type,
    )

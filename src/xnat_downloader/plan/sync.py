"""Incremental sync: what the last walk found per session, so a re-run asks only about
sessions that changed (pure; the caller reads and writes ``sync.json``).

The record keeps, per session, the experiments listing's ``last_modified`` and the scans
and files found under it.  A re-run with the same selection hands the walk those sessions
as *known*; the walk reuses a session whose ``last_modified`` is unchanged.  Sessions of
the record that the new listing no longer shows (deleted on the server, or outside a
changed selection) are *vanished*; they stay in the record as ``gone`` until a run prunes
them, so a later ``--prune`` still knows what to remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xnat_downloader.xnat.derived import Derived
from xnat_downloader.xnat.model import RemoteFile, Scan, Session, as_dict
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.walk import Gap, KnownSession

SYNC_VERSION = 1


@dataclass(frozen=True)
class Vanished:
    """A session an earlier run had, that the server's listing no longer shows."""

    id: str
    label: str
    project: str
    subject: str
    uris: list[str]  # the files it had then

    def __str__(self) -> str:
        return f"{self.project}/{self.subject}/{self.label} ({self.id})"


def selection_key(selection: Selection) -> str:
    """What must not change for the record to be reused (every field of the selection)."""
    return repr(selection)


def make_record(
    key: str, sessions: list[Session], scans: list[Scan], files: list[RemoteFile],
    gaps: list[Gap], gone: list[Vanished] | None = None,
    derived: dict[str, list[Derived]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The record of a walk.  A session the walk could not list completely (a gap names
    it) is left out, so the next run walks it again.  ``gone``: vanished sessions whose
    files are still on disk (not pruned); ``derived``: each session's selected assessors
    and reconstructions (by session ID), so that a reused session still has them."""
    incomplete = {g.session_id for g in gaps}
    by_session: dict[str, dict[str, Any]] = {
        s.id: {"stamp": s.stamp, "label": s.label, "project": s.project,
               "subject": s.subject_label, "scans": [], "files": [],
               "derived": [as_dict(d) for d in (derived or {}).get(s.id, [])]}
        for s in sessions if s.id not in incomplete
    }  # fmt: skip
    for scan in scans:
        if scan.session_id in by_session:
            by_session[scan.session_id]["scans"].append(as_dict(scan))
    for f in files:
        if f.session_id in by_session and f.category != "metadata":
            by_session[f.session_id]["files"].append(as_dict(f))
    kept_gone = {
        v.id: {"label": v.label, "project": v.project, "subject": v.subject, "uris": v.uris}
        for v in gone or []
    }
    return {"version": SYNC_VERSION, "selection": key, "sessions": by_session, "gone": kept_gone}


def known_sessions(record: dict[str, Any], key: str) -> dict[str, KnownSession]:
    """The sessions a record lets a walk reuse: none unless it was made for ``key``."""
    if record.get("version") != SYNC_VERSION or record.get("selection") != key:
        return {}
    known: dict[str, KnownSession] = {}
    try:
        for sid, item in record.get("sessions", {}).items():
            if item.get("stamp"):
                known[sid] = KnownSession(
                    item["stamp"],
                    [Scan(**s) for s in item["scans"]],
                    [RemoteFile(**f) for f in item["files"]],
                    [Derived(**d) for d in item.get("derived", [])],
                )
    except (KeyError, TypeError, AttributeError):
        return {}  # a damaged record: walk everything
    return known


def vanished(record: dict[str, Any], current: set[str]) -> list[Vanished]:
    """The record's sessions (and its still unpruned ``gone`` ones) not in ``current``."""
    out: dict[str, Vanished] = {}
    if record.get("version") != SYNC_VERSION:
        return []
    for sid, item in sorted(_table(record, "gone").items()):
        if sid not in current and isinstance(item, dict):
            uris = [str(u) for u in _items(item, "uris")]
            out[sid] = Vanished(sid, str(item.get("label", sid)), str(item.get("project", "")),
                                str(item.get("subject", "")), uris)  # fmt: skip
    for sid, item in sorted(_table(record, "sessions").items()):
        if sid in current or not isinstance(item, dict):
            continue
        uris = [str(f.get("uri", "")) for f in _items(item, "files") if isinstance(f, dict)]
        out[sid] = Vanished(sid, str(item.get("label", sid)), str(item.get("project", "")),
                            str(item.get("subject", "")), uris)  # fmt: skip
    return sorted(out.values(), key=lambda v: v.id)


def _table(record: dict[str, Any], key: str) -> dict[str, Any]:
    """``record[key]`` when it is a table; {} for a record damaged or made by hand."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _items(record: dict[str, Any], key: str) -> list[Any]:
    value = record.get(key)
    return value if isinstance(value, list) else []

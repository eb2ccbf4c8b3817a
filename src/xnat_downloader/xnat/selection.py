"""What the user asked for, and pure predicates that decide whether an object matches.

Server-side filters are used where XNAT offers them (one project-wide experiment listing per
project); everything else is decided here, on the client, from plain records.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import date

from xnat_downloader.xnat.model import Scan, Session, Subject


@dataclass(frozen=True)
class Selection:
    """A selection over one server.  Empty tuples mean "no constraint"."""

    projects: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    # When a session was added to the archive (XNAT's insert_date), not when it was scanned.
    added_since: date | None = None
    added_until: date | None = None
    xsi_types: tuple[str, ...] = ()
    scan_types: tuple[str, ...] = ()
    qualities: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    # Left out even when matched above (globs, as those are): e.g. SNAPSHOTS, or localizers.
    exclude_resources: tuple[str, ...] = ()
    exclude_scan_types: tuple[str, ...] = ()
    scans: bool = True
    session_resources: bool = False
    # The resources of the selected projects, and of their subjects (see subjects_selected).
    project_resources: bool = False
    subject_resources: bool = False
    assessors: bool = False
    recons: bool = False
    # Constraints on assessors (ID, label or xsiType) and reconstructions (ID or type),
    # as xget's ``-ass`` and ``-recon`` take them; empty means every one.
    assessor_patterns: tuple[str, ...] = ()
    recon_patterns: tuple[str, ...] = ()

    def describe(self) -> str:
        """A one-line account of the constraints, for "nothing matched" messages."""
        parts = [f"projects {', '.join(self.projects) or 'all'}"]
        for name, values in (
            ("subjects", self.subjects),
            ("sessions", self.sessions),
            ("types", self.xsi_types),
            ("scan types", self.scan_types),
            ("quality", self.qualities),
            ("resources", self.resources),
            ("not scan types", self.exclude_scan_types),
            ("not resources", self.exclude_resources),
            ("assessors", self.assessor_patterns),
            ("reconstructions", self.recon_patterns),
        ):
            if values:
                parts.append(f"{name} {', '.join(values)}")
        if self.since or self.until:
            parts.append(f"dates {self.since or '…'} to {self.until or '…'}")
        if self.added_since or self.added_until:
            parts.append(f"added {self.added_since or '…'} to {self.added_until or '…'}")
        return "; ".join(parts)


def _glob(value: str, patterns: tuple[str, ...]) -> bool:
    lowered = value.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def _within(day: date | None, first: date | None, last: date | None) -> bool:
    """Whether ``day`` is in ``first``…``last`` (either end may be open); a session whose
    day is unknown is in no range that has an end."""
    if first is None and last is None:
        return True
    return day is not None and (first is None or day >= first) and (last is None or day <= last)


def session_matches(session: Session, sel: Selection) -> bool:
    if sel.sessions and session.id not in sel.sessions and session.label not in sel.sessions:
        return False
    if (
        sel.subjects
        and session.subject_id not in sel.subjects
        and (session.subject_label not in sel.subjects)
    ):
        return False
    if not _within(session.date, sel.since, sel.until):
        return False
    if not _within(session.added, sel.added_since, sel.added_until):
        return False
    if sel.xsi_types:
        wanted = {t.lower() for t in sel.xsi_types}
        short = session.xsi_type.split(":")[-1].lower().removesuffix("sessiondata")
        if (
            session.xsi_type.lower() not in wanted
            and short not in wanted
            and session.modality.lower() not in wanted
        ):
            return False
    return True


def narrows_sessions(sel: Selection) -> bool:
    """Whether ``sel`` picks sessions by more than their project and subject."""
    return bool(
        sel.sessions
        or sel.since
        or sel.until
        or sel.added_since
        or sel.added_until
        or sel.xsi_types
    )


def subjects_selected(
    subjects: list[Subject], sessions: list[Session], sel: Selection
) -> list[Subject]:
    """The subjects whose own resources ``--subject-resources`` fetches: those of the
    selected sessions when the selection picks sessions (by name, dates or type); otherwise
    every subject of the selected projects that ``--subject`` names (all when it names
    none), sessions or not."""
    if narrows_sessions(sel):
        holding = {(s.project, s.subject_id) for s in sessions}
        return [s for s in subjects if (s.project, s.id) in holding]
    if sel.subjects:
        return [s for s in subjects if s.id in sel.subjects or s.label in sel.subjects]
    return list(subjects)


def _scan_named(scan: Scan, patterns: tuple[str, ...]) -> bool:
    return (
        _glob(scan.id, patterns)
        or _glob(scan.type, patterns)
        or _glob(scan.series_description, patterns)
    )


def scan_matches(scan: Scan, sel: Selection) -> bool:
    """xget's ``-acq``: a scan ID, type or series description (globs, case-insensitive),
    and none of ``exclude_scan_types``."""
    if sel.scan_types and not _scan_named(scan, sel.scan_types):
        return False
    if sel.exclude_scan_types and _scan_named(scan, sel.exclude_scan_types):
        return False
    return not (sel.qualities and scan.quality.lower() not in {q.lower() for q in sel.qualities})


def _resource_named(label: str, file_format: str, patterns: tuple[str, ...]) -> bool:
    return _glob(label, patterns) or bool(file_format and _glob(file_format, patterns))


def resource_matches(label: str, file_format: str, sel: Selection) -> bool:
    """xget's ``-format``: a resource label or file format (no constraint means every
    one), and none of ``exclude_resources``."""
    if sel.exclude_resources and _resource_named(label, file_format, sel.exclude_resources):
        return False
    return not sel.resources or _resource_named(label, file_format, sel.resources)


def owner_matches(values: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    """An assessor or reconstruction whose ID, label or type matches a pattern (glob)."""
    return not patterns or any(_glob(v, patterns) for v in values if v)

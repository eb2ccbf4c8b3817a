"""Plain records of what lives on an XNAT server (frozen; built by ``parse``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from typing import Any


def as_dict(record: Any) -> dict[str, Any]:
    """A flat record's fields as a dict (for JSON).  ``dataclasses.asdict`` deep-copies
    every value: 8 µs a file against 1.2, which a plan of many thousands of files notices."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


Day = date  # for fields declared after one named ``date``, which hides the type there


@dataclass(frozen=True)
class Project:
    id: str
    name: str = ""
    secondary_id: str = ""


@dataclass(frozen=True)
class Subject:
    id: str
    label: str
    project: str


@dataclass(frozen=True)
class Session:
    """An image session (an XNAT experiment that is a subject assessor)."""

    id: str
    label: str
    project: str
    subject_id: str
    subject_label: str
    date: date | None
    xsi_type: str
    modality: str = ""
    stamp: str = ""  # the listing's last_modified: unchanged means nothing under it changed
    added: Day | None = None  # the listing's insert_date: when it was added to the archive


@dataclass(frozen=True)
class WorkflowState:
    """A session's newest workflow record (XNAT's ``wrk:workflowData``): what processing
    (archiving, snapshots, pipelines) last did to it."""

    pipeline: str  # the name without folder and extension, e.g. WebBasedQCImageCreator
    status: str  # Queued, In Progress, Complete, Failed (or a pipeline's own word)
    step: str = ""
    launched: str = ""

    @property
    def complete(self) -> bool:
        return self.status.lower() == "complete"


@dataclass(frozen=True)
class Scan:
    session_id: str
    id: str
    type: str
    series_description: str
    quality: str
    xsi_type: str = ""
    note: str = ""  # a QC rating's reason, often


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, with everything a layout needs to place it.

    ``category`` is ``scan``, ``session`` (a session resource), ``assessor``, ``recon``,
    ``project`` or ``subject`` (a project's or subject's own resource: no session), or
    ``catalog`` (placed under ``folder`` as a download catalog names it).  ``owner`` is the
    scan ID, assessor label or reconstruction ID; ``owner_type`` the scan type.
    """

    uri: str
    path: str
    size: int | None
    md5: str | None
    project: str
    subject_label: str
    session_label: str
    session_id: str
    category: str
    resource: str
    owner: str = ""
    owner_type: str = ""
    folder: str = ""

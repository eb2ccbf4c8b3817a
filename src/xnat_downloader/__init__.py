"""xnat-downloader: parallel, resumable, verified transfers out of and into XNAT.

The public API is what ``__all__`` names (everything else is internal).  Every call takes
the server first, as a :class:`Connection` (or, for the download calls, a URL)::

    download(conn, selection, dir)      plan, then fetch and verify every file
    plan(conn, selection) / ls(...)     what a selection matches, transferring nothing
    list_projects(conn)                 the projects a user can see
    upload(conn, paths, project)        import sessions or fill a resource, verified
    copy(source, target, selection)     server to server, verified on the target
    verify(dir, conn)                   re-hash a download (and ask the server what changed)
    session_workflows(conn, sessions)   each session's newest workflow record
    upload_subjects(conn, csv, project) subjects and their fields from a spreadsheet
    create_project(conn, project)       a new project
    dicom_send(paths, "AE@HOST:PORT")   DICOM files over C-STORE (conn= checks the result)
    prepare_array(conn, selection, dir, shards=N)   a Slurm job array of a download

Per-file results are :class:`Outcome` records whose ``status`` is a :class:`Status`.
"""

from __future__ import annotations

from typing import Any

from xnat_downloader._version import __version__
from xnat_downloader.api.cluster import ArrayJob, prepare_array
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.copy import CopyReport, copy
from xnat_downloader.api.download import (
    PlanResult,
    Report,
    download,
    list_projects,
    ls,
    plan,
    scan_type_counts,
    session_workflows,
)
from xnat_downloader.api.manage import create_project
from xnat_downloader.api.subjects import SubjectResult, upload_subjects
from xnat_downloader.api.upload import UploadReport, upload
from xnat_downloader.api.verify import VerifyReport, verify
from xnat_downloader.errors import (
    AccessDenied,
    AuthError,
    ConnectionFailed,
    IntegrityError,
    LocalReadError,
    LocalWriteError,
    LockedError,
    LoginPageError,
    NotFound,
    ReceiverUnreachable,
    ServerError,
    TransferError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.plan.layout import Layout, LayoutOptions
from xnat_downloader.transfer.jobs import Outcome, Status
from xnat_downloader.transfer.modes import Mode
from xnat_downloader.xnat.model import WorkflowState
from xnat_downloader.xnat.selection import Selection

# Loaded on first use: they bring in pydicom and pynetdicom (0.15 s), which nothing else needs.
_LAZY = {"dicom_send": "dicom_send", "DicomSendReport": "DicomSendReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from xnat_downloader.api import dicom as dicomsend

        return getattr(dicomsend, _LAZY[name])
    msg = f"module 'xnat_downloader' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "AccessDenied",
    "ArrayJob",
    "AuthError",
    "Connection",
    "ConnectionFailed",
    "CopyReport",
    "Credentials",
    "DicomSendReport",
    "IntegrityError",
    "Layout",
    "LayoutOptions",
    "LocalReadError",
    "LocalWriteError",
    "LockedError",
    "LoginPageError",
    "Mode",
    "NotFound",
    "Outcome",
    "PlanResult",
    "ReceiverUnreachable",
    "Report",
    "Selection",
    "ServerError",
    "Status",
    "SubjectResult",
    "TransferError",
    "UploadReport",
    "UsageError",
    "VerifyReport",
    "WorkflowState",
    "XnatError",
    "__version__",
    "copy",
    "create_project",
    "dicom_send",
    "download",
    "list_projects",
    "ls",
    "plan",
    "prepare_array",
    "scan_type_counts",
    "session_workflows",
    "upload",
    "upload_subjects",
    "verify",
]

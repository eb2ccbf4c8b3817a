"""xnat-downloader: parallel, resumable, verified transfers out of XNAT.

The public API (everything else is internal)::

    plan(url, selection, ...)        resolve a selection into files and local paths
    download(url, selection, dir)    plan, then fetch and verify every file
    ls(url, selection)               what a selection matches
    list_projects(url)               the projects a user can see
"""

from xnat_downloader._version import __version__
from xnat_downloader.api import (
    Connection,
    PlanResult,
    Report,
    download,
    list_projects,
    ls,
    plan,
    scan_type_counts,
)
from xnat_downloader.errors import (
    AccessDenied,
    AuthError,
    ConnectionFailed,
    IntegrityError,
    LockedError,
    LoginPageError,
    NotFound,
    ServerError,
    TransferError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.plan.layout import Layout, LayoutOptions
from xnat_downloader.transfer.modes import Mode
from xnat_downloader.xnat.selection import Selection

__all__ = [
    "AccessDenied",
    "AuthError",
    "Connection",
    "ConnectionFailed",
    "Credentials",
    "IntegrityError",
    "Layout",
    "LayoutOptions",
    "LockedError",
    "LoginPageError",
    "Mode",
    "NotFound",
    "PlanResult",
    "Report",
    "Selection",
    "ServerError",
    "TransferError",
    "UsageError",
    "XnatError",
    "__version__",
    "download",
    "list_projects",
    "ls",
    "plan",
    "scan_type_counts",
]

"""The Python API, one module per job, every call taking the server first:

- :mod:`.connection`: :class:`Connection`, how to reach a server;
- :mod:`.download`: :func:`plan`, :func:`download`, :func:`ls`, :func:`list_projects`,
  :func:`session_workflows`;
- :mod:`.upload`: :func:`upload`; :mod:`.subjects`: :func:`upload_subjects`;
- :mod:`.xget`, :mod:`.copy`, :mod:`.verify`, :mod:`.manage` (projects, the prearchive);
- :mod:`.cluster`: Slurm job arrays and their status;
- :mod:`.dicom`: :func:`dicom_send` (imported on its own: it loads pydicom).

The package root (``xnat_downloader``) re-exports the public names.  Errors are the
exceptions of :mod:`xnat_downloader.errors`.
"""

from xnat_downloader.api.connection import Connection
from xnat_downloader.api.download import (
    PlanResult,
    Report,
    check_output_dir,
    download,
    list_projects,
    ls,
    plan,
    projects_for_sessions,
    scan_type_counts,
    session_workflows,
)
from xnat_downloader.xnat.model import WorkflowState

__all__ = [
    "Connection",
    "PlanResult",
    "Report",
    "WorkflowState",
    "check_output_dir",
    "download",
    "list_projects",
    "ls",
    "plan",
    "projects_for_sessions",
    "scan_type_counts",
    "session_workflows",
]

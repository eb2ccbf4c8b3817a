"""Archive storage: SQLite metadata and files on disk, changed in transactions.

One module per job, all parts of one :class:`Store`:

- ``db``: the connection, transactions and crash recovery (with ``journal``);
- ``accounts``: users, passwords, alias tokens, login sessions;
- ``hierarchy``: projects, roles, subjects, experiments, scans, reconstructions, resources;
- ``sharing``: subjects and experiments shared into other projects;
- ``fields``: the XML fields of objects that have no column of their own, and projects'
  custom variable definitions;
- ``files``: files in resources and their place on disk;
- ``catalogs``: stored download selections;
- ``searches``: saved searches;
- ``prearchive``: sessions waiting to be archived;
- ``workflows``: workflow records (archiving, snapshots), also the snapshot worker's queue;
- ``activity``: the activity tracker's record of each user's imports;
- ``check``: the consistency check of catalog rows against files on disk;
- ``records``, ``names``, ``schema``, ``clock``: values, name rules, migrations, time.
"""

from __future__ import annotations

from pathlib import Path

from minixnat.store.accounts import AccountTables
from minixnat.store.activity import Activity, ActivityTables
from minixnat.store.catalogs import CatalogTables
from minixnat.store.fields import CustomVariable, FieldTables
from minixnat.store.files import FileTables
from minixnat.store.prearchive import PrearchiveTables
from minixnat.store.records import (
    ACCESS_LEVELS,
    ROLES,
    AliasToken,
    Experiment,
    FileRow,
    Project,
    Recon,
    Resource,
    Scan,
    StoreError,
    Subject,
    User,
)
from minixnat.store.searches import SearchTables
from minixnat.store.sharing import SharingTables
from minixnat.store.workflows import Workflow, WorkflowTables


class Store(
    AccountTables,
    SharingTables,
    FieldTables,
    FileTables,
    CatalogTables,
    SearchTables,
    PrearchiveTables,
    WorkflowTables,
    ActivityTables,
):
    """One archive root.  Thread-safe: one lock serialises access to the one connection."""

    def __init__(self, root: Path) -> None:
        self._verified = {}
        super().__init__(root)


__all__ = [
    "ACCESS_LEVELS",
    "ROLES",
    "Activity",
    "AliasToken",
    "CustomVariable",
    "Experiment",
    "FileRow",
    "Project",
    "Recon",
    "Resource",
    "Scan",
    "Store",
    "StoreError",
    "Subject",
    "User",
    "Workflow",
]

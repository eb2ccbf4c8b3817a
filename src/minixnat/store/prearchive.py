"""The prearchive's table: uploaded sessions waiting to be archived (XNAT §9.4).

Part of :class:`minixnat.store.Store`.  A row's files live under
``ROOT/prearchive/{project}/{timestamp}/{folder}/``; ``meta`` is the session as the importer
built it, so archiving later needs no second read of the DICOM.  Rows and folders change
together, in one transaction (journal.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from minixnat.store.clock import now_stamp, prearchive_timestamp
from minixnat.store.db import Database

# The prearchive "project" of sessions nobody could place (no project named, or unknown).
UNASSIGNED = "Unassigned"
STATUSES = ("RECEIVING", "READY", "CONFLICT", "ERROR", "ARCHIVING", "MOVING", "DELETING")


@dataclass(frozen=True)
class PrearcSession:
    project: str
    timestamp: str
    folder: str
    name: str
    subject: str
    status: str
    uploaded: str
    lastmod: str
    scan_date: str
    scan_time: str
    tag: str
    autoarchive: str
    login: str
    message: str
    meta: str

    @property
    def url(self) -> str:
        """The ``url`` column: no ``/data`` prefix, as XNAT lists it."""
        return f"/prearchive/projects/{self.project}/{self.timestamp}/{self.folder}"

    def session(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.meta)
        return loaded


class PrearchiveTables(Database):
    """Prearchive rows and folders."""

    @property
    def prearchive_dir(self) -> Path:
        return self.root / "prearchive"

    def prearc_folder(self, row: PrearcSession) -> Path:
        return self.prearchive_dir / row.project / row.timestamp / row.folder

    def add_prearc(
        self,
        project: str,
        folder: str,
        *,
        subject: str,
        login: str,
        meta: dict[str, Any],
        scan_date: str = "",
        scan_time: str = "",
        tag: str = "",
        status: str = "RECEIVING",
    ) -> PrearcSession:
        """A new row with a timestamp no other row of ``project``/``folder`` has."""
        now = now_stamp()
        with self.transaction():
            while True:
                stamp = prearchive_timestamp()
                if self.get_prearc(project, stamp, folder) is None:
                    break
            self._exec(
                "INSERT INTO prearchive (project, timestamp, folder, name, subject, status,"
                " uploaded, lastmod, scan_date, scan_time, tag, autoarchive, login, message, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'Manual', ?, '', ?)",
                (
                    project,
                    stamp,
                    folder,
                    folder,
                    subject,
                    status,
                    now,
                    now,
                    scan_date,
                    scan_time,
                    tag,
                    login,
                    json.dumps(meta),
                ),
            )
            row = self.get_prearc(project, stamp, folder)
        assert row is not None
        return row

    def get_prearc(self, project: str, timestamp: str, folder: str) -> PrearcSession | None:
        rows = self._q(
            "SELECT * FROM prearchive WHERE project=? AND timestamp=? AND folder=?",
            (project, timestamp, folder),
        )
        return PrearcSession(**dict(rows[0])) if rows else None

    def list_prearc(self, projects: list[str] | None = None) -> list[PrearcSession]:
        rows = self._q("SELECT * FROM prearchive ORDER BY timestamp, folder")
        found = [PrearcSession(**dict(r)) for r in rows]
        if projects is not None:
            found = [r for r in found if r.project in projects]
        return found

    def set_prearc_status(self, row: PrearcSession, status: str, message: str = "") -> None:
        if status not in STATUSES:
            msg = f"unknown prearchive status {status!r}"
            raise ValueError(msg)
        self._exec(
            "UPDATE prearchive SET status=?, message=?, lastmod=? "
            "WHERE project=? AND timestamp=? AND folder=?",
            (status, message, now_stamp(), row.project, row.timestamp, row.folder),
        )

    def set_prearc_meta(self, row: PrearcSession, meta: dict[str, Any]) -> None:
        self._exec(
            "UPDATE prearchive SET meta=? WHERE project=? AND timestamp=? AND folder=?",
            (json.dumps(meta), row.project, row.timestamp, row.folder),
        )

    def move_prearc(self, row: PrearcSession, new_project: str) -> PrearcSession:
        """Move a session (row and folder) to another project's prearchive."""
        target = self.prearc_folder(replace(row, project=new_project))
        with self.transaction() as tx:
            if target.exists() or self.get_prearc(new_project, row.timestamp, row.folder):
                msg = f"{new_project} already has a prearchive session {row.timestamp}/{row.folder}"
                raise ValueError(msg)
            source = self.prearc_folder(row)
            if source.exists():
                tx.move(source, target)
            self._exec(
                "UPDATE prearchive SET project=? WHERE project=? AND timestamp=? AND folder=?",
                (new_project, row.project, row.timestamp, row.folder),
            )
            moved = self.get_prearc(new_project, row.timestamp, row.folder)
        assert moved is not None
        return moved

    def delete_prearc(self, row: PrearcSession) -> None:
        """Delete a row and (after the commit) its folder."""
        folder = self.prearc_folder(row)
        with self.transaction() as tx:
            self._exec(
                "DELETE FROM prearchive WHERE project=? AND timestamp=? AND folder=?",
                (row.project, row.timestamp, row.folder),
            )
            if folder.exists():
                tx.remove(folder)

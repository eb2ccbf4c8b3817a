"""Experiments' ``last_modified``: any change under an experiment is a change of it.

Listings give ``last_modified`` per experiment, and clients that sync incrementally trust
it to say whether anything under a session changed (a file, a resource, a scan), so every
such write stamps the experiment it belongs to (and, for an assessor, its session).
"""

from __future__ import annotations

from minixnat.store.clock import now_stamp
from minixnat.store.db import Database


class ModifiedStamps(Database):
    """Stamping an experiment modified, from whatever owns the thing that changed."""

    def touch_owner(self, owner_kind: str, owner_key: str) -> None:
        """A change under an experiment (a file, a resource, a scan) is a change of the
        experiment: its ``last_modified`` (and, for an assessor, its session's) becomes now,
        so that clients syncing by the listings' ``last_modified`` see it."""
        ids: list[str] = []
        if owner_kind in ("experiment", "assessor"):
            ids.append(owner_key)
            parent = self._one("SELECT session_id FROM experiments WHERE id=?", (owner_key,))
            if parent is not None and parent[0]:
                ids.append(str(parent[0]))
        elif owner_kind in ("scan", "recon"):
            table = "scans" if owner_kind == "scan" else "reconstructions"
            row = self._one(f"SELECT experiment_id FROM {table} WHERE pk=?", (owner_key,))
            if row is not None:
                ids.append(str(row[0]))
        stamp = now_stamp()
        for eid in ids:
            self._exec("UPDATE experiments SET last_modified=? WHERE id=?", (stamp, eid))

    def _touch_resource(self, resource_pk: int) -> None:
        row = self._one("SELECT owner_kind, owner_key FROM resources WHERE pk=?", (resource_pk,))
        if row is not None:
            self.touch_owner(str(row[0]), str(row[1]))

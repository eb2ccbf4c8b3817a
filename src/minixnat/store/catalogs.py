"""Download catalogs: the selections stored by ``/xapi/archive/download``."""

from __future__ import annotations

import json

from minixnat.store.clock import now_ms
from minixnat.store.db import Database


class CatalogTables(Database):
    def save_download_catalog(self, cid: str, login: str, request: dict[str, object]) -> None:
        self._exec(
            "INSERT OR REPLACE INTO download_catalogs VALUES (?, ?, ?, ?)",
            (cid, login, now_ms(), json.dumps(request)),
        )

    def get_download_catalog(self, cid: str) -> tuple[str, dict[str, object]] | None:
        row = self._one("SELECT login, request FROM download_catalogs WHERE id=?", (cid,))
        if row is None:
            return None
        return str(row["login"]), json.loads(row["request"])

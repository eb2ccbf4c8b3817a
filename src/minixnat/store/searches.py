"""Saved searches: ``/data/search/saved/{id}``, the stored xdat search documents."""

from __future__ import annotations

from dataclasses import dataclass

from minixnat.store.db import Database


@dataclass(frozen=True)
class SavedSearch:
    id: str
    login: str
    brief_description: str
    description: str
    root_element: str
    allowed_users: str  # comma-separated logins besides the owner
    document: str

    def readable_by(self, login: str, admin: bool) -> bool:
        return admin or login == self.login or login in self.allowed_users.split(",")


class SearchTables(Database):
    def save_search(self, search: SavedSearch) -> None:
        self._exec(
            "INSERT OR REPLACE INTO saved_searches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                search.id,
                search.login,
                search.brief_description,
                search.description,
                search.root_element,
                search.allowed_users,
                search.document,
            ),
        )

    def get_search(self, sid: str) -> SavedSearch | None:
        row = self._one("SELECT * FROM saved_searches WHERE id=?", (sid,))
        return SavedSearch(**dict(row)) if row else None

    def list_searches(self) -> list[SavedSearch]:
        return [SavedSearch(**dict(r)) for r in self._q("SELECT * FROM saved_searches ORDER BY id")]

    def delete_search(self, sid: str) -> None:
        self._exec("DELETE FROM saved_searches WHERE id=?", (sid,))

"""Fields of an object's XML document that have no column of their own.

XNAT's datatypes have hundreds of optional fields (``xnat:mrSessionData/age``,
``…/investigator/firstname``, scan ``parameters/addParam[name=…]``, ``provenance``).  A client
sets them with ``PUT ?{xpath}=value`` or in an XML document and reads them back through
listing ``columns=`` and the object's XML.  They are kept here by owner and path relative to
the datatype; a repeated element carries its position (``processStep[2]/program``).

A project's custom variable definitions (XNAT's study protocols) are kept here too: the
custom fields its subjects or sessions of a datatype carry, in named groups, with a type.
"""

from __future__ import annotations

from dataclasses import dataclass

from minixnat.store.db import Database, like_prefix


@dataclass(frozen=True)
class CustomVariable:
    """One custom field a project defines for a datatype, in a group (a definition)."""

    data_type: str  # xnat:subjectData, xnat:mrSessionData, …
    group_id: str
    name: str
    datatype: str = "string"  # string, int, float, date, boolean, as XNAT names them
    required: bool = False


class FieldTables(Database):
    def set_fields(self, owner_kind: str, owner_key: str, values: dict[str, str]) -> None:
        """Set fields; an empty value removes one."""
        with self.transaction():
            for path, value in values.items():
                if value == "":
                    self._exec(
                        "DELETE FROM object_fields WHERE owner_kind=? AND owner_key=? AND path=?",
                        (owner_kind, owner_key, path),
                    )
                else:
                    self._exec(
                        "INSERT OR REPLACE INTO object_fields VALUES (?, ?, ?, ?)",
                        (owner_kind, owner_key, path, value),
                    )

    def replace_fields(self, owner_kind: str, owner_key: str, prefix: str) -> None:
        """Remove every field under ``prefix`` (e.g. before a document sets them anew)."""
        self._exec(
            "DELETE FROM object_fields WHERE owner_kind=? AND owner_key=? "
            "AND (path=? OR path LIKE ? ESCAPE '\\')",
            (owner_kind, owner_key, prefix, like_prefix(prefix)),
        )

    def get_fields(self, owner_kind: str, owner_key: str) -> dict[str, str]:
        rows = self._q(
            "SELECT path, value FROM object_fields WHERE owner_kind=? AND owner_key=? "
            "ORDER BY rowid",
            (owner_kind, owner_key),
        )
        return {str(r["path"]): str(r["value"]) for r in rows}

    def fields_of_kind(self, owner_kind: str) -> dict[str, dict[str, str]]:
        """Every object's fields, for a listing: ``{owner_key: {path: value}}``."""
        found: dict[str, dict[str, str]] = {}
        rows = self._q(
            "SELECT owner_key, path, value FROM object_fields WHERE owner_kind=? ORDER BY rowid",
            (owner_kind,),
        )
        for r in rows:
            found.setdefault(str(r["owner_key"]), {})[str(r["path"])] = str(r["value"])
        return found

    def set_custom_variables(self, project: str, variables: list[CustomVariable]) -> None:
        """Replace the project's custom variable definitions (a project document names them
        all, as XNAT's does)."""
        with self.transaction():
            self._exec("DELETE FROM custom_variables WHERE project=?", (project,))
            for position, v in enumerate(variables):
                self._exec(
                    "INSERT OR REPLACE INTO custom_variables VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        project,
                        v.data_type,
                        v.group_id,
                        v.name,
                        v.datatype,
                        int(v.required),
                        position,
                    ),
                )

    def custom_variables(self, project: str) -> list[CustomVariable]:
        """The project's definitions, in the order they were given."""
        rows = self._q(
            "SELECT data_type, group_id, name, datatype, required FROM custom_variables "
            "WHERE project=? ORDER BY position",
            (project,),
        )
        return [
            CustomVariable(
                r["data_type"], r["group_id"], r["name"], r["datatype"], bool(r["required"])
            )
            for r in rows
        ]

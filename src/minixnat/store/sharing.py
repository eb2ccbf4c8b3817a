"""Sharing: a subject or experiment of one project listed in another, under a label of that
project (XNAT's ``…/subjects/{S}/projects/{Q}``).  The object stays its owner's; the sharing
project's members read it under that project's permissions."""

from __future__ import annotations

from dataclasses import replace

from minixnat.store.hierarchy import HierarchyTables
from minixnat.store.records import Experiment, StoreError, Subject


class SharingTables(HierarchyTables):
    def share(self, kind: str, key: str, project: str, label: str) -> None:
        """Share ``key`` into ``project`` as ``label``; StoreError 409 if the label is taken."""
        with self.transaction():
            taken_by_owned = (
                self.resolve_subject(project, label)
                if kind == "subject"
                else self.resolve_experiment(project, label)
            )
            other = self._one(
                "SELECT key FROM shares WHERE kind=? AND project=? AND label=?",
                (kind, project, label),
            )
            if taken_by_owned is not None or (other is not None and other["key"] != key):
                msg = f"{label} is already used by another {kind} in project {project}"
                raise StoreError(msg, 409)
            self._exec(
                "INSERT OR REPLACE INTO shares (kind, key, project, label) VALUES (?, ?, ?, ?)",
                (kind, key, project, label),
            )

    def unshare(self, kind: str, key: str, project: str) -> bool:
        with self.transaction():
            found = self._one(
                "SELECT 1 FROM shares WHERE kind=? AND key=? AND project=?", (kind, key, project)
            )
            self._exec(
                "DELETE FROM shares WHERE kind=? AND key=? AND project=?", (kind, key, project)
            )
        return found is not None

    def shared_projects(self, kind: str, key: str) -> list[str]:
        rows = self._q(
            "SELECT project FROM shares WHERE kind=? AND key=? ORDER BY project", (kind, key)
        )
        return [str(r["project"]) for r in rows]

    def shared_subjects(self, project: str) -> list[Subject]:
        """Subjects shared into ``project``, each under its label there."""
        rows = self._q(
            "SELECT s.*, sh.label AS shared_label FROM shares sh JOIN subjects s ON s.id = sh.key "
            "WHERE sh.kind='subject' AND sh.project=? ORDER BY s.id",
            (project,),
        )
        return [replace(_subject(r), label=r["shared_label"]) for r in rows]

    def shared_experiments(self, project: str) -> list[Experiment]:
        rows = self._q(
            "SELECT e.*, sh.label AS shared_label FROM shares sh "
            "JOIN experiments e ON e.id = sh.key "
            "WHERE sh.kind='experiment' AND sh.project=? ORDER BY e.id",
            (project,),
        )
        return [replace(_experiment(r), label=r["shared_label"]) for r in rows]

    def find_subject(self, project: str, ref: str) -> Subject | None:
        """A subject of ``project``, its own or shared into it, by label or accession ID."""
        found = self.resolve_subject(project, ref)
        if found is None:
            found = next((s for s in self.shared_subjects(project) if ref in (s.label, s.id)), None)
        return found

    def find_experiment(self, project: str, ref: str) -> Experiment | None:
        found = self.resolve_experiment(project, ref)
        if found is None:
            shared = self.shared_experiments(project)
            found = next((e for e in shared if ref in (e.label, e.id)), None)
        return found


def _subject(row: object) -> Subject:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("shared_label", None)
    return Subject(**data)


def _experiment(row: object) -> Experiment:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("shared_label", None)
    return Experiment(**data)

"""The archive hierarchy: projects and their roles, subjects, experiments, scans,
reconstructions and resources.

Deletes remove a whole branch in one transaction; the branch's folders go only once the
rows are committed (see journal.py).
"""

from __future__ import annotations

import json

from minixnat.store.clock import now_stamp
from minixnat.store.db import remembered_read
from minixnat.store.modified import ModifiedStamps
from minixnat.store.records import (
    ACCESS_LEVELS,
    NEW_PROJECT_PREARCHIVE_CODE,
    ROLES,
    Experiment,
    Project,
    Recon,
    Resource,
    Scan,
    StoreError,
    Subject,
)

# Columns a PUT may change, per table.  Names come from code, never from a request.
UPDATABLE = {
    "projects": {
        "name",
        "secondary_id",
        "description",
        "keywords",
        "pi_firstname",
        "pi_lastname",
        "accessibility",
    },
    "subjects": {"label", "gender", "dob", "yob", "handedness", "fields"},
    "experiments": {"label", "date", "time", "modality", "uid"},
    "scans": {"type", "series_description", "quality", "frames", "note", "uid", "modality"},
    "reconstructions": {"type", "base_scan_type"},
    "resources": {"format", "content", "tags", "description"},
}


class HierarchyTables(ModifiedStamps):
    """Projects down to resources.  File rows live in files.py."""

    # -- projects --------------------------------------------------------------------------
    def add_project(
        self,
        pid: str,
        *,
        name: str = "",
        secondary_id: str = "",
        description: str = "",
        accessibility: str = "private",
        pi_firstname: str = "",
        pi_lastname: str = "",
        keywords: str = "",
        owner: str = "admin",
    ) -> Project:
        if accessibility not in ACCESS_LEVELS:
            msg = f"accessibility must be one of {', '.join(ACCESS_LEVELS)}, not {accessibility!r}"
            raise StoreError(msg)
        with self.transaction():
            if self.get_project(pid) is not None:
                msg = f"project {pid} already exists"
                raise StoreError(msg)
            self._exec(
                "INSERT INTO projects (id, secondary_id, name, description, keywords, "
                "pi_firstname, pi_lastname, accessibility, insert_date, insert_user, "
                "prearchive_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pid,
                    secondary_id or pid,
                    name or pid,
                    description,
                    keywords,
                    pi_firstname,
                    pi_lastname,
                    accessibility,
                    now_stamp(),
                    owner,
                    NEW_PROJECT_PREARCHIVE_CODE,
                ),
            )
            if self._one("SELECT 1 FROM users WHERE login=?", (owner,)) is not None:
                self.set_role(pid, owner, "owner")
        project = self.get_project(pid)
        assert project is not None
        return project

    @remembered_read
    def get_project(self, pid: str) -> Project | None:
        """A project by its ID, its secondary ID or one of its aliases (XNAT's order)."""
        row = self._one("SELECT * FROM projects WHERE id=?", (pid,))
        if row is None:
            row = self._one(
                "SELECT * FROM projects WHERE secondary_id=? UNION ALL SELECT p.* FROM projects p "
                "JOIN project_aliases a ON a.project = p.id WHERE a.alias=? LIMIT 1",
                (pid, pid),
            )
        return Project(**dict(row)) if row else None

    def project_aliases(self, pid: str) -> list[str]:
        rows = self._q("SELECT alias FROM project_aliases WHERE project=? ORDER BY alias", (pid,))
        return [str(r["alias"]) for r in rows]

    def add_alias(self, pid: str, alias: str) -> None:
        """Give ``pid`` another name; refused if any project already answers to it."""
        with self.transaction():
            owner = self.get_project(alias)
            if owner is not None and owner.id != pid:
                msg = f"{alias} already names project {owner.id}"
                raise StoreError(msg, 409)
            if owner is None:
                self._exec(
                    "INSERT INTO project_aliases (alias, project) VALUES (?, ?)", (alias, pid)
                )

    def set_project_code(self, pid: str, which: str, code: int) -> None:
        """Set ``prearchive_code`` (0 prearchive, 4 archive, 5 archive and overwrite) or
        ``quarantine_code`` (0 or 1)."""
        allowed = {"prearchive_code": (0, 4, 5), "quarantine_code": (0, 1)}[which]
        if code not in allowed:
            msg = f"{which} must be one of {', '.join(map(str, allowed))}, not {code}"
            raise StoreError(msg)
        self._exec(f"UPDATE projects SET {which}=? WHERE id=?", (code, pid))  # which: checked

    def list_projects(self) -> list[Project]:
        # By ID, upper and lower case together, as XNAT's database collation sorts them
        # (``dummyproject`` before ``TRAINING``).
        rows = self._q("SELECT * FROM projects ORDER BY id COLLATE NOCASE, id")
        return [Project(**dict(r)) for r in rows]

    def set_accessibility(self, pid: str, level: str) -> None:
        if level not in ACCESS_LEVELS:
            msg = f"accessibility must be one of {', '.join(ACCESS_LEVELS)}, not {level!r}"
            raise StoreError(msg)
        if self.get_project(pid) is None:
            msg = f"no project {pid}"
            raise StoreError(msg)
        self._exec("UPDATE projects SET accessibility=? WHERE id=?", (level, pid))

    def set_role(self, pid: str, login: str, role: str) -> None:
        if role not in ROLES:
            msg = f"role must be one of {', '.join(ROLES)}, not {role!r}"
            raise StoreError(msg)
        if self.get_project(pid) is None:
            msg = f"no project {pid}"
            raise StoreError(msg)
        if self._one("SELECT 1 FROM users WHERE login=?", (login,)) is None:
            msg = f"no user {login}; create it first with 'minixnat user add'"
            raise StoreError(msg)
        self._exec("INSERT OR REPLACE INTO project_roles VALUES (?, ?, ?)", (pid, login, role))

    @remembered_read
    def role_of(self, pid: str, login: str) -> str | None:
        row = self._one("SELECT role FROM project_roles WHERE project=? AND login=?", (pid, login))
        return str(row["role"]) if row else None

    # -- subjects --------------------------------------------------------------------------
    def add_subject(
        self,
        project: str,
        label: str,
        *,
        gender: str = "",
        dob: str = "",
        yob: str = "",
        handedness: str = "",
        user: str = "admin",
    ) -> Subject:
        with self.transaction():
            sid = self._next_id("S")
            now = now_stamp()
            self._exec(
                "INSERT INTO subjects (id, project, label, gender, dob, yob, handedness, fields, "
                "insert_date, insert_user, last_modified) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?)",
                (sid, project, label, gender, dob, yob, handedness, now, user, now),
            )
            subject = self.get_subject(sid)
        assert subject is not None
        return subject

    @remembered_read
    def get_subject(self, sid: str) -> Subject | None:
        row = self._one("SELECT * FROM subjects WHERE id=?", (sid,))
        return Subject(**dict(row)) if row else None

    @remembered_read
    def resolve_subject(self, project: str, ref: str) -> Subject | None:
        """A subject of ``project`` by label first, then by accession ID (XNAT's order)."""
        row = self._one("SELECT * FROM subjects WHERE project=? AND label=?", (project, ref))
        if row is None:
            row = self._one("SELECT * FROM subjects WHERE project=? AND id=?", (project, ref))
        return Subject(**dict(row)) if row else None

    def list_subjects(self, project: str | None = None) -> list[Subject]:
        if project is None:
            rows = self._q("SELECT * FROM subjects ORDER BY id")
        else:
            rows = self._q("SELECT * FROM subjects WHERE project=? ORDER BY id", (project,))
        return [Subject(**dict(r)) for r in rows]

    def set_subject_fields(self, sid: str, fields: dict[str, str]) -> None:
        """Merge custom fields into a subject's ``fields`` (an empty value removes one)."""
        with self.transaction():
            subject = self.get_subject(sid)
            if subject is None:
                return
            current = json.loads(subject.fields or "{}")
            for name, value in fields.items():
                if value in ("", "NULL"):
                    current.pop(name, None)
                else:
                    current[name] = value
            self.update_row("subjects", "id", sid, {"fields": json.dumps(current, sort_keys=True)})

    # -- experiments -----------------------------------------------------------------------
    def add_experiment(
        self,
        project: str,
        subject_id: str,
        label: str,
        xsi_type: str,
        *,
        date: str = "",
        time_: str = "",
        modality: str = "",
        uid: str = "",
        session_id: str | None = None,
        user: str = "admin",
    ) -> Experiment:
        with self.transaction():
            eid = self._next_id("E")
            now = now_stamp()
            self._exec(
                "INSERT INTO experiments (id, project, subject_id, label, xsi_type, date, time, "
                "modality, uid, session_id, insert_date, insert_user, last_modified) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    eid,
                    project,
                    subject_id,
                    label,
                    xsi_type,
                    date,
                    time_,
                    modality,
                    uid,
                    session_id,
                    now,
                    user,
                    now,
                ),
            )
            experiment = self.get_experiment(eid)
        assert experiment is not None
        return experiment

    @remembered_read
    def get_experiment(self, eid: str) -> Experiment | None:
        row = self._one("SELECT * FROM experiments WHERE id=?", (eid,))
        return Experiment(**dict(row)) if row else None

    @remembered_read
    def resolve_experiment(self, project: str, ref: str) -> Experiment | None:
        row = self._one("SELECT * FROM experiments WHERE project=? AND label=?", (project, ref))
        if row is None:
            row = self._one("SELECT * FROM experiments WHERE project=? AND id=?", (project, ref))
        return Experiment(**dict(row)) if row else None

    def list_experiments(
        self,
        *,
        project: str | None = None,
        subject_id: str | None = None,
        session_id: str | None = None,
        sessions_only: bool = False,
    ) -> list[Experiment]:
        where, args = [], []
        if project is not None:
            where.append("project=?")
            args.append(project)
        if subject_id is not None:
            where.append("subject_id=?")
            args.append(subject_id)
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)
        if sessions_only:
            where.append("session_id IS NULL")
        sql = "SELECT * FROM experiments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [Experiment(**dict(r)) for r in self._q(sql + " ORDER BY id", tuple(args))]

    # -- scans and reconstructions -------------------------------------------------------
    def add_scan(
        self,
        experiment_id: str,
        scan_id: str,
        xsi_type: str,
        *,
        type_: str = "",
        series_description: str = "",
        quality: str = "usable",
        frames: str = "",
        note: str = "",
        uid: str = "",
        modality: str = "",
    ) -> Scan:
        with self.transaction():
            pk = self._exec(
                "INSERT INTO scans (experiment_id, scan_id, xsi_type, type, series_description, "
                "quality, frames, note, uid, modality) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    experiment_id,
                    scan_id,
                    xsi_type,
                    type_,
                    series_description,
                    quality,
                    frames,
                    note,
                    uid,
                    modality,
                ),
            )
            scan = self.get_scan_by_pk(pk)
            self.touch_owner("experiment", experiment_id)
        assert scan is not None
        return scan

    def list_scans(self, experiment_id: str) -> list[Scan]:
        rows = self._q("SELECT * FROM scans WHERE experiment_id=?", (experiment_id,))
        scans = [Scan(**dict(r)) for r in rows]
        return sorted(scans, key=lambda s: _natural_key(s.scan_id))

    def get_scan_by_pk(self, pk: int) -> Scan | None:
        row = self._one("SELECT * FROM scans WHERE pk=?", (pk,))
        return Scan(**dict(row)) if row else None

    @remembered_read
    def get_scan(self, experiment_id: str, scan_id: str) -> Scan | None:
        row = self._one(
            "SELECT * FROM scans WHERE experiment_id=? AND scan_id=?", (experiment_id, scan_id)
        )
        return Scan(**dict(row)) if row else None

    def add_recon(
        self, experiment_id: str, recon_id: str, *, type_: str = "", base_scan_type: str = ""
    ) -> Recon:
        with self.transaction():
            pk = self._exec(
                "INSERT INTO reconstructions (experiment_id, recon_id, type, base_scan_type) "
                "VALUES (?, ?, ?, ?)",
                (experiment_id, recon_id, type_, base_scan_type),
            )
            row = self._one("SELECT * FROM reconstructions WHERE pk=?", (pk,))
        assert row is not None
        return Recon(**dict(row))

    def list_recons(self, experiment_id: str) -> list[Recon]:
        rows = self._q(
            "SELECT * FROM reconstructions WHERE experiment_id=? ORDER BY pk", (experiment_id,)
        )
        return [Recon(**dict(r)) for r in rows]

    # -- resources -----------------------------------------------------------------------
    def add_resource(
        self,
        owner_kind: str,
        owner_key: str,
        label: str,
        directory: str,
        *,
        format_: str = "",
        content: str = "",
        tags: str = "",
        description: str = "",
    ) -> Resource:
        with self.transaction():
            pk = self._exec(
                "INSERT INTO resources (owner_kind, owner_key, label, format, content, tags, "
                "description, directory) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (owner_kind, owner_key, label, format_, content, tags, description, directory),
            )
            resource = self.get_resource(pk)
            self.touch_owner(owner_kind, owner_key)
        assert resource is not None
        return resource

    def get_resource(self, pk: int) -> Resource | None:
        row = self._one("SELECT * FROM resources WHERE pk=?", (pk,))
        return Resource(**dict(row)) if row else None

    def list_resources(self, owner_kind: str, owner_key: str) -> list[Resource]:
        rows = self._q(
            "SELECT * FROM resources WHERE owner_kind=? AND owner_key=? ORDER BY pk",
            (owner_kind, owner_key),
        )
        return [Resource(**dict(r)) for r in rows]

    @remembered_read
    def resources_named(self, owner_kind: str, owner_key: str, name: str) -> tuple[Resource, ...]:
        """The owner's resources whose label or ID is ``name``, in ID order."""
        rows = self._q(
            "SELECT * FROM resources WHERE owner_kind=? AND owner_key=? "
            "AND (label=? OR CAST(pk AS TEXT)=?) ORDER BY pk",
            (owner_kind, owner_key, name, name),
        )
        return tuple(Resource(**dict(r)) for r in rows)

    def all_resources(self) -> list[Resource]:
        return [Resource(**dict(r)) for r in self._q("SELECT * FROM resources ORDER BY pk")]

    def get_resource_by_label(self, owner_kind: str, owner_key: str, label: str) -> Resource | None:
        row = self._one(
            "SELECT * FROM resources WHERE owner_kind=? AND owner_key=? AND label=?",
            (owner_kind, owner_key, label),
        )
        return Resource(**dict(row)) if row else None

    def directory_taken(self, directory: str) -> bool:
        return self._one("SELECT 1 FROM resources WHERE directory=?", (directory,)) is not None

    # -- updates and deletes ---------------------------------------------------------------
    def update_row(self, table: str, key: str, key_value: object, values: dict[str, str]) -> None:
        """Set columns of one row; only the columns in :data:`UPDATABLE` may change."""
        bad = set(values) - UPDATABLE[table]
        if bad:
            msg = f"cannot set {', '.join(sorted(bad))} on {table}"
            raise StoreError(msg)
        if not values:
            return
        if table in ("subjects", "experiments"):
            values = {**values, "last_modified": now_stamp()}
        assignments = ", ".join(f"{column}=?" for column in values)
        with self.transaction():
            self._exec(
                f"UPDATE {table} SET {assignments} WHERE {key}=?",  # names checked above
                (*values.values(), key_value),
            )
            if table in ("scans", "reconstructions") and key == "pk":
                self.touch_owner("scan" if table == "scans" else "recon", str(key_value))

    def delete_resource(self, pk: int) -> None:
        """Delete a resource, its file rows and (after the commit) its folder."""
        with self.transaction() as tx:
            resource = self.get_resource(pk)
            if resource is None:
                return
            folder = (self.archive_dir / resource.directory).resolve()
            self.touch_owner(resource.owner_kind, resource.owner_key)
            self._exec("DELETE FROM files WHERE resource_pk=?", (pk,))
            self._exec("DELETE FROM resources WHERE pk=?", (pk,))
            if self.archive_dir.resolve() in folder.parents and folder.exists():
                tx.remove(folder)

    def _forget_fields(self, kind: str, key: str) -> None:
        self._exec("DELETE FROM object_fields WHERE owner_kind=? AND owner_key=?", (kind, key))

    def _delete_owned(self, owners: list[tuple[str, str]]) -> None:
        for kind, key in owners:
            for resource in self.list_resources(kind, key):
                self.delete_resource(resource.pk)

    def delete_scan(self, pk: int) -> None:
        with self.transaction():
            self.touch_owner("scan", str(pk))
            self._delete_owned([("scan", str(pk))])
            self._exec("DELETE FROM scans WHERE pk=?", (pk,))
            self._forget_fields("scan", str(pk))

    def delete_recon(self, pk: int) -> None:
        with self.transaction():
            self._delete_owned([("recon", str(pk))])
            self._exec("DELETE FROM reconstructions WHERE pk=?", (pk,))
            self._forget_fields("recon", str(pk))

    def delete_experiment(self, eid: str) -> None:
        """Delete an experiment with its scans, recons, assessors and every file they own."""
        with self.transaction():
            for assessor in self.list_experiments(session_id=eid):
                self.delete_experiment(assessor.id)
            for scan in self.list_scans(eid):
                self.delete_scan(scan.pk)
            for recon in self.list_recons(eid):
                self.delete_recon(recon.pk)
            self._delete_owned([("experiment", eid), ("assessor", eid)])
            self._exec("DELETE FROM experiments WHERE id=?", (eid,))
            self._forget_fields("experiment", eid)
            self._exec("DELETE FROM shares WHERE kind='experiment' AND key=?", (eid,))

    def delete_subject(self, sid: str) -> None:
        with self.transaction():
            for experiment in self.list_experiments(subject_id=sid, sessions_only=True):
                self.delete_experiment(experiment.id)
            for experiment in self.list_experiments(subject_id=sid):
                self.delete_experiment(experiment.id)
            self._delete_owned([("subject", sid)])
            self._exec("DELETE FROM subjects WHERE id=?", (sid,))
            self._forget_fields("subject", sid)
            self._exec("DELETE FROM shares WHERE kind='subject' AND key=?", (sid,))

    def delete_project(self, pid: str) -> None:
        with self.transaction() as tx:
            for subject in self.list_subjects(pid):
                self.delete_subject(subject.id)
            self._delete_owned([("project", pid)])
            self._exec("DELETE FROM projects WHERE id=?", (pid,))
            self._forget_fields("project", pid)
            folder = self.archive_dir / pid
            if folder.exists():
                tx.remove(folder)


def _natural_key(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)

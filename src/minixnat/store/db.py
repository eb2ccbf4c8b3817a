"""Typed access to an archive root: the SQLite metadata plus the files on disk.

Layout of an archive root::

    ROOT/minixnat.sqlite                     metadata (see schema.py)
    ROOT/archive/{project}/arc001/{session}/SCANS/{scan}/{resource}/...       scan files
    ROOT/archive/{project}/arc001/{session}/RESOURCES/{resource}/...          session files
    ROOT/archive/{project}/arc001/{session}/ASSESSORS/{assessor}/{resource}/  assessor files
    ROOT/archive/{project}/arc001/{session}/PROCESSED/{recon}/{resource}/     recon files
    ROOT/archive/{project}/subjects/{subject}/RESOURCES/{resource}/...        subject files
    ROOT/archive/{project}/resources/{resource}/...                          project files

A resource row records its folder relative to ``ROOT/archive`` so files never move when a
label changes.  Every method is synchronous and quick; the server calls them inline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from minixnat.store.clock import now_ms, now_stamp
from minixnat.store.prearchive import PrearchiveTables
from minixnat.store.schema import migrate

DB_NAME = "minixnat.sqlite"
SITE_ID = "XNAT"
ROLES = ("owner", "member", "collaborator")
ACCESS_LEVELS = ("private", "protected", "public")


@dataclass(frozen=True)
class User:
    login: str
    admin: bool
    enabled: bool
    firstname: str = ""
    lastname: str = ""


@dataclass(frozen=True)
class Project:
    id: str
    secondary_id: str
    name: str
    description: str
    keywords: str
    pi_firstname: str
    pi_lastname: str
    accessibility: str
    insert_date: str
    insert_user: str


@dataclass(frozen=True)
class Subject:
    id: str
    project: str
    label: str
    gender: str
    dob: str
    yob: str
    handedness: str
    fields: str
    insert_date: str
    insert_user: str


@dataclass(frozen=True)
class Experiment:
    id: str
    project: str
    subject_id: str
    label: str
    xsi_type: str
    date: str
    time: str
    modality: str
    uid: str
    session_id: str | None
    insert_date: str
    insert_user: str

    @property
    def is_assessor(self) -> bool:
        return self.session_id is not None


@dataclass(frozen=True)
class Scan:
    pk: int
    experiment_id: str
    scan_id: str
    xsi_type: str
    type: str
    series_description: str
    quality: str
    frames: str
    note: str
    uid: str
    modality: str


@dataclass(frozen=True)
class Recon:
    pk: int
    experiment_id: str
    recon_id: str
    type: str
    base_scan_type: str


@dataclass(frozen=True)
class Resource:
    pk: int
    owner_kind: str
    owner_key: str
    label: str
    format: str
    content: str
    tags: str
    description: str
    directory: str


@dataclass(frozen=True)
class FileRow:
    resource_pk: int
    path: str
    size: int
    md5: str
    format: str
    content: str
    tags: str
    created: str


@dataclass(frozen=True)
class AliasToken:
    alias: str
    secret: str
    login: str
    created_ms: int
    expires_ms: int
    enabled: bool


class StoreError(Exception):
    """A store operation was refused (unknown object, duplicate, bad value)."""


def _hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 60_000).hex()


class Store(PrearchiveTables):
    """One archive root.  Thread-safe: a lock serialises access to the one connection."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.archive_dir = self.root / "archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.root / DB_NAME, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._lock = threading.RLock()
        migrate(self._conn)
        # Verifying a password costs ~30 ms by design; clients that send Basic auth on every
        # request (pyxnat) would pay it each time.  Remember verified pairs, keyed by a hash.
        self._verified: dict[str, str] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- low level -----------------------------------------------------------------------
    def _q(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
            return row

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> int:
        with self._lock:
            cur = self._conn.execute(sql, args)
            self._conn.commit()
            return cur.lastrowid or 0

    def _next_id(self, code: str) -> str:
        with self._lock:
            row = self._conn.execute("SELECT value FROM counters WHERE name=?", (code,)).fetchone()
            value = (row[0] if row else 0) + 1
            self._conn.execute(
                "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (code, value)
            )
            self._conn.commit()
        return f"{SITE_ID}_{code}{value:05d}"

    # -- users and sessions ------------------------------------------------------------
    def add_user(self, login: str, password: str, *, admin: bool = False) -> User:
        if not login or any(c in login for c in ":/ \t"):
            msg = f"invalid user name {login!r}: use letters, digits, '_', '-' or '.'"
            raise StoreError(msg)
        salt = secrets.token_hex(8)
        with self._lock:
            self._conn.execute(
                "INSERT INTO users (login, salt, password_hash, admin) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(login) DO UPDATE SET salt=excluded.salt, "
                "password_hash=excluded.password_hash, admin=excluded.admin",
                (login, salt, _hash_password(password, salt), int(admin)),
            )
            self._conn.commit()
            self._verified = {k: v for k, v in self._verified.items() if v != login}
        return User(login, admin, True)

    def get_user(self, login: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE login=?", (login,))
        if row is None:
            return None
        return User(
            row["login"],
            bool(row["admin"]),
            bool(row["enabled"]),
            row["firstname"],
            row["lastname"],
        )

    def check_password(self, login: str, password: str) -> User | None:
        """The user, if ``password`` is theirs and the account is enabled."""
        key = hashlib.sha256(f"{login}\0{password}".encode()).hexdigest()
        if self._verified.get(key) == login:
            return self.get_user(login)
        row = self._one("SELECT * FROM users WHERE login=?", (login,))
        if row is None or not row["enabled"]:
            return None
        if not hmac.compare_digest(_hash_password(password, row["salt"]), row["password_hash"]):
            return None
        self._verified[key] = login
        return self.get_user(login)

    def add_session(self, sid: str, login: str) -> None:
        self._exec("INSERT OR REPLACE INTO login_sessions VALUES (?, ?, ?)", (sid, login, now_ms()))

    def delete_session(self, sid: str) -> None:
        self._exec("DELETE FROM login_sessions WHERE sid=?", (sid,))

    def load_sessions(self) -> dict[str, str]:
        return {r["sid"]: r["login"] for r in self._q("SELECT sid, login FROM login_sessions")}

    # -- alias tokens --------------------------------------------------------------------
    def issue_token(self, login: str, lifetime_ms: int = 2 * 24 * 3600 * 1000) -> AliasToken:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        token = AliasToken(
            alias=str(uuid.uuid4()),
            secret="".join(secrets.choice(alphabet) for _ in range(64)),
            login=login,
            created_ms=now_ms(),
            expires_ms=now_ms() + lifetime_ms,
            enabled=True,
        )
        self._exec(
            "INSERT INTO alias_tokens VALUES (?, ?, ?, ?, ?, 1)",
            (token.alias, token.secret, login, token.created_ms, token.expires_ms),
        )
        return token

    def get_token(self, alias: str) -> AliasToken | None:
        row = self._one("SELECT * FROM alias_tokens WHERE alias=?", (alias,))
        return _token(row) if row is not None else None

    def user_tokens(self, login: str) -> list[AliasToken]:
        rows = self._q("SELECT * FROM alias_tokens WHERE login=? AND enabled=1", (login,))
        return [_token(r) for r in rows]

    def check_token(self, alias: str, secret: str) -> User | None:
        token = self.get_token(alias)
        if token is None or not token.enabled or token.expires_ms < now_ms():
            return None
        if not hmac.compare_digest(token.secret, secret):
            return None
        return self.get_user(token.login)

    def invalidate_token(self, alias: str) -> bool:
        with self._lock:
            cur = self._conn.execute("UPDATE alias_tokens SET enabled=0 WHERE alias=?", (alias,))
            self._conn.commit()
            return cur.rowcount > 0

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
        if self.get_project(pid) is not None:
            msg = f"project {pid} already exists"
            raise StoreError(msg)
        self._exec(
            "INSERT INTO projects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        if self.get_user(owner) is not None:
            self.set_role(pid, owner, "owner")
        project = self.get_project(pid)
        assert project is not None
        return project

    def get_project(self, pid: str) -> Project | None:
        row = self._one(
            "SELECT * FROM projects WHERE id=? OR (secondary_id=? AND id<>?)", (pid, pid, pid)
        )
        return Project(**dict(row)) if row else None

    def list_projects(self) -> list[Project]:
        return [Project(**dict(r)) for r in self._q("SELECT * FROM projects ORDER BY id")]

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
        if self.get_user(login) is None:
            msg = f"no user {login}; create it first with 'minixnat user add'"
            raise StoreError(msg)
        self._exec("INSERT OR REPLACE INTO project_roles VALUES (?, ?, ?)", (pid, login, role))

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
        sid = self._next_id("S")
        self._exec(
            "INSERT INTO subjects VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (sid, project, label, gender, dob, yob, handedness, now_stamp(), user),
        )
        subject = self.get_subject(sid)
        assert subject is not None
        return subject

    def get_subject(self, sid: str) -> Subject | None:
        row = self._one("SELECT * FROM subjects WHERE id=?", (sid,))
        return Subject(**dict(row)) if row else None

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
        eid = self._next_id("E")
        self._exec(
            "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                now_stamp(),
                user,
            ),
        )
        experiment = self.get_experiment(eid)
        assert experiment is not None
        return experiment

    def get_experiment(self, eid: str) -> Experiment | None:
        row = self._one("SELECT * FROM experiments WHERE id=?", (eid,))
        return Experiment(**dict(row)) if row else None

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
        row = self._one("SELECT * FROM scans WHERE pk=?", (pk,))
        assert row is not None
        return Scan(**dict(row))

    def list_scans(self, experiment_id: str) -> list[Scan]:
        rows = self._q("SELECT * FROM scans WHERE experiment_id=?", (experiment_id,))
        scans = [Scan(**dict(r)) for r in rows]
        return sorted(scans, key=lambda s: _natural_key(s.scan_id))

    def get_scan_by_pk(self, pk: int) -> Scan | None:
        row = self._one("SELECT * FROM scans WHERE pk=?", (pk,))
        return Scan(**dict(row)) if row else None

    def add_recon(
        self, experiment_id: str, recon_id: str, *, type_: str = "", base_scan_type: str = ""
    ) -> Recon:
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

    # -- resources and files ---------------------------------------------------------------
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
        pk = self._exec(
            "INSERT INTO resources (owner_kind, owner_key, label, format, content, tags, "
            "description, directory) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (owner_kind, owner_key, label, format_, content, tags, description, directory),
        )
        resource = self.get_resource(pk)
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

    def add_file(
        self,
        resource_pk: int,
        path: str,
        size: int,
        md5: str,
        *,
        format_: str = "",
        content: str = "",
        tags: str = "",
    ) -> FileRow:
        self._exec(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (resource_pk, path, size, md5, format_, content, tags, now_stamp()),
        )
        return FileRow(resource_pk, path, size, md5, format_, content, tags, now_stamp())

    def list_files(self, resource_pk: int) -> list[FileRow]:
        rows = self._q("SELECT * FROM files WHERE resource_pk=? ORDER BY path", (resource_pk,))
        return [FileRow(**dict(r)) for r in rows]

    def resource_stats(self, resource_pk: int) -> tuple[int, int]:
        row = self._one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE resource_pk=?", (resource_pk,)
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def file_path(self, resource: Resource, relpath: str) -> Path:
        """The on-disk path of a file; refuses anything that would leave the resource folder."""
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or "\\" in relpath or "\0" in relpath:
            msg = f"unsafe file path {relpath!r}"
            raise StoreError(msg)
        base = (self.archive_dir / resource.directory).resolve()
        full = (base / rel).resolve()
        if base != full and base not in full.parents:
            msg = f"unsafe file path {relpath!r}"
            raise StoreError(msg)
        return full

    def write_file(
        self,
        resource: Resource,
        relpath: str,
        chunks: Iterator[bytes],
        *,
        format_: str = "",
        content: str = "",
    ) -> FileRow:
        """Store a file's bytes atomically and record its size and MD5."""
        target = self.file_path(resource, relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        md5 = hashlib.md5()
        size = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self.add_file(
            resource.pk, relpath, size, md5.hexdigest(), format_=format_, content=content
        )

    def place_file(
        self,
        resource: Resource,
        relpath: str,
        source: Path,
        md5: str,
        *,
        format_: str = "",
        content: str = "",
        tags: str = "",
    ) -> FileRow:
        """Move an already written and hashed file into ``resource`` and record it.

        ``source`` must be on the archive's file system (a rename, never a copy), so a file
        either appears complete under its final name or not at all.
        """
        target = self.file_path(resource, relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        os.replace(source, target)
        return self.add_file(
            resource.pk, relpath, size, md5, format_=format_, content=content, tags=tags
        )

    def get_file(self, resource_pk: int, relpath: str) -> FileRow | None:
        row = self._one(
            "SELECT * FROM files WHERE resource_pk=? AND path=?", (resource_pk, relpath)
        )
        return FileRow(**dict(row)) if row else None

    def delete_files(self, resource: Resource, relpath: str) -> int:
        """Delete one file, or every file under a folder when ``relpath`` ends in '/'."""
        if relpath.endswith("/"):
            prefix = relpath
            doomed = [f for f in self.list_files(resource.pk) if f.path.startswith(prefix)]
        else:
            found = self.get_file(resource.pk, relpath)
            doomed = [found] if found else []
        for row in doomed:
            self.file_path(resource, row.path).unlink(missing_ok=True)
            self._exec("DELETE FROM files WHERE resource_pk=? AND path=?", (resource.pk, row.path))
        if doomed:
            self._prune_empty(self.file_path(resource, doomed[0].path).parent)
        return len(doomed)

    def get_resource_by_label(self, owner_kind: str, owner_key: str, label: str) -> Resource | None:
        row = self._one(
            "SELECT * FROM resources WHERE owner_kind=? AND owner_key=? AND label=?",
            (owner_kind, owner_key, label),
        )
        return Resource(**dict(row)) if row else None

    def directory_taken(self, directory: str) -> bool:
        return self._one("SELECT 1 FROM resources WHERE directory=?", (directory,)) is not None

    def delete_resource(self, pk: int) -> None:
        """Delete a resource, its file rows and its folder on disk."""
        resource = self.get_resource(pk)
        if resource is None:
            return
        folder = (self.archive_dir / resource.directory).resolve()
        self._exec("DELETE FROM resources WHERE pk=?", (pk,))
        self._exec("DELETE FROM files WHERE resource_pk=?", (pk,))
        if self.archive_dir.resolve() in folder.parents:
            shutil.rmtree(folder, ignore_errors=True)
            self._prune_empty(folder.parent)

    def _prune_empty(self, folder: Path, root: Path | None = None) -> None:
        """Remove empty folders from ``folder`` up to (not including) ``root`` (by default
        the archive folder)."""
        root = (root or self.archive_dir).resolve()
        folder = folder.resolve()
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _delete_owned(self, owners: list[tuple[str, str]]) -> None:
        for kind, key in owners:
            for resource in self.list_resources(kind, key):
                self.delete_resource(resource.pk)

    # -- updates and deletes ---------------------------------------------------------------
    def update_row(self, table: str, key: str, key_value: object, values: dict[str, str]) -> None:
        """Set columns of one row.  Column names come from code, never from a request."""
        allowed = {
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
        }[table]
        bad = set(values) - allowed
        if bad:
            msg = f"cannot set {', '.join(sorted(bad))} on {table}"
            raise StoreError(msg)
        if not values:
            return
        assignments = ", ".join(f"{column}=?" for column in values)
        self._exec(
            f"UPDATE {table} SET {assignments} WHERE {key}=?",  # names checked above
            (*values.values(), key_value),
        )

    def set_subject_fields(self, sid: str, fields: dict[str, str]) -> None:
        """Merge custom fields into a subject's ``fields`` (an empty value removes one)."""
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

    def get_scan(self, experiment_id: str, scan_id: str) -> Scan | None:
        row = self._one(
            "SELECT * FROM scans WHERE experiment_id=? AND scan_id=?", (experiment_id, scan_id)
        )
        return Scan(**dict(row)) if row else None

    def delete_scan(self, pk: int) -> None:
        self._delete_owned([("scan", str(pk))])
        self._exec("DELETE FROM scans WHERE pk=?", (pk,))

    def delete_recon(self, pk: int) -> None:
        self._delete_owned([("recon", str(pk))])
        self._exec("DELETE FROM reconstructions WHERE pk=?", (pk,))

    def delete_experiment(self, eid: str) -> None:
        """Delete an experiment with its scans, recons, assessors and every file they own."""
        for assessor in self.list_experiments(session_id=eid):
            self.delete_experiment(assessor.id)
        for scan in self.list_scans(eid):
            self.delete_scan(scan.pk)
        for recon in self.list_recons(eid):
            self.delete_recon(recon.pk)
        self._delete_owned([("experiment", eid), ("assessor", eid)])
        self._exec("DELETE FROM experiments WHERE id=?", (eid,))

    def delete_subject(self, sid: str) -> None:
        for experiment in self.list_experiments(subject_id=sid, sessions_only=True):
            self.delete_experiment(experiment.id)
        for experiment in self.list_experiments(subject_id=sid):
            self.delete_experiment(experiment.id)
        self._delete_owned([("subject", sid)])
        self._exec("DELETE FROM subjects WHERE id=?", (sid,))

    def delete_project(self, pid: str) -> None:
        for subject in self.list_subjects(pid):
            self.delete_subject(subject.id)
        self._delete_owned([("project", pid)])
        self._exec("DELETE FROM projects WHERE id=?", (pid,))
        shutil.rmtree(self.archive_dir / pid, ignore_errors=True)

    # -- download catalogs -------------------------------------------------------------
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


def _token(row: sqlite3.Row) -> AliasToken:
    return AliasToken(
        row["alias"],
        row["secret"],
        row["login"],
        row["created_ms"],
        row["expires_ms"],
        bool(row["enabled"]),
    )


def _natural_key(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)

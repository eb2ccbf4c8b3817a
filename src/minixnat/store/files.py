"""Files in resources: their catalog rows and their place on disk.

A resource row records its folder relative to ``ROOT/archive`` (XNAT's own layout, e.g.
``{project}/arc001/{session}/SCANS/{scan}/{resource}``), so files never move when a label
changes.  A file is written under ``ROOT/tmp``, hashed as it is written, and moved into its
folder by the transaction that records its row (journal.py): a crash never leaves a row
without its bytes, or bytes that a listing does not show.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from minixnat.store.clock import now_stamp
from minixnat.store.db import like_prefix, remembered_read
from minixnat.store.modified import ModifiedStamps
from minixnat.store.names import check_name
from minixnat.store.records import FileRow, Resource, StoreError

# A resource of at most this many files is looked up by the file GET from an index of all
# its rows, read once while the database is unchanged; a larger one is asked file by file.
INDEX_AT_MOST = 2000


def md5_of(path: Path) -> str:
    """The MD5 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Refreshed:
    """What a catalog refresh changed in one resource, by file path."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # on disk, but no name a row may have


class FileTables(ModifiedStamps):
    """File rows and their bytes."""

    @property
    def tmp_dir(self) -> Path:
        """Where uploads are received: on the archive's file system, so storing is a rename."""
        return self.root / "tmp"

    def file_path(self, resource: Resource, relpath: str) -> Path:
        """The on-disk path of a file; refuses anything that would leave the resource folder.

        Purely lexical (no symlinks are followed: the archive holds none, since uploads
        refuse links).
        """
        return Path(self.file_location(resource, relpath))

    def file_location(self, resource: Resource, relpath: str) -> str:
        """:meth:`file_path` as a string: plain string work, for the file GET (it runs on
        every one)."""
        parts = [p for p in relpath.split("/") if p not in ("", ".")]
        if relpath.startswith("/") or "\\" in relpath or ".." in parts or not parts:
            msg = f"unsafe file path {relpath!r}"
            raise StoreError(msg)
        check_name("file path", relpath)
        return os.path.join(self._resource_folder(resource.directory), *parts)

    def _resource_folder(self, directory: str) -> str:
        """A resource folder's absolute path; remembered, as it depends on nothing else."""
        base = self._folders.get(directory)
        if base is None:
            archive = self._archive_abs
            base = os.path.normpath(os.path.join(archive, directory))
            if not base.startswith(archive + os.sep):
                msg = f"resource folder {directory!r} is outside the archive"
                raise StoreError(msg)
            self._folders[directory] = base
        return base

    @functools.cached_property
    def _folders(self) -> dict[str, str]:
        return {}

    @functools.cached_property
    def _archive_abs(self) -> str:
        return os.path.abspath(self.archive_dir)

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
        row = FileRow(resource_pk, path, size, md5, format_, content, tags, now_stamp())
        with self.transaction():
            self._exec(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (resource_pk, path, size, md5, format_, content, tags, row.created),
            )
            self._touch_resource(resource_pk)
        return row

    def list_files(self, resource_pk: int) -> list[FileRow]:
        rows = self._q("SELECT * FROM files WHERE resource_pk=? ORDER BY path", (resource_pk,))
        return [FileRow(**dict(r)) for r in rows]

    def get_file(self, resource_pk: int, relpath: str) -> FileRow | None:
        row = self._one(
            "SELECT * FROM files WHERE resource_pk=? AND path=?", (resource_pk, relpath)
        )
        return FileRow(**dict(row)) if row else None

    def lookup_file(self, resource_pk: int, relpath: str) -> FileRow | None:
        """:meth:`get_file` for the file GET, which asks for one resource's files one after
        another: from the resource's remembered index (one query for all its rows, not one a
        file: a cold pass over 2,000 files asks SQLite 80 times instead of 2,000)."""
        index = self._file_index(resource_pk)
        if index is None:  # a large resource: its rows are not all held in memory
            return self.get_file(resource_pk, relpath)
        return index.get(relpath)

    @remembered_read
    def _file_index(self, resource_pk: int) -> Mapping[str, FileRow] | None:
        """The resource's rows by path (read-only: it is shared), or None past
        :data:`INDEX_AT_MOST` files."""
        past = self._one(
            "SELECT 1 FROM files WHERE resource_pk=? LIMIT 1 OFFSET ?", (resource_pk, INDEX_AT_MOST)
        )
        if past is not None:
            return None
        rows = self._q("SELECT * FROM files WHERE resource_pk=?", (resource_pk,))
        return MappingProxyType({r["path"]: FileRow(**dict(r)) for r in rows})

    def resource_stats(self, resource_pk: int) -> tuple[int, int]:
        row = self._one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE resource_pk=?", (resource_pk,)
        )
        assert row is not None
        return int(row[0]), int(row[1])

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
        """Record ``source`` (written and hashed already) as ``relpath`` of ``resource``.

        ``source`` must be on the archive's file system: it is renamed into place when the
        surrounding transaction commits, never copied.
        """
        target = self.file_path(resource, relpath)
        with self.transaction() as tx:
            size = source.stat().st_size
            tx.move(source, target)
            return self.add_file(
                resource.pk, relpath, size, md5, format_=format_, content=content, tags=tags
            )

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
        self.file_path(resource, relpath)  # refuse a bad name before writing anything
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"write-{secrets.token_hex(8)}"
        md5 = hashlib.md5()
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    md5.update(chunk)
            # Inside an outer transaction the move happens at its commit: keep ``tmp``.
            return self.place_file(
                resource, relpath, tmp, md5.hexdigest(), format_=format_, content=content
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete_files(self, resource: Resource, relpath: str) -> int:
        """Delete one file, or every file under a folder when ``relpath`` ends in '/'."""
        with self.transaction() as tx:
            if relpath.endswith("/"):
                doomed = [f for f in self.list_files(resource.pk) if f.path.startswith(relpath)]
            else:
                found = self.get_file(resource.pk, relpath)
                doomed = [found] if found else []
            if doomed:
                self._touch_resource(resource.pk)
            for row in doomed:
                self._exec(
                    "DELETE FROM files WHERE resource_pk=? AND path=?", (resource.pk, row.path)
                )
                path = self.file_path(resource, row.path)
                if path.exists():
                    tx.remove(path)
        return len(doomed)

    def refresh_catalog(
        self, resource: Resource, *, checksum: bool, delete: bool, append: bool, stats: bool
    ) -> Refreshed:
        """Bring a resource's rows in line with its folder, as XNAT's catalog refresh does:
        ``append`` records files found in the folder that no row names (hashed), ``delete``
        forgets rows whose file is gone, ``stats`` records the size and MD5 of files whose
        size changed, and ``checksum`` also fills in any missing MD5.  Files are read and
        hashed before the transaction; inside it each change is made only if what it was
        based on still holds (a row unchanged, a file still missing, a path still free), so
        a write meanwhile wins.  Files in another resource's folder below this one are that
        resource's."""
        folder = Path(self._resource_folder(resource.directory))
        rows = {r.path: r for r in self.list_files(resource.pk)}
        below = resource.directory.rstrip("/") + "/"
        nested: list[Path] = []
        for r in self._q(
            "SELECT directory FROM resources WHERE pk != ? AND directory LIKE ? ESCAPE '\\'",
            (resource.pk, like_prefix(below)),
        ):
            other = Path(self._resource_folder(str(r[0])))
            if folder in other.parents:  # LIKE narrowed the rows, ignoring case; this decides
                nested.append(other)
        done = Refreshed()
        gone: list[str] = []
        changed: list[tuple[str, int, str, FileRow]] = []
        for path, row in rows.items():
            on_disk = folder / path
            if not on_disk.is_file():
                if delete:
                    gone.append(path)
                continue
            size = on_disk.stat().st_size
            resized = (stats or checksum) and size != row.size
            if resized or (checksum and not row.md5):
                changed.append((path, size, md5_of(on_disk), row))
        found: list[tuple[str, int, str]] = []
        if append and folder.is_dir():
            for dirpath, _, names in os.walk(folder):
                here = Path(dirpath)
                if any(here == n or n in here.parents for n in nested):
                    continue
                for name in sorted(names):
                    on_disk = here / name
                    relpath = on_disk.relative_to(folder).as_posix()
                    if relpath in rows or on_disk.is_symlink() or not on_disk.is_file():
                        continue
                    try:
                        check_name("file path", relpath)
                    except StoreError:
                        done.skipped.append(relpath)
                        continue
                    found.append((relpath, on_disk.stat().st_size, md5_of(on_disk)))
        with self.transaction():
            for path in gone:
                if not (folder / path).is_file():
                    self._exec(
                        "DELETE FROM files WHERE resource_pk=? AND path=?", (resource.pk, path)
                    )
                    done.removed.append(path)
            for path, size, md5, row in changed:
                cur = self._conn.execute(
                    "UPDATE files SET size=?, md5=? WHERE resource_pk=? AND path=? AND size=? "
                    "AND md5=?",
                    (size, md5, resource.pk, path, row.size, row.md5),
                )
                if cur.rowcount:
                    done.updated.append(path)
            for path, size, md5 in found:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, '', '', '', ?)",
                    (resource.pk, path, size, md5, now_stamp()),
                )
                if cur.rowcount:
                    done.added.append(path)
            if done.added or done.removed or done.updated:
                self._touch_resource(resource.pk)
        return done

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
from collections.abc import Iterator
from pathlib import Path

from minixnat.store.clock import now_stamp
from minixnat.store.modified import ModifiedStamps
from minixnat.store.names import check_name
from minixnat.store.records import FileRow, Resource, StoreError


def md5_of(path: Path) -> str:
    """The MD5 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


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

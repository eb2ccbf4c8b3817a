"""Resume state under ``DIR/.xnat-downloader/``: what is verified, what is partial, and a lock.

``state.sqlite`` records, per local path, the remote URI, the *expected* size and MD5, and
whether the file is ``verified`` or ``partial``.  A partial file is resumed only if the
remote digest it was started for is still the one the server lists.  ``lock`` is held with
``flock`` for the whole run, so a second run on the same directory refuses to start.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xnat_downloader.errors import LocalWriteError, LockedError, UsageError
from xnat_downloader.plan.shard import Shard
from xnat_downloader.transfer import workdir
from xnat_downloader.transfer.localfs import write_failure


@dataclass(frozen=True)
class Record:
    local: str
    uri: str
    size: int | None
    md5: str | None
    status: str  # "verified" | "partial" (verify also says "planned": in the manifest only)
    mtime_ns: int | None = None  # of the final file when it was verified


def damaged(path: Path, exc: sqlite3.Error) -> str | None:
    """The line for a state database that is not one any more (cut short, overwritten), or
    None for other errors.  Moving it aside loses nothing: without a record, a file already
    in place is hashed and kept when it matches the server's MD5."""
    if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return None
    return (
        f"the state database {path} is damaged ({exc}): move it aside (mv {path} "
        f"{path}.damaged) and run the same command again; files already downloaded are "
        "checked against the server's MD5 and kept"
    )


def read_verified(database: Path) -> list[Record]:
    """The files a state database records as verified, read without the lock (a reader
    beside a running download sees its last commit) and without writing anything.  A
    database that cannot be read is a UsageError that says why."""
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT local, uri, size, md5 FROM files WHERE status='verified'"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UsageError(damaged(database, exc) or f"cannot read {database}: {exc}") from exc
    return [Record(local, uri, size, md5, "verified") for local, uri, size, md5 in rows]


class State:
    """The state database and lock of one output directory.  Close it to release the lock."""

    def __init__(self, outdir: Path, shard: Shard | None = None) -> None:
        self.folder = workdir.state_folder(outdir, shard)
        self.dir = self.folder.path
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create {self.dir}: {exc.strerror}"
            raise UsageError(msg) from exc
        self._lock: IO[str] | None = open(self.folder.lock, "a+")  # noqa: SIM115
        try:
            import fcntl

            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): runs are not protected from each other
            pass
        except OSError as exc:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            self._lock = None
            msg = (
                f"another xnat-downloader run ({holder}) is using {outdir}"
                + (f" as shard {shard}" if shard is not None else "")
                + "; wait for it to finish or choose another output directory"
            )
            raise LockedError(msg) from exc
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()}")
        self._lock.flush()
        self.path = self.folder.database
        self.db = sqlite3.connect(self.path)
        try:
            with self._writing():
                self._create()
        except LocalWriteError:
            self.close()
            raise

    def _create(self) -> None:
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (local TEXT PRIMARY KEY, uri TEXT NOT NULL, "
            "size INTEGER, md5 TEXT, status TEXT NOT NULL, updated REAL NOT NULL)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(files)")}
        if "mtime_ns" not in columns:  # state written by an earlier release
            self.db.execute("ALTER TABLE files ADD COLUMN mtime_ns INTEGER")
        self.db.commit()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write to the state database; its failure ends the run with one clear line
        (:class:`LocalWriteError`), the database rolled back to its last commit."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            try:
                self.db.rollback()
            except sqlite3.Error:
                pass  # the connection is beyond use; the file keeps its last commit
            why = damaged(self.path, exc) if isinstance(exc, sqlite3.Error) else None
            raise LocalWriteError(why or write_failure(self.path, exc)) from exc

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def all_records(self) -> list[Record]:
        rows = self.db.execute(
            "SELECT local, uri, size, md5, status, mtime_ns FROM files ORDER BY local"
        ).fetchall()
        return [Record(*row) for row in rows]

    def get(self, local: str) -> Record | None:
        row = self.db.execute(
            "SELECT local, uri, size, md5, status, mtime_ns FROM files WHERE local=?", (local,)
        ).fetchone()
        return Record(*row) if row else None

    def put(
        self,
        local: str,
        uri: str,
        size: int | None,
        md5: str | None,
        status: str,
        mtime_ns: int | None = None,
    ) -> None:
        with self._writing():
            self.db.execute(
                "INSERT OR REPLACE INTO files (local, uri, size, md5, status, updated, mtime_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (local, uri, size, md5, status, time.time(), mtime_ns),
            )
            self.db.commit()

    def put_verified(self, rows: list[tuple[str, str, int, str, int]]) -> None:
        """Record files as verified, (local, uri, size, md5, mtime_ns) each, in one commit."""
        now = time.time()
        with self._writing():
            self.db.executemany(
                "INSERT OR REPLACE INTO files (local, uri, size, md5, status, updated, mtime_ns) "
                "VALUES (?, ?, ?, ?, 'verified', ?, ?)",
                [(local, uri, size, md5, now, mtime) for local, uri, size, md5, mtime in rows],
            )
            self.db.commit()

    def forget(self, local: str) -> None:
        with self._writing():
            self.db.execute("DELETE FROM files WHERE local=?", (local,))
            self.db.commit()

"""The archive root's SQLite database: one connection, explicit transactions, recovery.

Layout of an archive root::

    ROOT/minixnat.sqlite      metadata (see schema.py), WAL mode
    ROOT/archive/…            the files, in XNAT's own on-disk layout (see files.py)
    ROOT/prearchive/…         sessions waiting to be archived (see prearchive.py)
    ROOT/journal/…            file moves of transactions under way (see journal.py)
    ROOT/tmp/…                uploads being received; never part of the archive

Every change that touches more than one row, or rows and files together, runs inside
``with store.transaction():``.  Nested uses join the outer transaction, so a delete of a
project is one transaction however many sessions it holds.  Outside a transaction a single
statement commits on its own.  All access goes through one lock: code inside a transaction
must not await (another coroutine on the same thread would join it).
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from minixnat.store import journal
from minixnat.store.journal import Journal
from minixnat.store.records import DEFAULT_SITE_ID, StoreError
from minixnat.store.schema import migrate

DB_NAME = "minixnat.sqlite"
REMEMBER_AT_MOST = 20_000
LOOK_LASTS_S = 0.05
T = TypeVar("T")
P = ParamSpec("P")
D = TypeVar("D", bound="Database")
# A site ID is one word: it starts every generated ID, which clients put in URLs and paths.
_SITE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def like_prefix(text: str) -> str:
    """A ``LIKE … ESCAPE '\\'`` pattern for the values that start with ``text``: its
    ``\\``, ``%`` and ``_`` taken literally, then anything."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def remembered_read(
    method: Callable[Concatenate[D, P], T],
) -> Callable[Concatenate[D, P], T]:
    """A read accessor whose answers are remembered while the database is unchanged
    (:meth:`Database.remembered`), keyed by its name and its (positional) arguments.  Its
    results must be immutable: they are shared by every caller."""

    name = method.__name__

    def remembering(store: D, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if kwargs:
            return method(store, *args, **kwargs)
        return store.remembered((name, *args), lambda: method(store, *args, **kwargs))

    remembering.__name__ = name
    remembering.__doc__ = method.__doc__
    return remembering


class Database:
    """The connection and its transactions.  The table mixins build on ``_q``/``_exec``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.archive_dir = self.root / "archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self.journal_dir = self.root / "journal"
        self._conn = sqlite3.connect(
            self.root / DB_NAME, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.row_factory = sqlite3.Row
        for pragma in (
            "journal_mode = WAL",
            "synchronous = NORMAL",  # with WAL: durable across a process crash, fast commits
            "foreign_keys = ON",
            "busy_timeout = 30000",  # another process (minixnat user add) may hold the lock
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self._lock = threading.RLock()
        self._journal: Journal | None = None
        self._remembered: dict[Hashable, object] = {}
        self._remembered_at: tuple[int, int] | None = None
        # The data_version a request read as it began, and when (see look_once), per task.
        self._looked: ContextVar[tuple[int, float] | None] = ContextVar(
            "minixnat_data_version", default=None
        )
        migrate(self._conn)
        # Every open store holds a shared lock on ROOT/minixnat.lock.  Only an opener that
        # can take it exclusively (nobody else has the archive open) recovers journals:
        # another process's journals may belong to transactions still under way.
        self._lockfile = open(self.root / "minixnat.lock", "a+b")  # noqa: SIM115
        self.recovered = 0
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.exclusive = False
        else:
            self.exclusive = True
            self.recovered = self._recover()
        fcntl.flock(self._lockfile, fcntl.LOCK_SH)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._lockfile.close()

    # -- statements --------------------------------------------------------------------
    def _q(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
            return row

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> int:
        """Run one statement; it commits at once unless a transaction is open."""
        with self._lock:
            cur = self._conn.execute(sql, args)
            return cur.lastrowid or 0

    def _next_id(self, code: str) -> str:
        with self.transaction():
            row = self._one("SELECT value FROM counters WHERE name=?", (code,))
            value = (row[0] if row else 0) + 1
            self._exec("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (code, value))
            return f"{self.site_id()}_{code}{value:05d}"

    # -- the site ID -------------------------------------------------------------------
    def site_id(self) -> str:
        """What generated IDs start with: :data:`DEFAULT_SITE_ID` unless set."""
        row = self._one("SELECT value FROM meta WHERE key='site_id'")
        return str(row[0]) if row else DEFAULT_SITE_ID

    def set_site_id(self, site_id: str) -> None:
        """Set the site ID for IDs generated from now on (existing IDs stay, as in XNAT).
        StoreError unless it is one word of letters, digits and ``_``, starting with a
        letter, at most 64 characters."""
        if not _SITE_ID.fullmatch(site_id):
            raise StoreError(
                f"Invalid site ID {site_id!r}: use one word of letters, digits and _, "
                "starting with a letter (at most 64 characters)"
            )
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('site_id', ?)", (site_id,))

    # -- answers remembered while nothing changes ----------------------------------------
    def remembered(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` for as long as the database is unchanged:
        forgotten as soon as anything is written to it, by this process or any other.

        ``key`` must name everything ``compute`` depends on besides the database (the
        caller, the path asked for); its result must be read-only to its users.  An error
        it raises is not remembered.  For lookups every request repeats, such as the path
        of a file GET: one cheap check of the database's version (once per request, see
        :meth:`look_once`) instead of a query for each level of the path.  Inside a
        transaction nothing is remembered or recalled: what it reads must be the truth."""
        with self._lock:
            if self._conn.in_transaction:
                return compute()
            looked = self._looked.get()
            fresh = looked is not None and time.monotonic() - looked[1] < LOOK_LASTS_S
            version = (
                looked[0] if fresh and looked is not None else self._data_version(),
                self._conn.total_changes,
            )
            if version != self._remembered_at:
                self._remembered.clear()
                self._remembered_at = version
            if key in self._remembered:
                return self._remembered[key]  # type: ignore[return-value]
        value = compute()
        with self._lock:
            # Kept only if nothing changed meanwhile, nothing is uncommitted (a rollback
            # would not show in the change count), and the memory stays bounded.
            if (
                self._remembered_at == version
                and version[1] == self._conn.total_changes
                and not self._conn.in_transaction
                and len(self._remembered) < REMEMBER_AT_MOST
            ):
                self._remembered[key] = value
        return value

    def look_once(self) -> None:
        """For the request under way (its asyncio task, and threads it starts): read the
        database's version once, now; :meth:`remembered` then goes by it for the next
        :data:`LOOK_LASTS_S` seconds of the request instead of asking again (a file GET
        does all its lookups well within that; a long request, such as an upload, asks
        afresh later).  The request sees every change committed before it began, by any
        process; this process's own writes are seen at once."""
        with self._lock:
            self._looked.set((self._data_version(), time.monotonic()))

    def _data_version(self) -> int:
        """Moves whenever another connection (another process) commits a change; this
        connection's own writes are counted by ``total_changes``."""
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Journal]:
        """Rows and file moves that become visible together, or not at all."""
        with self._lock:
            if self._journal is not None:
                yield self._journal
                return
            self._conn.execute("BEGIN IMMEDIATE")
            tx = self._journal = Journal(self.journal_dir, uuid.uuid4().hex)
            try:
                yield tx
                if tx.ops:
                    tx.write()
                    self._conn.execute("INSERT INTO journal_commits (id) VALUES (?)", (tx.id,))
                    tx.apply()
                self._conn.execute("COMMIT")
            except BaseException:
                self._journal = None
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if tx.applied or tx.path.exists():
                    tx.undo()
                self._prune_ops(tx)
                raise
            self._journal = None
            if tx.ops:
                tx.finish()
                self._conn.execute("DELETE FROM journal_commits WHERE id=?", (tx.id,))
                self._prune_ops(tx)

    def _recover(self) -> int:
        """Finish or undo the transactions a crash interrupted; return how many there were."""
        found = journal.pending(self.journal_dir)
        committed = {r[0] for r in self._q("SELECT id FROM journal_commits")}
        for path in found:
            tx = journal.load(path)
            if tx.id in committed:
                tx.finish()
            else:
                tx.undo()
            self._prune_ops(tx)
        self._exec("DELETE FROM journal_commits")
        return len(found)

    def _prune_ops(self, tx: Journal) -> None:
        """Folders that a transaction emptied, or created and then undid, go too."""
        for folder in {Path(op.final).parent for op in tx.ops}:
            self._prune_empty(folder, self.root)

    def _prune_empty(self, folder: Path, root: Path | None = None) -> None:
        """Remove empty folders from ``folder`` up to (not including) ``root`` (by default
        the archive folder)."""
        root = (root or self.archive_dir).resolve()
        folder = folder.resolve()
        while folder != root and root in folder.parents and folder.parent != self.root:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

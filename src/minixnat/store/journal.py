"""Crash-safe file moves for one store transaction.

A write to the archive changes two things that cannot share one transaction: SQLite rows
and files on disk.  A :class:`Journal` makes them one.  During a transaction the store only
*records* what should happen to files (a staged file moves to its final place; a file or
folder goes away).  At commit time:

1. the journal is written to ``ROOT/journal/{id}.json`` and fsynced;
2. the moves are applied.  Whatever stood at a final place is first renamed to a backup
   name beside it, so nothing is lost yet;
3. SQLite commits the rows together with a ``journal_commits`` row naming the journal;
4. the backups are removed and the journal is deleted.

After a crash, :func:`recover` reads every journal left behind.  One whose id SQLite
committed is finished (step 4); any other is undone: each move is reversed, newest first,
so staged files return to where they came from and backups return to their places.  Either
every file and row of a transaction is visible, or none is.

Every step is a rename within one file system, and every step can be undone by looking at
which of ``source``, ``final`` and ``backup`` exist, so recovery may itself be interrupted
and run again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Op:
    """Move ``source`` to ``final`` (``source`` None: remove ``final``).

    ``backup`` is where whatever stands at ``final`` is kept until the commit.
    """

    source: str | None
    final: str
    backup: str


class Journal:
    """The file operations of one transaction, in the order they were asked for."""

    def __init__(self, folder: Path, txid: str) -> None:
        self.folder = folder
        self.id = txid
        self.ops: list[Op] = []
        self.applied = 0

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.json"

    def _backup_for(self, final: Path) -> str:
        return str(final.with_name(f".{final.name}.{self.id}.{len(self.ops)}.bak"))

    def move(self, source: Path, final: Path) -> None:
        """At commit, ``source`` becomes ``final`` (replacing what stands there)."""
        self.ops.append(Op(str(source), str(final), self._backup_for(final)))

    def remove(self, final: Path) -> None:
        """At commit, the file or folder ``final`` goes away."""
        self.ops.append(Op(None, str(final), self._backup_for(final)))

    # -- commit ------------------------------------------------------------------------
    def write(self) -> None:
        """Make the intentions durable before any of them is carried out."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump([asdict(op) for op in self.ops], out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.folder)

    def apply(self) -> None:
        """Carry out every operation; on failure the caller undoes what was done."""
        for op in self.ops:
            final = Path(op.final)
            if os.path.lexists(final):
                os.replace(final, op.backup)
            self.applied += 1  # from here on, undo has something to look at
            if op.source is not None:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(op.source, final)

    def finish(self) -> None:
        """After the commit: drop the backups, then the journal."""
        for op in self.ops:
            _remove(Path(op.backup))
        self.path.unlink(missing_ok=True)

    def undo(self) -> None:
        """Reverse whatever was applied (safe to run more than once), then drop the journal."""
        for op in reversed(self.ops):
            undo_op(op)
        self.path.unlink(missing_ok=True)


def undo_op(op: Op) -> None:
    final, backup = Path(op.final), Path(op.backup)
    if op.source is not None:
        source = Path(op.source)
        if os.path.lexists(final) and not os.path.lexists(source):
            # The staged file reached its place: send it back where it came from.
            source.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, source)
    if os.path.lexists(backup):
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)  # only folders that later operations created are left
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(backup, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> Journal:
    """A journal as written by :meth:`Journal.write`."""
    journal = Journal(path.parent, path.stem)
    journal.ops = [Op(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
    journal.applied = len(journal.ops)
    return journal


def pending(folder: Path) -> list[Path]:
    """Journals left by transactions that did not finish, oldest first."""
    if not folder.is_dir():
        return []
    for partial in folder.glob("*.tmp"):
        partial.unlink(missing_ok=True)  # never complete, so nothing was applied
    return sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)

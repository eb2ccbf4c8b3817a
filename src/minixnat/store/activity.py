"""The activity tracker's records: each user's imports, from the first byte to the result.

Part of :class:`minixnat.store.Store`.  An import is recorded when its body starts to
arrive (``receiving``), moves to ``processing`` once the archive is on disk, and ends
``done`` (with the number of files and the URIs made) or ``failed`` (with the reason the
caller was given).  The end is written in the same transaction as the sessions it made, so
the tracker never says done for data that is not there.  An import cut short by a crash or a
stop is marked failed when the server starts again (:meth:`ActivityTables.end_interrupted`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from minixnat.errors import MinixnatError
from minixnat.store.clock import now_stamp
from minixnat.store.db import Database

RECEIVING, PROCESSING, DONE, FAILED = "receiving", "processing", "done", "failed"
STATES = (RECEIVING, PROCESSING, DONE, FAILED)
RUNNING = (RECEIVING, PROCESSING)
#: How many ended imports are kept per user (the tracker lists the newest).
KEEP = 200
INTERRUPTED = "The server stopped before this import finished; nothing of it was kept."


@dataclass(frozen=True)
class Activity:
    id: int
    login: str
    project: str
    filename: str
    destination: str  # "archive", "prearchive", or "" until the body is in
    state: str
    size: int
    files: int
    message: str
    uris: tuple[str, ...]
    started: str
    updated: str

    @property
    def running(self) -> bool:
        return self.state in RUNNING


class ActivityTables(Database):
    """Activity rows."""

    def start_activity(self, login: str, *, project: str = "", destination: str = "") -> int:
        """Record an import whose body is about to arrive; its id.  Project and destination
        may be filled in when the body is in (:meth:`received_activity`)."""
        now = now_stamp()
        with self.transaction():
            # The oldest ended imports beyond the KEEP newest go: the tracker is a recent
            # history, not an archive (running ones always stay).
            self._exec(
                "DELETE FROM activities WHERE login=? AND state IN (?, ?) AND id <= "
                "(SELECT id FROM activities WHERE login=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (login, DONE, FAILED, login, KEEP - 1),
            )
            return self._exec(
                "INSERT INTO activities (login, project, destination, state, started, updated) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (login, project, destination, RECEIVING, now, now),
            )

    def received_activity(
        self, activity_id: int, *, filename: str, size: int, project: str, destination: str
    ) -> None:
        """The body is on disk: the import is processing it, into ``destination``."""
        self._exec(
            "UPDATE activities SET state=?, filename=?, size=?, project=?, destination=?, "
            "updated=? WHERE id=? AND state=?",
            (PROCESSING, filename, size, project, destination, now_stamp(), activity_id, RECEIVING),
        )

    def end_activity(
        self,
        activity_id: int,
        state: str,
        *,
        files: int = 0,
        message: str = "",
        uris: list[str] | None = None,
    ) -> None:
        """Done (``files`` stored, ``uris`` made) or failed (``message`` says why)."""
        if state not in (DONE, FAILED):
            msg = f"an import ends done or failed, not {state!r}"
            raise ValueError(msg)
        self._exec(
            "UPDATE activities SET state=?, files=?, message=?, uris=?, updated=? "
            "WHERE id=? AND state IN (?, ?)",
            (state, files, message, "\n".join(uris or []), now_stamp(), activity_id, *RUNNING),
        )

    @contextmanager
    def failing_activity(self, activity_id: int, *, otherwise: str) -> Iterator[None]:
        """End the import failed if the block raises: with a refusal's own message (the one
        its caller gets), else with ``otherwise``.  An import that ended stays as it is."""
        try:
            yield
        except MinixnatError as exc:
            self.end_activity(activity_id, FAILED, message=exc.message)
            raise
        except BaseException:
            self.end_activity(activity_id, FAILED, message=otherwise)
            raise

    def get_activity(self, activity_id: int) -> Activity | None:
        row = self._one("SELECT * FROM activities WHERE id=?", (activity_id,))
        return _activity(row) if row else None

    def recent_activities(self, login: str, limit: int = 50) -> list[Activity]:
        """``login``'s imports, newest first."""
        rows = self._q(
            "SELECT * FROM activities WHERE login=? ORDER BY id DESC LIMIT ?", (login, limit)
        )
        return [_activity(r) for r in rows]

    def running_activities(self, login: str) -> int:
        """How many of ``login``'s imports are still receiving or processing."""
        row = self._one(
            "SELECT COUNT(*) FROM activities WHERE login=? AND state IN (?, ?)",
            (login, *RUNNING),
        )
        return int(row[0]) if row else 0

    def end_interrupted(self) -> int:
        """Mark imports left running by a crash or stop as failed; how many there were."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE activities SET state=?, message=?, updated=? WHERE state IN (?, ?)",
                (FAILED, INTERRUPTED, now_stamp(), *RUNNING),
            )
            return cur.rowcount


def _activity(row: object) -> Activity:
    values = dict(row)  # type: ignore[call-overload]
    uris = tuple(u for u in values.pop("uris").split("\n") if u)
    return Activity(uris=uris, **values)

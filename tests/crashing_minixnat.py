"""``minixnat`` with a crash planted in its file journal, for the crash-safety tests.

``CRASH_AT`` says where the process dies with ``os._exit`` (as abruptly as ``kill -9``:
no cleanup, no flush beyond what already reached the kernel):

- ``rename:N``: instead of the journal's (N+1)-th rename;
- ``applied``: after every file move of a transaction, before SQLite commits;
- ``finish``: after the commit, before the backups and the journal are removed;
- ``snapshot:N``: in a snapshot run, as it stores the N-th scan's pictures (its files
  written, the transaction not committed).

Run as ``python -m tests.crashing_minixnat serve --root ROOT --port 0``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from minixnat.cli import main
from minixnat.store import journal

KILLED = 137


class _CrashingOs:
    """The journal's view of ``os``: everything as usual until the planted rename."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.renames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        if self.renames >= self.limit:
            os._exit(KILLED)
        self.renames += 1
        os.replace(src, dst)


def plant(point: str) -> None:
    kind, _, count = point.partition(":")
    if kind == "rename":
        journal.os = _CrashingOs(int(count))  # type: ignore[assignment]
    elif kind == "applied":
        apply = journal.Journal.apply

        def apply_then_die(self: journal.Journal) -> None:
            apply(self)
            os._exit(KILLED)

        journal.Journal.apply = apply_then_die  # type: ignore[method-assign]
    elif kind == "snapshot":
        from minixnat.snapshots import generate

        store_pictures = generate._store_pictures
        calls = [0]

        def store_then_die(*args: Any) -> None:
            store_pictures(*args)
            calls[0] += 1
            if calls[0] >= int(count):
                os._exit(KILLED)

        generate._store_pictures = store_then_die  # type: ignore[assignment]
    elif kind == "finish":
        journal.Journal.finish = lambda self: os._exit(KILLED)  # type: ignore[method-assign]
    else:
        msg = f"unknown crash point {point!r}"
        raise SystemExit(msg)


if __name__ == "__main__":
    plant(os.environ["CRASH_AT"])
    sys.exit(main())

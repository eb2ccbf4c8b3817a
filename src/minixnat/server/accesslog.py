"""``serve --access-log FILE`` (or ``-``): one line per request.

``ISO-time client method path status bytes ms``.  Secrets never reach the log: the query
string is left out (``?…`` marks that there was one) and the secret of an alias-token
validation path is masked.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from minixnat.http.messages import Request

MASK = "***"


def loggable_path(request: Request) -> str:
    """The path as logged: no query string, no token secrets."""
    segments = request.segments
    if segments[-4:-2] == ["tokens", "validate"] or segments[-3:-1] == ["tokens", "validate"]:
        # /data/services/tokens/validate/{alias}/{secret}
        path = "/" + "/".join([*segments[:-1], MASK])
    else:
        path = request.raw_path
    return path + ("?…" if request.query_list else "")


class AccessLog:
    """Appends one line per request; safe to call from any thread."""

    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self._own = target != "-"
        self._out: TextIO = (
            open(Path(target), "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            if self._own
            else sys.stdout
        )

    def write(self, client: str, method: str, path: str, status: int, size: int, ms: float) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        line = f"{stamp} {client or '-'} {method} {path} {status} {size} {ms:.1f}\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def close(self) -> None:
        if self._own:
            self._out.close()

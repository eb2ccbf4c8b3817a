"""One root for every error minixnat raises on purpose, and the HTTP status each stands for.

Handlers raise what they mean (a store refusal, an unreadable upload, a conflict); the
server turns any :class:`MinixnatError` into XNAT's status page with ``status`` in one place
(``server/app.py``).  Anything else that escapes a handler is a bug and answers 500.
"""

from __future__ import annotations


class MinixnatError(Exception):
    """A refusal with an HTTP status (400 unless a subclass or the caller says otherwise)."""

    status = 400

    def __init__(
        self,
        message: str = "",
        status: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or []

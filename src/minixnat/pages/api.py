"""How the pages change data: through the REST API, as the user who sent the form.

The pages never write to the store themselves.  Each form becomes one REST request that
the server (``server/internal.py``) runs through the same route table, handlers and
transactions as a request from outside, so a page refuses exactly what the API refuses,
with the API's message.  This module is the pages' side of that seam: the call's shape and
its answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minixnat.http.bodies import Body
from minixnat.store import User


@dataclass(frozen=True)
class Answer:
    """The REST API's answer to one call: status, body, and the message of a refusal."""

    status: int
    body: bytes = b""
    content_type: str = ""
    message: str = ""
    location: str = ""

    @property
    def ok(self) -> bool:
        return self.status < 400

    def json(self) -> Any:
        return json.loads(self.body)

    def rows(self) -> list[dict[str, str]]:
        """The rows of a ``format=json`` ResultSet."""
        result: list[dict[str, str]] = self.json()["ResultSet"]["Result"]
        return result


class Api(Protocol):
    """Calls the REST API in-process as ``user``.  ``spooled`` is a body already received
    to disk (the upload form's file), handed to the handler instead of ``body``; ``activity``
    is the activity-tracker record an import belongs to."""

    async def __call__(
        self,
        user: User,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        body: bytes = b"",
        content_type: str = "",
        spooled: Body | None = None,
        activity: int = 0,
    ) -> Answer: ...

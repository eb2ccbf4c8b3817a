"""The REST API called from inside the server, for the pages (``pages/api.py``).

A call is a :class:`~minixnat.http.messages.Request` like any other, dispatched through the
route table as ``user``: authentication is skipped (the page has already identified its
visitor), everything after it is the path an outside request takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from minixnat.errors import MinixnatError
from minixnat.http.bodies import Body
from minixnat.http.messages import Message, Response, build_request
from minixnat.importer.unpack import Limits
from minixnat.pages.api import Answer
from minixnat.rest import routes
from minixnat.store import Store, User


class InternalApi:
    """Implements :class:`minixnat.pages.api.Api` over the REST route table."""

    def __init__(self, store: Store, sessions: routes.Sessions, limits: Limits) -> None:
        self.store = store
        self.sessions = sessions
        self.limits = limits

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
    ) -> Answer:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            chunk, sent = (b"" if sent else body), True
            return {"type": "http.request", "body": chunk, "more_body": False}

        headers = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode("latin-1"),
            "query_string": urlencode(list(query)).encode("latin-1"),
            "headers": headers,
            "client": ("minixnat-pages", 0),
        }
        request = build_request(scope, receive)
        request.spooled, request.activity = spooled, activity
        call = routes.Call(
            request, self.store, self.sessions, user, None, "", [], self.limits, no_range=False
        )
        try:
            response = await routes.dispatch(call)
        except MinixnatError as err:
            return Answer(err.status, message=err.message)
        finally:
            if request.spooled is not None:  # the handler never took it
                request.spooled.discard()
        if not isinstance(response, Response):
            return Answer(500, message=f"{method} {path} answered with a stream, not a document.")
        location = {k.lower(): v for k, v in response.headers}.get("location", "")
        message = response.body.decode("utf-8", "replace") if response.status >= 400 else ""
        return Answer(response.status, response.body, response.content_type, message, location)

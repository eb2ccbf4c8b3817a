"""Minimal HTTP plumbing over raw ASGI: a request, plain and streamed responses, errors.

minixnat speaks ASGI directly rather than through a framework: XNAT's URL grammar is
hierarchical and variable-depth (``…/scans/1,2/resources/DICOM/files/sub/a.dcm``), and the
fault switches need byte-level control of the body (cut a connection part-way, pace it).
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from minixnat.errors import MinixnatError
from minixnat.store.names import has_control_characters

if TYPE_CHECKING:
    from minixnat.http.bodies import Body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BadPath(Exception):
    """The URL path contains a traversal trick (``..``, encoded slash, NUL, backslash)."""


class RequestCut(Exception):
    """The client went away before it sent the whole body: nothing of it may be kept."""


@dataclass
class Request:
    method: str
    raw_path: str
    segments: list[str]
    query: dict[str, str]
    query_list: list[tuple[str, str]]
    headers: dict[str, str]
    cookies: dict[str, str]
    client: str
    receive: Receive
    scheme: str = "http"
    #: Set only for the server's own calls (the pages' upload form): a body already
    #: received to disk, which :func:`minixnat.http.bodies.receive` hands over, and the
    #: activity-tracker record the import belongs to.
    spooled: Body | None = None
    activity: int = 0

    def param(self, name: str, default: str = "") -> str:
        """A query parameter, matched case-insensitively as Restlet forms do."""
        if name in self.query:
            return self.query[name]
        lowered = name.lower()
        for key, value in self.query.items():
            if key.lower() == lowered:
                return value
        return default

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("true", "1", "yes")

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; :class:`RequestCut` if the client goes away before it is
        whole (never a short body taken for the whole)."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise RequestCut("the client went away before the request's body was whole")
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def body(self, limit: int = 64 * 1024 * 1024) -> bytes:
        parts: list[bytes] = []
        total = 0
        async for chunk in self.body_chunks():
            total += len(chunk)
            if total > limit:
                raise HttpError(413, "Request body too large for this call.")
            parts.append(chunk)
        return b"".join(parts)

    async def form(self, limit: int = 1024 * 1024) -> list[tuple[str, str]]:
        """An ``application/x-www-form-urlencoded`` body as ordered (name, value) pairs."""
        body = await self.body(limit=limit)
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def split_path(raw: str) -> list[str]:
    """Split a raw (still percent-encoded) path into decoded segments; refuse tricks.

    An encoded slash or backslash would let one segment smuggle a path separator past the
    router, so it is refused before decoding, as are ``.``/``..`` segments and NUL bytes.
    """
    lowered = raw.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in raw:
        raise BadPath(raw)
    parts = [part for part in raw.split("/") if part]
    segments = [unquote(part) for part in parts] if "%" in raw else parts
    if "." in segments or ".." in segments or has_control_characters("".join(segments)):
        raise BadPath(raw)
    return segments


def parse_cookies(header: str) -> dict[str, str]:
    """The ``name=value`` pairs of a Cookie header (several headers arrive joined by ", ").
    A value in double quotes loses them; a pair with no ``=`` or no name, and the
    ``$Version``-style attributes of old clients, are skipped one by one (as Tomcat does:
    one bad pair does not cost the others); of two pairs with one name the last wins."""
    cookies: dict[str, str] = {}
    for pair in header.replace(", ", "; ").split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip()
        if not eq or not name or name.startswith("$"):
            continue
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


def build_request(scope: Scope, receive: Receive) -> Request:
    raw_path_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw_path_bytes.decode("latin-1").split("?", 1)[0]
    query_string = scope.get("query_string", b"").decode("latin-1")
    query_list = parse_qsl(query_string, keep_blank_values=True) if query_string else []
    query: dict[str, str] = {}
    for key, value in query_list:
        query.setdefault(key, value)
    headers: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    cookies = parse_cookies(headers["cookie"]) if "cookie" in headers else {}
    client = scope.get("client") or ("", 0)
    return Request(
        method=scope["method"].upper(),
        raw_path=raw_path,
        segments=split_path(raw_path),
        query=query,
        query_list=query_list,
        headers=headers,
        cookies=cookies,
        client=str(client[0]),
        receive=receive,
        scheme=str(scope.get("scheme", "http")),
    )


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain;charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


FILE_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileSlice:
    """``count`` bytes of the file at ``path`` from ``offset``: a body that is a stored file
    (or a range of one), which the server may send without reading it into memory."""

    path: str
    offset: int
    count: int

    async def chunks(self, skip: int = 0) -> AsyncIterator[bytes]:
        """The slice's bytes after the first ``skip``, in chunks of at most 1 MiB; ends
        early (never reads past ``count``) if the file shrank under us, and the client
        then sees a short body."""
        remaining = self.count - skip
        if remaining <= 0:
            return
        with open(self.path, "rb", buffering=0) as handle:
            if self.offset + skip:
                handle.seek(self.offset + skip)
            while remaining > 0:
                data = handle.read(min(FILE_CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data


@dataclass
class StreamResponse:
    """A streamed body.  ``chaos`` marks file and archive bodies the drop switch may cut;
    ``file`` says the body is exactly that slice of a stored file (``chunks`` reads it)."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_length: int | None = None
    chaos: bool = True
    file: FileSlice | None = None

    @classmethod
    def of_file(
        cls, body: FileSlice, status: int, content_type: str, headers: list[tuple[str, str]]
    ) -> StreamResponse:
        return cls(body.chunks(), status, content_type, headers, body.count, file=body)


AnyResponse = Response | StreamResponse


class HttpError(MinixnatError):
    """Raised anywhere in a handler with the exact status to answer."""

    def __init__(
        self, status: int, message: str = "", headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message, status, headers)


def status_page(status: int, message: str = "") -> bytes:
    """Restlet 1.1's default HTML status page, the shape pyxnat and xnatpy parse (<h3>)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    text = html.escape(message or reason)
    return (
        "<html>\n<head>\n   <title>Status page</title>\n</head>\n<body>\n"
        f'<h3>{text}</h3><p>You can get technical details <a href="http://www.w3.org/'
        f'Protocols/rfc2616/rfc2616-sec10.html">here</a>.<br>\n'
        'Please continue your visit at our <a href="/">home page</a>.\n</p>\n</body>\n</html>\n'
    ).encode()


def error_response(err: MinixnatError) -> Response:
    return Response(
        err.status,
        status_page(err.status, err.message),
        "text/html;charset=UTF-8",
        list(err.headers),
    )


def text(body: str, status: int = 200, content_type: str = "text/plain;charset=UTF-8") -> Response:
    return Response(status, body.encode(), content_type)

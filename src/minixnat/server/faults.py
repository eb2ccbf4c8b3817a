"""The fault switches of ``minixnat serve`` and the response sender they act on.

``--latency-ms`` delays every request, ``--error-rate`` answers 503, ``--drop-rate`` cuts
file and archive bodies part-way, ``--conn-mbps`` paces each body; ``--chaos-seed`` makes
the random ones reproducible.  A client that goes away mid-body, and a body cut on purpose,
end the response quietly: one debug line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from minixnat.http.messages import AnyResponse, HttpError, Receive, Response, Send
from minixnat.server.zerocopy import send_directly

log = logging.getLogger("minixnat")
PACE_PIECE = 256 * 1024
WATCH_ABOVE = 1024 * 1024


@dataclass
class Faults:
    """The fault switches (CONTRACT §3)."""

    latency_ms: int = 0
    no_range: bool = False
    drop_rate: float = 0.0
    error_rate: float = 0.0
    chaos_seed: int | None = None
    session_ttl: float = 900.0
    conn_mbps: float = 0.0


class ClientGone(Exception):
    """The client closed the connection before the body was sent."""


class BodyCut(ConnectionAbortedError):
    """Ends a response ``--drop-rate`` cuts: the server closes the connection part-way."""


class QuietCuts(logging.Filter):
    """Keeps the server's error log from reporting a ``BodyCut`` as an application error
    with its traceback (uvicorn logs whatever ends a response early): it is the fault the
    operator asked for, not a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BodyCut))


class Chaos:
    """The random faults, drawn from one seeded generator."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.chaos_seed)

    async def delay(self) -> None:
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)

    def maybe_refuse(self) -> None:
        if self.faults.error_rate and self.rng.random() < self.faults.error_rate:
            raise HttpError(
                503,
                "Service temporarily unavailable (minixnat --error-rate).",
                [("Retry-After", "1")],
            )

    def cut_point(self, expected: int | None) -> int | None:
        """Where to cut a body marked ``chaos``, or None to send it whole."""
        if self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
            return self.rng.randrange(0, max(1, expected or 1024 * 1024))
        return None


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (ASGI's ``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def send_response(
    response: AnyResponse,
    send: Send,
    receive: Receive,
    cookies: list[tuple[str, str]],
    chaos: Chaos,
    *,
    head: bool = False,
    secure: bool = False,
) -> int:
    """Send ``response`` over ASGI; return how many body bytes went out.  ``head``: the
    request was a HEAD, answered with the head alone; a streamed body is then not
    produced at all (no file read, no zip built only to be dropped).  ``secure``: it came
    over HTTPS, and cookies are marked to go back only that way (as Tomcat marks them)."""
    headers = [(b"content-type", response.content_type.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in response.headers]
    for name, value in cookies:
        # Lax keeps the session cookie off other sites' form posts; an empty value
        # deletes the cookie (logging out, or a session the server no longer knows).
        expiry = "" if value else " Max-Age=0;"
        cookie = f"{name}={value}; Path=/;{expiry} HttpOnly; SameSite=Lax"
        if secure:
            cookie += "; Secure"
        headers.append((b"set-cookie", cookie.encode()))
    if isinstance(response, Response):
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if head else response.body
        await send({"type": "http.response.body", "body": body})
        return len(body)
    if response.content_length is not None:
        headers.append((b"content-length", str(response.content_length).encode()))
    cut_at = chaos.cut_point(response.content_length) if response.chaos else None
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if head:
        await _stop(response.chunks)
        with contextlib.suppress(ClientGone):
            await _body(send, b"", more=False)
        return 0
    sent = 0
    started = time.monotonic()
    rate = chaos.faults.conn_mbps * 1_000_000
    chunks = response.chunks
    if response.file is not None and cut_at is None and not rate:
        # A stored file nothing is to cut or pace: from the page cache to the socket, as
        # far as the socket takes it now; the rest (if any) the ordinary way below.
        sent = send_directly(send, response.file)
        if sent == response.file.count:  # all of it: end the response (nothing was read)
            with contextlib.suppress(ClientGone):
                await _body(send, b"", more=False)
            return sent
        if sent:
            chunks = response.file.chunks(skip=sent)
    gone = asyncio.Event()
    # Only a long body is worth watching for a disconnect; a short one is sent at once.
    long_body = response.content_length is None or response.content_length > WATCH_ABOVE
    watcher = asyncio.create_task(_watch(receive, gone)) if long_body else None
    try:
        # One chunk behind, so that the last one goes out with more_body=False: a short
        # body then costs one write after the head, not two.
        pending: bytes | None = None
        async for chunk in chunks:
            if gone.is_set():
                raise ClientGone
            if pending is not None:
                sent = await _pieces(send, pending, sent, cut_at, rate, started, more=True)
            pending = chunk
        sent = await _pieces(send, pending or b"", sent, cut_at, rate, started, more=False)
    except ClientGone:
        log.debug("client went away after %d bytes", sent)
    finally:
        if watcher is not None:
            watcher.cancel()
        await _stop(response.chunks)
        if chunks is not response.chunks:
            await _stop(chunks)
    return sent


async def _stop(body: AsyncIterator[bytes]) -> None:
    """Stop producing a body nobody reads (zip and tar streams build it as it is read)."""
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


async def _pieces(
    send: Send,
    chunk: bytes,
    sent: int,
    cut_at: int | None,
    rate: float,
    started: float,
    *,
    more: bool,
) -> int:
    """Send one chunk, paced (``rate`` bytes/s, 0: unpaced) and perhaps cut at ``cut_at``;
    return the bytes sent so far."""
    piece_size = PACE_PIECE if rate else max(1, len(chunk))
    offsets = range(0, len(chunk), piece_size) if chunk else range(1)
    for offset in offsets:
        piece = chunk[offset : offset + piece_size]
        last = not more and offset + piece_size >= len(chunk)
        if cut_at is not None and sent + len(piece) > cut_at:
            await _body(send, piece[: cut_at - sent], more=True)
            # Abort the response: uvicorn closes the connection, and the client sees a
            # body shorter than promised (or a broken chunked stream).
            log.debug("--drop-rate cut a body after %d bytes", cut_at)
            raise BodyCut("minixnat --drop-rate cut this body")
        await _body(send, piece, more=not last)
        sent += len(piece)
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return sent


async def _body(send: Send, piece: bytes, *, more: bool) -> None:
    try:
        await send({"type": "http.response.body", "body": piece, "more_body": more})
    except OSError as exc:  # the transport failed under us: the client is gone
        raise ClientGone from exc

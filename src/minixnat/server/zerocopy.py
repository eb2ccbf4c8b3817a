"""Stored files sent from the page cache straight to the socket, under uvicorn.

File GETs are most of a server's traffic.  Sending one the ordinary ASGI way reads the
file into a Python ``bytes`` and copies that into the socket: two copies, an allocation
and a generator per file, a quarter of minixnat's time on 2,000 files of 300 KiB (nginx
uses ``sendfile(2)`` and does neither).  ASGI gives an application no way to hand over a
file, and uvicorn has no extension for it, so for uvicorn's httptools protocol (the one
``minixnat serve`` and :func:`minixnat.testing.start` run) :func:`send_directly` writes
the body with ``os.sendfile`` on the connection's own socket, as far as the socket takes
it without waiting, and tells the protocol how many body bytes went out.  Whatever is
left goes the ordinary way, through the transport and its flow control.

Why the bytes cannot get out of order: the head has already been handed to the
transport, which writes at once when nothing is queued; the transport is checked to have
nothing queued; and the event loop runs one task at a time, so nothing writes between
that check and the ``sendfile``.  Any other server, protocol, TLS, or a transport in any
doubt gets 0, and the caller sends the whole body itself.  (A HEAD never gets here: its
caller answers it with the head alone.)
"""

from __future__ import annotations

import os
from typing import Any

from minixnat.http.messages import FileSlice, Send

# The response cycle of uvicorn's httptools protocol: the object whose bound ``send`` an
# application receives.  Its transport, request scope and count of body bytes still to
# come are what this module reads and keeps right.
_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"


def send_directly(send: Send, body: FileSlice) -> int:
    """Write as much of ``body`` to the connection behind ``send`` as its socket takes now,
    after the response head; return how many bytes that was (0: none, send it all)."""
    cycle: Any = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != _HTTPTOOLS:
        return 0
    transport = cycle.transport
    if (
        cycle.disconnected
        or not cycle.response_started
        or cycle.expected_content_length != body.count
        or transport.is_closing()
        or transport.get_write_buffer_size()
        or transport.get_extra_info("sslcontext") is not None
    ):
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    out = sock.fileno()
    sent = 0
    try:
        with open(body.path, "rb", buffering=0) as handle:
            while sent < body.count:
                n = os.sendfile(out, handle.fileno(), body.offset + sent, body.count - sent)
                if n == 0:  # the file shrank: the ordinary path ends the body short
                    break
                sent += n
    except OSError:
        # BlockingIOError: the socket is full for now.  Anything else (the client went,
        # the file went): the ordinary path meets it too and ends the response as usual.
        pass
    cycle.expected_content_length -= sent
    return sent

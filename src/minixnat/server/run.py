"""Run the app under uvicorn: the listening socket and the server, in the foreground (the
``serve`` command, in one process or several) or in a thread (the pytest fixture)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from minixnat.lifetime import end_with_parent
from minixnat.server.app import App
from minixnat.server.faults import QuietCuts

log = logging.getLogger("minixnat")
WORKERS_STOP_S = 30.0
QUIET_CUTS = QuietCuts()


def listening_socket(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A bound, listening TCP socket (port 0: a free one).  OSError if it cannot bind.
    ``shared``: other sockets may listen on the same port (see :func:`listening_sockets`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit this: a response's head and body go out as two writes,
    # and with Nagle's algorithm the second waited for the client's delayed ACK (~40 ms
    # on every request after the first of a keep-alive connection).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(256)
    return sock


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port, one per worker process.  With one socket
    shared by all, the process that wakes first accepts a whole burst of connections and
    the others idle; with a socket each (``SO_REUSEPORT``), the kernel deals each new
    connection to one of them by a hash of its addresses: spread over all, though a few
    connections can split unevenly (16 over two workers: 11 to 5 is common)."""
    if count == 1:
        return [listening_socket(host, port)]
    socks = [listening_socket(host, port, shared=True)]
    try:
        chosen = socks[0].getsockname()[1]  # port 0: all share the one picked first
        socks += [listening_socket(host, chosen, shared=True) for _ in range(count - 1)]
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass(frozen=True)
class Tls:
    """A certificate chain and its private key (PEM files): serve HTTPS with them."""

    cert: Path
    key: Path

    @classmethod
    def given(cls, cert: Path | None, key: Path | None, *, both: str) -> Tls | None:
        """The pair to serve HTTPS with, checked (:meth:`check`); None when neither is
        given.  ValueError, saying ``both``, when only one is."""
        if not (cert or key):
            return None
        if not (cert and key):
            raise ValueError(both)
        tls = cls(Path(cert), Path(key))
        tls.check()
        return tls

    def check(self) -> None:
        """Load the pair once, so that a wrong path or a key that does not match the
        certificate is said before anything listens.  ValueError names what is wrong."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            msg = f"cannot use the certificate {self.cert} with the key {self.key}: {exc}"
            raise ValueError(msg) from exc


def url_of(sock: socket.socket, tls: Tls | None = None) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{host}]:{port}"
    return f"{scheme}://{host}:{port}"


def server_for(app: App, tls: Tls | None = None) -> uvicorn.Server:
    return _Server(config_for(app, tls))


def config_for(app: App, tls: Tls | None = None) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
        http="httptools",
        # uvloop (a dependency of the server, where it builds): a file GET costs ~13 % less
        # CPU than on asyncio's own loop (2,000 GETs of 300 KiB, minixnat's CPU ticks).
        loop="auto",
        # No proxy header rewriting: minixnat is not deployed behind a proxy, and the
        # access log should name the real peer, not what X-Forwarded-For claims.  It also
        # drops a middleware from every request (a cold pass over 2,000 small files, 6
        # alternating runs: median 0.295 s against 0.31 s).
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )
    # After the Config, which sets up uvicorn's loggers (adding a filter twice keeps one).
    logging.getLogger("uvicorn.error").addFilter(QUIET_CUTS)
    return config


def run_workers(
    socks: list[socket.socket],
    primary: Callable[[], App],
    worker: Callable[[], App],
    tls: Tls | None = None,
) -> None:
    """Serve on ``socks`` with one process each (HTTPS with ``tls``), until SIGINT or
    SIGTERM.

    This process serves ``socks[0]`` with the app ``primary()`` makes; for each other
    socket a forked process serves it with ``worker()``'s app.  Forked before anything
    else starts (the callers make their apps, database connections and threads after the
    fork), so no process inherits another's.  A signal to this process is passed on to
    the workers, which finish their requests as it does; it returns once they have ended.
    A worker also ends when this process dies without cleaning up (``kill -9``): the
    kernel kills it, so a dead server never leaves processes answering on its port.
    After SIGINT or SIGTERM every process cleans up and this function returns; also when
    the signal comes before the server is up (the address line printed, uvicorn not yet
    listening for signals): the server then stops at its first tick.
    """
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop_requested) for sig in stops}  # workers inherit
    try:
        _run_workers(socks, primary, worker, tls)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# Set by SIGINT or SIGTERM outside uvicorn's own handling: before it listens for them (a
# stop right after the address line), and when it raises the signal again after its
# graceful stop (SIGTERM's default action would then end the process before the cleanup
# around the server ran).  The handler only sets it, and the server stops at its next
# tick.  A handler that raised instead (as Python's KeyboardInterrupt does) could land
# anywhere: in a weakref callback, where the exception is printed and dropped and the
# process served on after its stop (5 times in 60 with workers).
_STOP = threading.Event()


def _stop_requested(sig: int, frame: FrameType | None) -> None:
    _STOP.set()


def _run_workers(
    socks: list[socket.socket],
    primary: Callable[[], App],
    worker: Callable[[], App],
    tls: Tls | None,
) -> None:
    parent = os.getpid()
    pids: list[int] = []
    for sock in socks[1:]:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                end_with_parent(parent, signal.SIGKILL)
                for other in socks:
                    if other is not sock:
                        other.close()
                app = worker()
                try:
                    server_for(app, tls).run(sockets=[sock])
                finally:
                    app.close()
                code = 0
            except Exception:  # a bug: said, and the worker ends (the others go on)
                log.exception("minixnat worker %d failed", os.getpid())
            finally:
                os._exit(code)
        pids.append(pid)
    for sock in socks[1:]:
        sock.close()  # a worker that dies takes its socket with it: the others take over
    try:
        app = primary()
    except BaseException:
        _signal(pids, signal.SIGTERM)
        _reap(pids, WORKERS_STOP_S)
        socks[0].close()
        raise
    try:
        _Primary(config_for(app, tls), pids).run(sockets=socks[:1])
    finally:
        _signal(pids, signal.SIGTERM)
        _reap(pids, WORKERS_STOP_S)
        app.close()


# How long a stopping server lets an HTTPS connection close politely (see _Server).
TLS_CLOSE_GRACE_S = 1.0


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop is not held up by idle HTTPS connections.

    On a stop uvicorn closes each idle keep-alive connection politely; over TLS that close
    waits for the client's reply (close_notify), which a client keeping the connection
    idle in its pool does not send until it next uses it: the stop then took asyncio's
    30 s TLS shutdown timeout (a requests session, xnatpy's, is such a client).  Once the
    grace has passed, a TLS connection whose last response is complete is cut."""

    async def on_tick(self, counter: int) -> bool:
        if _STOP.is_set():  # a stop signal that came outside uvicorn's handling
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.config.is_ssl:  # a plain close waits for nobody
            await super().shutdown(sockets)
            return
        cutter = asyncio.ensure_future(self._cut_lingering())
        try:
            await super().shutdown(sockets)
        finally:
            cutter.cancel()

    async def _cut_lingering(self) -> None:
        await asyncio.sleep(TLS_CLOSE_GRACE_S)
        while True:
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                cycle = getattr(connection, "cycle", None)
                if transport is not None and (cycle is None or cycle.response_complete):
                    transport.abort()
            await asyncio.sleep(0.1)


class _Primary(_Server):
    """The first process's server: passes its stop signals on to the worker processes
    and, once its own requests are done, waits for theirs."""

    def __init__(self, config: uvicorn.Config, workers: list[int]) -> None:
        super().__init__(config)
        self.workers = workers

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _signal(self.workers, signal.Signals(sig))
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if _STOP.is_set() and not self.should_exit:  # passed on as uvicorn's would be
            _signal(self.workers, signal.SIGTERM)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Waited for here, as part of the graceful stop they were passed: once run() ends,
        # the cleanup in _run_workers sends SIGTERM to any worker still running, which
        # would cut its own graceful stop short (a second signal forces uvicorn's exit).
        await asyncio.to_thread(_reap, self.workers, WORKERS_STOP_S)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pids: list[int], timeout: float) -> None:
    """Wait for the worker processes to end, removing each from ``pids`` (so that no
    signal goes to a reused pid later); kill those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pids:
        for pid in list(pids):
            try:
                ended = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:
                ended = True
            if ended:
                pids.remove(pid)
        if pids and time.monotonic() > deadline:
            _signal(pids, signal.SIGKILL)
            deadline = float("inf")
        if pids:
            time.sleep(0.02)


class Background:
    """A server answering on ``sock`` from a daemon thread until :meth:`stop`."""

    def __init__(self, app: App, sock: socket.socket, tls: Tls | None = None) -> None:
        self.app = app
        self.server = server_for(app, tls)
        self.sock = sock
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="minixnat"
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                msg = "minixnat did not start"
                raise RuntimeError(msg)
            time.sleep(0.002)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        self.app.close()

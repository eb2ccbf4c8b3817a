"""Run the app under uvicorn: the listening socket and the server, in the foreground (the
``serve`` command) or in a thread (the pytest fixture)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from minixnat.server.app import App


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (port 0: a free one).  OSError if it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def server_for(app: App) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
        )
    )


class Background:
    """A server answering on ``sock`` from a daemon thread until :meth:`stop`."""

    def __init__(self, app: App, sock: socket.socket) -> None:
        self.app = app
        self.server = server_for(app)
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

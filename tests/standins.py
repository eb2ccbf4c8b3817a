"""Stand-ins for tests of what a hostile or broken server can do: a proxy in front of a real
minixnat that passes requests through and can change or answer any of them, and a host
elsewhere that only notes who called it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

import requests


class PassThrough(http.server.BaseHTTPRequestHandler):
    """Forwards each request to ``upstream`` (login headers, cookies and a write's body
    included, redirects not followed) and sends back the answer.  Subclasses change what
    they like: :meth:`intercept` answers a GET itself, :meth:`intercept_write` a write, and
    :meth:`edit` changes a forwarded body."""

    upstream = ""

    def do_GET(self) -> None:
        if self.intercept(self.path):
            return
        self.forward("GET", None)

    def do_write(self) -> None:
        body = self.read_body()
        if not self.intercept_write(self.command, self.path, body):
            self.forward(self.command, body)

    do_POST = do_PUT = do_DELETE = do_write

    def forward(self, method: str, body: bytes | None) -> None:
        headers = {key: self.headers[key] for key in ("Authorization", "Cookie", "Content-Type")
                   if key in self.headers}  # fmt: skip
        answer = requests.request(method, self.upstream + self.path, headers=headers, data=body,
                                  timeout=60, allow_redirects=False)  # fmt: skip
        body = self.edit(self.path, answer)
        self.send_response(answer.status_code)
        for key in ("Content-Type", "Set-Cookie"):
            if key in answer.headers:
                self.send_header(key, answer.headers[key])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        """A request's body, whole: by its Content-Length, or chunk by chunk."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def intercept(self, path: str) -> bool:
        """Answer the GET of ``path`` here (True), or let it through (False)."""
        return False

    def intercept_write(self, method: str, path: str, body: bytes) -> bool:
        """Answer a write here (True), or let it through with its body (False)."""
        return False

    def edit(self, path: str, answer: requests.Response) -> bytes:
        """The body to send back for a forwarded request."""
        return answer.content

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


class Elsewhere(http.server.BaseHTTPRequestHandler):
    """Another host: answers 200 with nothing and notes every path asked for."""

    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def serve(
    handler: type[http.server.BaseHTTPRequestHandler], host: str = "127.0.0.1"
) -> tuple[str, Callable[[], None]]:
    """Run ``handler`` on a free port of ``host`` in a thread: its URL and how to stop it."""
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{host}:{server.server_address[1]}", server.shutdown


def elsewhere() -> tuple[str, list[str], Callable[[], None]]:
    """A host elsewhere (``localhost``, not the proxy's ``127.0.0.1``): its URL, the list of
    paths it is asked for, and how to stop it."""
    asked: list[str] = []
    handler = type("Recorder", (Elsewhere,), {"asked": asked})
    url, stop = serve(handler, "localhost")
    return url, asked, stop


class Canned(http.server.BaseHTTPRequestHandler):
    """A server that answers every GET and DELETE with :meth:`answer` (200, whole)."""

    def answer(self, path: str) -> tuple[str, bytes]:
        """The content type and body for ``path``."""
        raise NotImplementedError

    def do_GET(self) -> None:
        content_type, body = self.answer(self.path)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_DELETE = do_GET

    def log_message(self, *args: object) -> None:
        return None

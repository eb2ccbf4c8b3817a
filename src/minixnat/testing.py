"""A pytest plugin: a real minixnat server for tests of anything that talks to XNAT.

``pip install xnat-downloader[server]``, then in a test suite (or ``pytest -p
minixnat.testing``; the plugin is also registered as an entry point)::

    def test_my_script(minixnat):
        import xnat
        with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as s:
            s.put("/data/projects/P1")
            assert "P1" in s.projects

Each test gets its own server on a free loopback port with a fresh, empty archive in a
temporary folder and one site admin; it starts in a few milliseconds (no Docker, no Java)
and stops when the test ends.  :func:`start` does the same outside pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ADMIN = "admin"
ADMIN_PASSWORD = "admin"


@dataclass
class MiniXnat:
    """A running server: its address, the admin's credentials and the archive folder."""

    url: str
    user: str
    password: str
    root: Path
    _running: Any = field(default=None, repr=False)

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    def stop(self) -> None:
        if self._running is not None:
            background, store = self._running
            background.stop()
            store.close()
            self._running = None


def start(
    root: Path,
    *,
    user: str = ADMIN,
    password: str = ADMIN_PASSWORD,
    host: str = "127.0.0.1",
    port: int = 0,
    snapshots: bool = False,
    site_id: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    **faults: Any,
) -> MiniXnat:
    """Serve ``root`` (created if needed, with ``user`` as site admin) in a background
    thread; over HTTPS with ``tls_cert`` and ``tls_key`` (PEM files, as ``serve``'s
    ``--tls-cert`` and ``--tls-key``).  ``faults`` are the fault switches of
    ``minixnat serve`` (``latency_ms=…``); ``site_id`` sets the site ID new objects' IDs
    start with (as ``serve --site-id``).

    Unlike ``minixnat serve``, sessions get no snapshots when archived unless
    ``snapshots=True``: a SNAPSHOTS resource appearing some time after an import would
    make a test's listings depend on timing."""
    # Imported here: loading the plugin must not need the server's dependencies.
    from minixnat.server.app import App, clear_leftovers
    from minixnat.server.faults import Faults
    from minixnat.server.run import Background, Tls, listening_socket, url_of
    from minixnat.store import Store

    tls = Tls.given(tls_cert, tls_key, both="tls_cert and tls_key go together")
    root.mkdir(parents=True, exist_ok=True)
    store = Store(root)
    if store.check_password(user, password) is None:
        store.add_user(user, password, admin=True)
    if site_id is not None:
        store.set_site_id(site_id)
    clear_leftovers(store)
    sock = listening_socket(host, port)
    running = Background(App(store, Faults(**faults), snapshots=snapshots), sock, tls)
    return MiniXnat(url_of(sock, tls), user, password, root, (running, store))


@pytest.fixture
def minixnat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniXnat]:
    """A minixnat server with an empty archive, for one test."""
    server = start(tmp_path_factory.mktemp("minixnat") / "archive")
    try:
        yield server
    finally:
        server.stop()

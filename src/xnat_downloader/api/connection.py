"""How to reach a server: the first argument of every API call."""

from __future__ import annotations

from dataclasses import dataclass, field

from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.throttle import Throttle
from xnat_downloader.xnat import paths


@dataclass(frozen=True)
class Connection:
    """How to reach a server.  ``verify=False`` turns TLS verification off (the CLI warns);
    ``max_requests_per_second`` caps how often requests start (a :class:`Throttle`)."""

    url: str
    credentials: Credentials = field(default_factory=lambda: Credentials(None))
    verify: bool = True
    ca_bundle: str | None = None
    max_connections: int = 32  # the engine's per-server ceiling; --jobs sets the real number
    max_requests_per_second: float | None = None  # None: as fast as --jobs lets them go
    # One pacer for every client of this connection, so that calls made one after another
    # keep the spacing too.
    _pacer: Throttle | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_requests_per_second is not None:
            # Starts spaced evenly: no burst beyond one request.
            pacer = Throttle(self.max_requests_per_second, burst=1)
            object.__setattr__(self, "_pacer", pacer)

    def client(self) -> XnatClient:
        """An HTTP client for the server, which logs in on entering (``async with``)."""
        return XnatClient(
            paths.server_root(self.url),
            self.credentials,
            verify=self.verify,
            ca_bundle=self.ca_bundle,
            max_connections=self.max_connections,
            login_path=paths.LOGIN,
            scheme_guessed="://" not in self.url,
            pacer=self._pacer,
        )

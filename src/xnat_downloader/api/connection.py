"""How to reach a server: the first argument of every API call."""

from __future__ import annotations

from dataclasses import dataclass, field

from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.xnat import paths


@dataclass(frozen=True)
class Connection:
    """How to reach a server.  ``verify=False`` turns TLS verification off (the CLI warns)."""

    url: str
    credentials: Credentials = field(default_factory=lambda: Credentials(None))
    verify: bool = True
    ca_bundle: str | None = None
    max_connections: int = 32  # the engine's per-server ceiling; --jobs sets the real number

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
        )

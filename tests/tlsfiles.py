"""Certificates from a throw-away CA (trustme) and minixnat served over HTTPS with them,
for the HTTPS tests.  Nothing on this machine trusts the CA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

from tests.conftest import BIN, Server, start_server


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA's certificate: what --ca-bundle is given
    cert: Path  # the server's certificate chain, for 127.0.0.1 and localhost
    key: Path  # and its key
    other_cert: Path  # a certificate of the same CA for another name (localhost only)
    other_key: Path  # and its key
    expired_cert: Path  # one for 127.0.0.1 that expired yesterday
    expired_key: Path


def make_certs(folder: Path) -> Certs:
    ca = trustme.CA()
    now = datetime.now(UTC)
    leaves = [
        ca.issue_cert("127.0.0.1", "localhost"),
        ca.issue_cert("localhost"),
        ca.issue_cert("127.0.0.1", not_before=now - timedelta(days=30),
                      not_after=now - timedelta(days=1)),
    ]  # fmt: skip
    paths = []
    for name in ("server", "other", "expired"):
        paths += [folder / f"{name}.pem", folder / f"{name}-key.pem"]
    made = Certs(folder / "ca.pem", *paths)
    ca.cert_pem.write_to_path(str(made.ca))
    for leaf, cert, key in zip(leaves, paths[::2], paths[1::2], strict=True):
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
    return made


def serve(root: Path, *flags: str) -> subprocess.Popen[str]:
    """``minixnat serve`` on a free port, its output read by the caller."""
    return subprocess.Popen(
        [BIN / "minixnat", "serve", "--root", str(root), "--port", "0", "--no-snapshots", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_https(root: Path, cert: Path, key: Path, *flags: str) -> Server:
    """``minixnat serve`` over HTTPS with ``cert`` and ``key``, once it listens."""
    return start_server(root, "--tls-cert", str(cert), "--tls-key", str(key), *flags)

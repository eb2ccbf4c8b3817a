"""HTTPS: minixnat serves it (``--tls-cert``/``--tls-key``), and the client verifies the
server's certificate unless told not to (certificates: tests/tlsfiles.py)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import xnat

from minixnat.testing import MiniXnat, start
from tests.conftest import Server, make_archive
from tests.test_download import cli
from tests.tlsfiles import Certs, make_certs, serve, start_https


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Server]:
    """``minixnat serve`` over HTTPS, from two processes (each must speak TLS)."""
    root = make_archive(tmp_path_factory.mktemp("https") / "archive")
    server = start_https(root, certs.cert, certs.key, "--workers", "2")
    try:
        yield server
    finally:
        server.stop()


def data_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and ".xnat-downloader" not in p.parts]


def test_an_untrusted_certificate_is_refused_and_nothing_is_written(
    https_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("download", "-w", https_server.url, "-p", "DEMO01", "-o", str(out))
    assert code == 2
    assert "not trusted" in err, err
    assert "--ca-bundle" in err
    assert "Traceback" not in err
    assert "done:" not in stdout
    assert data_files(out) == []


def test_the_ca_bundle_makes_the_server_trusted(
    https_server: Server, certs: Certs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("download", "-w", https_server.url, "-p", "DEMO01", "-o", str(out),
                            "--ca-bundle", str(certs.ca))  # fmt: skip
    assert code == 0, err
    assert "TLS certificate verification is OFF" not in err
    files = len(data_files(out))
    assert files > 0
    assert stdout.strip().splitlines()[-1].startswith(f"done: {files} files,")
    assert stdout.strip().endswith(f"{files} verified, 0 failed")


def test_insecure_downloads_and_says_verification_is_off(
    https_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("download", "-w", https_server.url, "-p", "DEMO01", "-o", str(out),
                            "--insecure")  # fmt: skip
    assert code == 0, err
    assert err.count("TLS certificate verification is OFF") == 1
    assert stdout.strip().endswith("failed")
    assert ", 0 failed" in stdout


def test_a_ca_bundle_that_is_not_one_is_a_usage_error(https_server: Server, tmp_path: Path) -> None:
    bogus = tmp_path / "bundle.pem"
    bogus.write_text("not a certificate\n")
    code, _, err = cli("ls", "-w", https_server.url, "-p", "DEMO01", "--ca-bundle", str(bogus))
    assert code == 2
    assert str(bogus) in err
    assert "Traceback" not in err


def test_every_worker_speaks_tls_to_third_party_clients(
    https_server: Server, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sixteen fresh connections: the kernel deals them over both workers' sockets.
    for _ in range(16):
        with requests.Session() as http:
            got = http.get(https_server.url + "/data/projects?format=json", verify=str(certs.ca),
                           auth=("admin", "admin"), timeout=30)  # fmt: skip
            assert got.status_code == 200
            assert "DEMO01" in {row["ID"] for row in got.json()["ResultSet"]["Result"]}
    # xnatpy trusts a private CA the way requests does (a verify=False session would still
    # take the bundle from this variable, which the environment may set).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca))
    with xnat.connect(https_server.url, user="admin", password="admin") as session:
        assert "DEMO01" in session.projects


def test_serve_refuses_a_key_that_is_not_the_certificates(certs: Certs, tmp_path: Path) -> None:
    root = make_archive(tmp_path / "archive")
    proc = serve(root, "--tls-cert", str(certs.cert), "--tls-key", str(certs.other_key))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out == ""
    assert f"cannot use the certificate {certs.cert} with the key {certs.other_key}" in err
    assert "Traceback" not in err
    proc = serve(root, "--tls-cert", str(certs.cert))
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (2, "")
    assert "--tls-cert and --tls-key go together" in err


def test_the_fixture_serves_https(certs: Certs, tmp_path: Path) -> None:
    server = start(tmp_path / "archive", tls_cert=certs.cert, tls_key=certs.key)
    try:
        assert server.url.startswith("https://127.0.0.1:")
        got = requests.get(server.url + "/data/projects?format=json", auth=server.auth,
                           verify=str(certs.ca), timeout=30)  # fmt: skip
        assert got.status_code == 200
        port = int(server.url.rsplit(":", 1)[1])
        untrusting = ssl.create_default_context()  # this machine's CAs, not ours
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        server.stop()


def test_a_stop_is_not_held_up_by_an_idle_https_client(certs: Certs, tmp_path: Path) -> None:
    root = make_archive(tmp_path / "archive")
    proc = serve(root, "--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    assert proc.stdout is not None  # and its stderr is read at the end
    url = proc.stdout.readline().split()[-1]
    with requests.Session() as http:  # keeps its connection open and idle, as pools do
        got = http.get(url + "/data/projects?format=json", auth=("admin", "admin"),
                       verify=str(certs.ca), timeout=30)  # fmt: skip
        assert got.status_code == 200
        proc.send_signal(signal.SIGTERM)
        # A polite TLS close waits for the client's reply; this client is not reading.
        # Without cutting such connections the stop took asyncio's 30 s timeout.
        try:
            code = proc.wait(timeout=15)
        finally:
            proc.kill()
        assert code == 0
        _, err = proc.communicate()
        assert err == ""


def test_session_cookies_are_secure_over_https_only(
    https_server: Server, certs: Certs, minixnat: MiniXnat
) -> None:
    over_tls = requests.get(https_server.url + "/data/JSESSION", auth=("admin", "admin"),
                            verify=str(certs.ca), timeout=30)  # fmt: skip
    plain = requests.get(minixnat.url + "/data/JSESSION", auth=minixnat.auth, timeout=30)
    for got in (over_tls, plain):
        assert got.status_code == 200
        assert got.headers["set-cookie"].startswith(f"JSESSIONID={got.text};")
    assert over_tls.headers["set-cookie"].endswith("; Secure")
    assert "Secure" not in plain.headers["set-cookie"]


def test_copy_between_two_https_servers(https_server: Server, certs: Certs, tmp_path: Path) -> None:
    target_root = make_archive(tmp_path / "target", "--projects", "0")
    target = start_https(target_root, certs.cert, certs.key)
    try:
        made = requests.put(f"{target.url}/data/projects/DEMO01", auth=("admin", "admin"),
                            verify=str(certs.ca), timeout=30)  # fmt: skip
        assert made.ok
        args = ("copy", "--from", https_server.url, "--to", target.url, "-p", "DEMO01")
        code, _, err = cli(*args)
        assert code == 2
        assert "not trusted" in err
        code, out, err = cli(*args, "--ca-bundle", str(certs.ca))
        assert code == 0, err
        assert out.splitlines()[-1].endswith(" 0 failed")
        code, out, err = cli(*args, "--ca-bundle", str(certs.ca), "--json")
        assert code == 0, err
        document = json.loads(out)
        assert document["failed"] == 0
        assert document["sessions"]
        assert set(document["sessions"].values()) == {"present"}
    finally:
        target.stop()


@pytest.mark.parametrize(
    ("which", "said"),
    [("other", "its TLS certificate is for another name"),
     ("expired", "its TLS certificate has expired")],
)  # fmt: skip
def test_a_certificate_for_another_name_or_expired_is_refused_and_named(
    certs: Certs, tmp_path: Path, which: str, said: str
) -> None:
    cert, key = (
        (certs.other_cert, certs.other_key)
        if which == "other"
        else (certs.expired_cert, certs.expired_key)
    )
    server = start_https(make_archive(tmp_path / "archive"), cert, key)
    try:
        out = tmp_path / "out"
        code, _, err = cli("download", "-w", server.url, "-p", "DEMO01", "-o", str(out),
                                "--ca-bundle", str(certs.ca))  # fmt: skip
        assert code == 2
        assert said in err, err
        assert "--ca-bundle" not in err  # the CA is trusted; that advice would mislead
        assert "Traceback" not in err
        assert data_files(out) == []
    finally:
        server.stop()

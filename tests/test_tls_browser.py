"""A browser over HTTPS (in a module of its own: while the browser fixture lives, its event
loop runs in this thread, and the CLI tests of tests/test_tls.py run asyncio in it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import LAPTOP, Server, make_archive
from tests.tlsfiles import make_certs, start_https


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    certs = make_certs(tmp_path_factory.mktemp("tls"))
    root = make_archive(tmp_path_factory.mktemp("https") / "archive")
    server = start_https(root, certs.cert, certs.key)
    try:
        yield server
    finally:
        server.stop()


def test_a_browser_logs_in_over_https_with_a_secure_cookie(
    browser: Browser, https_server: Server
) -> None:
    # Chromium does not know the test CA; certificate checks are the client tests' subject.
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(https_server.url + "/app/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill("admin")
        page.get_by_role("button", name="Log in").click()
        # The next page comes back logged in: the Secure cookie went back over HTTPS.
        page.goto(https_server.url + "/app/projects/DEMO01")
        expect(page.locator("#user_info")).to_have_text("Logged in as: \u00a0admin")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        session = [c for c in context.cookies() if c["name"] == "JSESSIONID"]
        assert len(session) == 1
        assert session[0]["secure"]
        assert session[0]["httpOnly"]
    finally:
        context.close()

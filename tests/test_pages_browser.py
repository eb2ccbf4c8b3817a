"""minixnat's pages end to end in a real headless Chromium (Debian's ``chromium``, which
``make test`` installs), driven by Playwright: log in, browse, the download page's three
methods, the file manager, accessibility (axe-core) and laptop/tablet widths.

Screenshots of each step are saved under ``test-output/screenshots/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.conftest import BIN, LAPTOP, Server, start_server

SHOTS = Path(__file__).resolve().parents[1] / "test-output" / "screenshots"
TABLET = {"width": 768, "height": 1024}
ADMIN = ("admin", "admin")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, base_archive: Path) -> Iterator[Server]:
    """A server of its own: the pages create download catalogs and alias tokens."""
    import shutil

    root = tmp_path_factory.mktemp("pages") / "archive"
    shutil.copytree(base_archive, root)
    server = start_server(root)
    yield server
    server.stop()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_accessible(page: Page, where: str) -> None:
    """No axe-core violations (WCAG 2 A/AA and best practices) on the page as it stands."""
    results = Axe().run(page)
    violations = [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)" for v in results.response["violations"]
    ]
    assert violations == [], f"{where}: {violations}"


def log_in(page: Page, server: Server, user: str = "admin", password: str = "admin") -> None:
    """Log in with the keyboard only: type, Tab, type, Enter."""
    page.goto(server.url + "/")
    page.get_by_role("link", name="Log in").first.click()
    expect(page.get_by_label("User name")).to_be_focused()  # autofocus
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page.locator("#user_info")).to_contain_text(user)


def api(server: Server, path: str) -> list[dict[str, Any]]:
    answer = requests.get(server.url + path, auth=ADMIN, timeout=30)
    answer.raise_for_status()
    rows: list[dict[str, Any]] = answer.json()["ResultSet"]["Result"]
    return rows


def clean(text: str) -> str:
    return re.sub(r"[\\/(),\s]", "_", text)


def expected_files(
    server: Server, sessions: list[str], scan_type: str
) -> dict[str, tuple[int, str]]:
    """What the download of ``scan_type`` from ``sessions`` must hold, from the REST API:
    member path (project and subject included, XNAT's structure) → (size, MD5)."""
    out: dict[str, tuple[int, str]] = {}
    for label in sessions:
        found = api(server, f"/data/experiments?label={label}&format=json")
        (session,) = [r for r in found if r["label"] == label]
        detail = requests.get(
            server.url + f"/data/experiments/{session['ID']}?format=json", auth=ADMIN, timeout=30
        ).json()["items"][0]["data_fields"]
        subject = api(server, f"/data/projects/{session['project']}/subjects?format=json")
        subject_label = next(s["label"] for s in subject if s["ID"] == detail["subject_ID"])
        for scan in api(server, f"/data/experiments/{session['ID']}/scans?format=json"):
            if scan["type"] != scan_type:
                continue
            for res in api(
                server,
                f"/data/experiments/{session['ID']}/scans/{scan['ID']}/resources?format=json",
            ):
                files = api(
                    server,
                    f"/data/experiments/{session['ID']}/scans/{scan['ID']}/resources/"
                    f"{res['label']}/files?format=json",
                )
                folder = (
                    f"{session['project']}/{subject_label}/{label}/scans/"
                    f"{scan['ID']}-{clean(scan_type)}/resources/{res['label']}"
                )
                for f in files:
                    path = f["URI"].split("/files/", 1)[1]  # keeps sub-folders
                    out[f"{folder}/{path}"] = (int(f["Size"]), f["digest"])
    return out


def download_as_admin(site: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """``xnat-downloader download -w SITE -u admin ARGS…`` as a user runs it; it must
    succeed."""
    done = subprocess.run(
        [BIN / "xnat-downloader", "download", "-w", site.url, "-u", "admin", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XNAT_PASS": "admin"},
    )
    assert done.returncode == 0, done.stderr
    return done


def tree(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_size,
            hashlib.md5(p.read_bytes()).hexdigest(),
        )
        for p in folder.rglob("*")
        if p.is_file() and ".xnat-downloader" not in p.parts
    }


def choose(page: Page, sessions: list[str], scan_type: str, method: str) -> None:
    """On the download page: only ``sessions``, only ``scan_type``, then ``method``."""
    page.get_by_role("button", name="None").first.click()  # the sessions group
    for label in sessions:
        page.get_by_label(re.compile(rf"^{label}\b")).check()
    types = page.locator('fieldset[data-kind="type"]')
    types.get_by_role("button", name="None").click()
    option = types.get_by_label(re.compile(rf"^{re.escape(scan_type)} \("))
    option.check()
    page.get_by_label(
        {"zip": "ZIP file", "xml": "XML catalog", "client": re.compile("Download client")}[method]
    ).check()


TWO = ["DEMO01_S001_MR1", "DEMO01_S002_MR1"]


def open_download_page(page: Page, site: Server) -> None:
    log_in(page, site)
    page.get_by_role("link", name="DEMO01", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demo project 1")
    shot(page, "project")
    page.get_by_role("link", name="Download images").click()
    expect(page.get_by_role("heading", name="1. Sessions")).to_be_visible()


def test_zip_of_two_sessions_and_one_scan_type(page: Page, site: Server, tmp_path: Path) -> None:
    open_download_page(page, site)
    shot(page, "download-page")
    choose(page, TWO, "T1w", "zip")
    # The counts follow the ticked sessions: two MR sessions, one T1w scan each.
    types = page.locator('fieldset[data-kind="type"]')
    expect(types.get_by_label(re.compile(r"^T1w \("))).to_have_count(1)
    expect(types.locator('[data-count="type:T1w"]')).to_have_text("(2)")
    expect(types.locator('[data-count="type:CT HEAD"]')).to_have_text("(0)")
    shot(page, "download-chosen")
    page.get_by_role("button", name="Prepare download").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your download is ready")
    shot(page, "download-zip-ready")
    assert_accessible(page, "the ZIP confirmation")
    cid = page.locator("#download-id").inner_text()
    assert re.fullmatch(r"admin-\d{8}_\d{9}(-\d+)?", cid)
    size = int(page.locator("#download-size").get_attribute("data-bytes") or "-1")
    with page.expect_download() as started:
        page.get_by_role("link", name="Download ZIP").click()
    saved = tmp_path / "download.zip"
    started.value.save_as(saved)
    assert started.value.suggested_filename == f"{cid}.zip"
    want = expected_files(site, TWO, "T1w")
    assert want, "the demo archive should have T1w scans in both sessions"
    with zipfile.ZipFile(saved) as zf:
        got = {
            i.filename: (i.file_size, hashlib.md5(zf.read(i)).hexdigest())
            for i in zf.infolist()
            if not i.is_dir()
        }
    assert got == want
    assert size == sum(s for s, _ in want.values())


def test_xml_catalog_feeds_xnat_downloader(page: Page, site: Server, tmp_path: Path) -> None:
    open_download_page(page, site)
    choose(page, TWO, "T1w", "xml")
    page.get_by_role("button", name="Prepare download").click()
    shot(page, "download-xml-ready")
    with page.expect_download() as started:
        page.get_by_role("link", name="Download XML catalog").click()
    catalog = tmp_path / "catalog.xml"
    started.value.save_as(catalog)
    text = catalog.read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog')
    assert 'entrySet ID="RAW"' in text
    uris = re.findall(r'<cat:entry URI="([^"]+)"', text)
    assert uris
    assert all(u.startswith(f"{site.url}/data/experiments/") for u in uris)  # absolute, as XNAT's
    out = tmp_path / "fetched"
    done = download_as_admin(site, "--catalog", str(catalog), "-o", str(out))
    want = expected_files(site, TWO, "T1w")
    assert tree(out) == want
    total = sum(size for size, _ in want.values())
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"done: {len(want)} files, {total} bytes, {len(want)} verified, 0 failed"


def test_download_client_handoff_outlives_the_browser_session(
    page: Page, site: Server, tmp_path: Path
) -> None:
    open_download_page(page, site)
    choose(page, TWO, "T1w", "client")
    page.get_by_role("button", name="Prepare download").click()
    page.get_by_label("Folder to download into").fill("my data")
    shot(page, "download-client")
    assert_accessible(page, "the download-client confirmation")
    page.get_by_role("button", name="Create download command").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Download with xnat-downloader")
    shot(page, "download-client-command")
    assert_accessible(page, "the hand-off page")
    command = page.locator("#command").inner_text()
    secret = page.locator("#secret").inner_text().strip()
    cid = page.locator("#download-id").inner_text()
    words = shlex.split(command)
    assert words[:2] == ["xnat-downloader", "download"]
    assert f"/xapi/archive/download/{cid}/xml" in command
    assert secret not in command  # typed at the prompt, never in the shell's history
    assert secret != "admin"  # the token's secret, not the password
    # Log out: the command must work without the browser's session.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#user_info")).to_contain_text("Guest")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith("XNAT_")}
    env["XNAT_PASS"] = secret  # what a script gives instead of typing it at the prompt
    want = expected_files(site, TWO, "T1w")
    finished = (
        f"done: {len(want)} files, {sum(s for s, _ in want.values())} bytes, "
        f"{len(want)} verified, 0 failed"
    )
    # Following the command again (a resumed run) must end the same way.
    for _ in range(2):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert tree(tmp_path / "my data") == want
        assert done.stdout.strip().splitlines()[-1] == finished


def test_session_report_and_file_manager_links(page: Page, site: Server, tmp_path: Path) -> None:
    log_in(page, site)
    page.goto(site.url + "/app/projects/DEMO01")
    page.get_by_role("link", name="DEMO01_S001_MR1", exact=True).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Session DEMO01_S001_MR1")
    shot(page, "session")
    page.get_by_role("link", name="Manage files").click()
    shot(page, "files")
    link = page.locator("table.files a").first
    expected_md5 = link.locator("xpath=ancestor::tr").locator("td.mono").inner_text()
    with page.expect_download() as started:
        link.click()
    saved = tmp_path / "one-file"
    started.value.save_as(saved)
    assert hashlib.md5(saved.read_bytes()).hexdigest() == expected_md5
    # The session page's own "Download images" reaches the download page for that session.
    page.go_back()
    page.get_by_role("link", name="Download images").click()
    expect(page.locator('input[name="pick"]')).to_have_count(1)


def test_search_listing_leads_to_the_download_page(page: Page, site: Server) -> None:
    log_in(page, site)
    page.get_by_role("link", name="Sessions").click()
    page.get_by_label("Modality").select_option("CT")
    page.get_by_role("button", name="Search").click()
    shot(page, "sessions-search")
    rows = page.locator("table.list tbody tr")
    expect(rows).to_have_count(2)  # one CT session in each demo project
    page.get_by_role("button", name="Download the ticked sessions").click()
    expect(page.locator('input[name="pick"]')).to_have_count(2)
    expect(page.locator("ul.sessions")).to_contain_text("DEMO02_S002_CT2")


def test_without_script_the_server_counts(browser: Browser, site: Server) -> None:
    context = browser.new_context(viewport=LAPTOP, java_script_enabled=False)
    page = context.new_page()
    log_in_plain(page, site)
    page.goto(site.url + "/app/download?project=DEMO01")
    expect(page.locator('[data-count="type:T1w"]')).to_have_text("(3)")
    page.get_by_label(re.compile(r"^DEMO01_S001_MR1\b")).uncheck()
    page.get_by_role("button", name="Update counts").click()
    expect(page.locator('[data-count="type:T1w"]')).to_have_text("(2)")
    expect(page.get_by_label(re.compile(r"^DEMO01_S001_MR1\b"))).not_to_be_checked()
    context.close()


def log_in_plain(page: Page, server: Server) -> None:
    page.goto(server.url + "/app/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("admin")
    page.get_by_role("button", name="Log in").click()


def _pages_to_check(page: Page, site: Server) -> list[str]:
    eid = api(site, "/data/experiments?label=DEMO01_S001_MR1&format=json")[0]["ID"]
    sid = api(site, "/data/projects/DEMO01/subjects?format=json")[0]["ID"]
    return [
        "/app/login",
        "/",
        "/app/projects/DEMO01",
        f"/app/projects/DEMO01/subjects/{sid}",
        f"/app/experiments/{eid}",
        f"/app/experiments/{eid}/files",
        "/app/sessions",
        "/app/download?project=DEMO01",
        "/app/projects/NO-SUCH-PROJECT",  # the error page
    ]


@pytest.mark.parametrize("width", ["laptop", "tablet"])
def test_pages_are_accessible_and_fit(page: Page, site: Server, width: str) -> None:
    viewport = LAPTOP if width == "laptop" else TABLET
    page.set_viewport_size(viewport)
    log_in(page, site)
    for path in _pages_to_check(page, site):
        page.goto(site.url + path)
        assert_accessible(page, path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {width} width"
        name = path.strip("/").replace("/", "-").split("?")[0] or "home"
        shot(page, f"{width}-{name}")


def test_keyboard_alone_prepares_a_download(page: Page, site: Server) -> None:
    open_download_page(page, site)
    # Skip link first, then the form controls in reading order.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_label("XML catalog").focus()
    page.keyboard.press("Space")  # radio buttons answer Space
    expect(page.get_by_label("XML catalog")).to_be_checked()
    page.get_by_role("button", name="Prepare download").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your download is ready")
    expect(page.get_by_role("link", name="Download XML catalog")).to_be_visible()


@pytest.fixture(scope="module")
def snapshot_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A demo archive served with snapshots on, once every session's run is Complete."""
    import time

    from tests.conftest import make_archive

    root = make_archive(tmp_path_factory.mktemp("snapshots") / "archive", "--snapshots")
    server = start_server(root, snapshots=True)
    sessions = [
        r["ID"] for r in api(server, "/data/experiments?format=json") if "_QC" not in r["label"]
    ]
    deadline = time.monotonic() + 120
    while True:
        runs = api(server, "/data/services/workflows/WebBasedQCImageCreator?format=json")
        if len(runs) == len(sessions) and all(r["status"] == "Complete" for r in runs):
            break
        assert time.monotonic() < deadline, f"snapshots not done: {runs}"
        time.sleep(0.2)
    yield server
    server.stop()


@pytest.mark.parametrize("width", ["laptop", "tablet"])
def test_session_page_shows_each_scans_snapshot(
    page: Page, snapshot_site: Server, width: str
) -> None:
    """Issue 21: each scan's thumbnail on the session page, linking to the full image; one
    thumbnail per scan type on the download page; accessible and without sideways scroll."""
    site = snapshot_site
    page.set_viewport_size(LAPTOP if width == "laptop" else TABLET)
    log_in(page, site)
    eid = next(
        r["ID"]
        for r in api(site, "/data/experiments?format=json")
        if r["label"] == "DEMO01_S001_MR1"
    )
    scans = api(site, f"/data/experiments/{eid}/scans?format=json")
    page.goto(f"{site.url}/app/experiments/{eid}")
    thumbs = page.locator("img.thumb")
    expect(thumbs).to_have_count(len(scans))
    page.wait_for_load_state("networkidle")
    sizes = thumbs.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert all(done and natural > 0 for done, natural in sizes), sizes
    expect(page.get_by_role("rowheader", name="WebBasedQCImageCreator")).to_be_visible()
    assert_accessible(page, "session page with snapshots")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the session page scrolls sideways by {overflow}px"
    shot(page, f"{width}-session-snapshots")
    first = thumbs.first.locator("xpath=ancestor::a").get_attribute("href")
    assert first is not None
    assert first.endswith("_qc.gif")
    full = requests.get(site.url + first, auth=ADMIN, timeout=30)
    assert full.headers["content-type"].startswith("image/gif")
    page.goto(f"{site.url}/app/download?project=DEMO01")
    pictures = page.locator("fieldset[data-kind=type] img.type-thumb")
    expect(pictures).to_have_count(page.locator("fieldset[data-kind=type] li").count())
    assert_accessible(page, "download page with snapshots")
    shot(page, f"{width}-download-snapshots")

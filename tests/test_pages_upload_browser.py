"""The pages that bring data in, in Debian's Chromium (Playwright), as a person uses them:
upload a session zip into the archive and into the prearchive with the compressed
uploader, watch the activity tracker reach done, archive the prearchive session from its
page, download it back with ``xnat-downloader`` and compare MD5s; create a subject with the
form and twenty with a spreadsheet (one bad row reported); a collaborator sees no upload
target; every page axe-core clean and without sideways scrolling.

Screenshots of each step are saved under ``test-output/screenshots/``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import FileChooser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import LAPTOP, Server, start_server
from tests.test_minixnat_api import _admin
from tests.test_minixnat_writes import dicom_md5s, session_zip
from tests.test_pages_browser import TABLET, assert_accessible, download_as_admin, log_in, shot
from tests.test_pages_upload import SHEET, api_import, big_session_zip, peak_rss_kib


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, base_archive: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("upload-pages") / "archive"
    shutil.copytree(base_archive, root)
    _admin(root, "user", "add", "cole", "--password", "pw")
    _admin(root, "project", "member", "DEMO01", "cole", "collaborator")
    server = start_server(root)
    yield server
    server.stop()


def fits(page: Page, where: str) -> None:
    assert_accessible(page, where)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{where} scrolls sideways by {overflow}px"


def nav(page: Page, name: str) -> None:
    """Follow a link of the site's header."""
    page.get_by_role("navigation", name="Site").get_by_role("link", name=name, exact=True).click()


def upload_zip(page: Page, site: Server, zipped: Path, destination: str) -> None:
    """The compressed uploader, step by step (seed 004), keyboard and mouse as a person."""
    nav(page, "Upload")
    expect(page.get_by_role("heading", level=1)).to_have_text("Upload images")
    page.get_by_label("1. Project").select_option("DEMO01")
    page.get_by_label("2. Importer").select_option("DICOM-zip")
    page.get_by_label("Ignore unparsable files").check()
    page.get_by_label(re.compile(f"^{destination}", re.I)).check()
    page.get_by_label("4. Archive file").set_input_files(str(zipped))
    shot(page, f"upload-{destination}-chosen")
    page.get_by_role("button", name="Begin upload").click()
    expect(page.locator("#upload-status")).to_contain_text("Import done:", timeout=180_000)
    expect(page.locator("#upload-bar")).to_have_attribute("value", "100")
    shot(page, f"upload-{destination}-done")


def download(site: Server, session: str, out: Path) -> dict[str, str]:
    """``xnat-downloader download`` of one session; file name → MD5 of what landed."""
    done = download_as_admin(site, "-p", "DEMO01", "-s", session, "-o", str(out))
    assert done.stdout.strip().splitlines()[-1].endswith(" 0 failed")
    return {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()
        for p in out.rglob("*")
        if p.is_file() and ".xnat-downloader" not in p.parts and "/DICOM/" in p.as_posix()
    }


def test_upload_to_archive_and_prearchive_then_download_back(
    page: Page, site: Server, tmp_path: Path
) -> None:
    originals = sorted(dicom_md5s(site.root, "DEMO01_S001_MR1"))
    log_in(page, site)
    # Into the archive: the result links to the new session.
    archived = tmp_path / "archived.zip"
    archived.write_bytes(session_zip(site.root, "DEMO01_S001_MR1", folder="WEB_ARC"))
    upload_zip(page, site, archived, "archive")
    fits(page, "upload page after an upload")
    expect(page.locator("#upload-status")).to_contain_text(f"{len(originals)} files in 1 session")
    page.get_by_role("link", name=re.compile(r"^Open DEMO01 .*WEB_ARC$")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("WEB_ARC")
    # Into the prearchive, then the tracker, then archive it from its page with new labels.
    page.goto(site.url + "/app/activity")
    before = page.locator("#activity-table tbody tr").count()
    held = tmp_path / "held.zip"
    held.write_bytes(session_zip(site.root, "DEMO01_S001_MR1", folder="WEB_PRE"))
    upload_zip(page, site, held, "prearchive")
    nav(page, "Uploads")
    rows = page.locator("#activity-table tbody tr")
    expect(rows).to_have_count(before + 1)
    expect(rows.first.locator(".state")).to_have_text(f"done: {len(originals)} files in 1 session")
    fits(page, "activity tracker")
    shot(page, "activity-tracker")
    nav(page, "Prearchive")
    fits(page, "prearchive page")
    shot(page, "prearchive")
    page.get_by_role("link", name="WEB_PRE").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Prearchive session WEB_PRE")
    fits(page, "prearchive session page")
    page.get_by_label("Subject label").fill("WEB_SUBJECT")
    page.get_by_label("Session label").fill("WEB_ARCHIVED")
    shot(page, "prearchive-session")
    page.get_by_role("button", name="Archive", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("WEB_ARCHIVED")
    shot(page, "prearchive-archived")
    for session in ("WEB_ARC", "WEB_ARCHIVED"):
        fetched = download(site, session, tmp_path / session)
        assert sorted(fetched.values()) == originals


def test_tracker_follows_a_running_import_without_reloading(page: Page, site: Server) -> None:
    """An import through the API while the tracker is open: the row appears and reaches
    done in place (the tracker page keeps asking the server)."""
    log_in(page, site)
    page.goto(site.url + "/app/activity")
    before = page.locator("#activity-table tbody tr").count()
    page.evaluate("window.drawnOnce = true")  # gone if the page were reloaded
    data = session_zip(site.root, "DEMO01_S002_MR1", folder="WEB_API")
    assert api_import(site, data, "/prearchive").status_code == 200
    # The page was drawn before the import began; it shows it without being reloaded.
    rows = page.locator("#activity-table tbody tr")
    expect(rows).to_have_count(before + 1, timeout=15_000)
    expect(rows.first.locator(".state")).to_contain_text("done:")
    assert page.evaluate("window.drawnOnce") is True


def test_subject_form_and_spreadsheet(page: Page, site: Server, tmp_path: Path) -> None:
    log_in(page, site)
    page.goto(site.url + "/app/projects/DEMO01")
    page.get_by_role("link", name="Create subject").click()
    fits(page, "create subject form")
    page.get_by_label("Label").fill("WEB_S1")
    page.get_by_label("Gender").select_option("female")
    page.get_by_label("Date of birth").fill("2999-01-01")
    page.get_by_label("New field name").fill("site")
    page.get_by_label("New field value").fill("north")
    page.get_by_role("button", name="Create subject").click()
    expect(page.get_by_role("alert")).to_have_text("Date of birth 2999-01-01 is in the future.")
    shot(page, "subject-form-refused")
    expect(page.get_by_label("Label")).to_have_value("WEB_S1")  # what was typed stays
    page.get_by_label("Date of birth").fill("1980-05-06")
    page.get_by_role("button", name="Create subject").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Subject WEB_S1")
    expect(page.locator("dl.facts")).to_contain_text("north")
    shot(page, "subject-created")
    page.goto(site.url + "/app/projects/DEMO01")
    page.get_by_role("link", name="Upload spreadsheet").click()
    fits(page, "spreadsheet page")
    with page.expect_download() as started:
        page.get_by_role("link", name="Download the template").click()
    template = tmp_path / "template.csv"
    started.value.save_as(template)
    assert template.read_text().startswith("label,gender,dob,yob,handedness,site")
    sheet = tmp_path / "subjects.csv"
    sheet.write_text(SHEET)
    page.get_by_label("Spreadsheet (.csv)").set_input_files(str(sheet))
    page.get_by_role("button", name="Upload spreadsheet").click()
    expect(page.locator("#report-summary")).to_have_text("20 created, 0 updated, 1 refused.")
    expect(page.locator("#report tr.refused")).to_contain_text("Invalid gender 'banana'")
    fits(page, "spreadsheet report")
    shot(page, "spreadsheet-report")


def test_collaborator_sees_no_upload_target(page: Page, site: Server) -> None:
    log_in(page, site, "cole", "pw")
    nav(page, "Upload")
    expect(page.locator("#no-targets")).to_be_visible()
    expect(page.locator("#upload-form")).to_have_count(0)
    fits(page, "upload page without targets")
    shot(page, "upload-collaborator")


@pytest.mark.parametrize("viewport", [LAPTOP, TABLET], ids=["laptop", "tablet"])
def test_upload_pages_fit(page: Page, site: Server, viewport: dict[str, int]) -> None:
    page.set_viewport_size(viewport)
    data = session_zip(site.root, "DEMO01_S002_MR1", folder=f"FIT_{viewport['width']}")
    assert api_import(site, data, "/prearchive").status_code == 200
    log_in(page, site)
    listed = page.context.request.get(site.url + "/app/prearchive").text()
    held = re.findall(r'href="(/app/prearchive/[^"]+)"', listed)
    tracked = page.context.request.get(site.url + "/app/activity").text()
    imports = re.findall(r'href="(/app/activity/\d+)"', tracked)
    for path in (
        *held[:1],
        *imports[:1],
        "/app/projects/DEMO01/subjects/DEMO01_S001/edit",
        "/app/upload",
        "/app/activity",
        "/app/prearchive",
        "/app/projects/DEMO01/add-subject",
        "/app/projects/DEMO01/spreadsheet",
        "/app/projects/DEMO01/upload-xml",
    ):
        page.goto(site.url + path)
        fits(page, f"{path} at {viewport['width']}px")
    assert held, "the prearchive lists no session to look at"
    assert imports, "the tracker lists no import"


def choose_by_keyboard(page: Page) -> FileChooser:
    """Space on the focused file field opens the file chooser.  Headless Chromium now and
    then drops the key's activation under load (one full run in several: no chooser within
    20 s); a user would press again, and so does this, up to three times."""
    for _ in range(2):
        try:
            with page.expect_file_chooser(timeout=5_000) as chooser:
                page.keyboard.press("Space")
            return chooser.value
        except PlaywrightTimeout:
            continue
    with page.expect_file_chooser(timeout=5_000) as chooser:  # the last time, failing loudly
        page.keyboard.press("Space")
    return chooser.value


def test_keyboard_alone_uploads_into_the_archive(page: Page, site: Server, tmp_path: Path) -> None:
    zipped = tmp_path / "keys.zip"
    zipped.write_bytes(session_zip(site.root, "DEMO01_S002_MR1", folder="WEB_KEYS"))
    log_in(page, site)
    page.goto(site.url + "/app/upload")
    page.keyboard.press("Tab")  # the skip link comes first
    project = page.get_by_label("1. Project")
    project.focus()
    page.keyboard.type("DEMO01")  # a select's type-ahead
    expect(project).to_have_value("DEMO01")
    page.keyboard.press("Tab")
    expect(page.get_by_label("2. Importer")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Ignore unparsable files")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.get_by_label("Ignore unparsable files")).to_be_checked()
    page.keyboard.press("Tab")  # into the destination group, at its checked radio
    expect(page.get_by_label(re.compile("^Prearchive"))).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("Archive", exact=True)).to_be_checked()
    page.keyboard.press("Tab")
    expect(page.get_by_label("4. Archive file")).to_be_focused()
    choose_by_keyboard(page).set_files(str(zipped))
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Begin upload")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#upload-status")).to_contain_text("Import done:", timeout=180_000)
    page.keyboard.press("Tab")  # the result link follows the button
    expect(page.get_by_role("link", name=re.compile("WEB_KEYS$"))).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("WEB_KEYS")


def test_a_1_gib_upload_through_the_page(page: Page, site: Server, tmp_path: Path) -> None:
    """Chromium sends a 1 GiB archive with the upload form; the server's peak memory grows
    by far less than the upload, and the session arrives."""
    zipped = tmp_path / "big.zip"
    big_session_zip(site, zipped, "WEB_BIG")
    before = peak_rss_kib(site.process.pid)
    log_in(page, site)
    upload_zip(page, site, zipped, "archive")
    grown = peak_rss_kib(site.process.pid) - before
    assert grown < 100 * 1024, f"the server's peak memory grew by {grown // 1024} MiB"
    expect(page.get_by_role("link", name=re.compile("WEB_BIG$"))).to_be_visible()

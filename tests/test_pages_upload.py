"""The pages that bring data in, over plain HTTP: the compressed uploader and its activity
tracker, the prearchive page, and the subject form, spreadsheet and XML upload.  Each page
writes through the REST API as its visitor, so its refusals are the API's, word for word;
these tests hold the pages to that.  The browser walk-through is in
``test_pages_upload_browser.py``.
"""

from __future__ import annotations

import html
import io
import re
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from minixnat.pages import spreadsheet
from minixnat.store import Store
from minixnat.store.activity import INTERRUPTED, KEEP
from tests.conftest import Server
from tests.ecatfiles import ecat7
from tests.test_minixnat_api import _admin
from tests.test_minixnat_writes import call, dicom_md5s, server_md5s, session_zip
from tests.test_pages import csrf_of, login
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.upload import parse_subjects


@pytest.fixture
def site(serve: Callable[..., Server], archive: Path) -> Server:
    _admin(archive, "user", "add", "mia", "--password", "pw")
    _admin(archive, "user", "add", "cole", "--password", "pw")
    _admin(archive, "project", "member", "DEMO01", "mia", "member")
    _admin(archive, "project", "member", "DEMO01", "cole", "collaborator")
    return serve()


def upload(
    browser: requests.Session,
    server: Server,
    data: bytes,
    *,
    project: str = "DEMO01",
    destination: str = "archive",
    name: str = "session.zip",
    as_json: bool = False,
    csrf: str | None = None,
) -> requests.Response:
    """Post the upload form as a browser does: the fields, then the file."""
    token = csrf if csrf is not None else csrf_of(browser.get(server.url + "/app/upload").text)
    return browser.post(
        server.url + "/app/upload",
        data={
            "csrf": token,
            "project": project,
            "importer": "DICOM-zip",
            "destination": destination,
        },
        files={"file": (name, data, "application/zip")},
        headers={"Accept": "application/json"} if as_json else {},
        allow_redirects=False,
        timeout=120,
    )


def api_import(
    site: Server,
    data: bytes,
    dest: str,
    *,
    auth: tuple[str, str] = ("admin", "admin"),
    handler: str = "DICOM-zip",
) -> requests.Response:
    """A zip POSTed to the REST import service into DEMO01, as a script sends it."""
    return requests.post(
        f"{site.url}/data/services/import",
        params={"import-handler": handler, "PROJECT_ID": "DEMO01", "dest": dest},
        auth=auth,
        data=data,
        headers={"Content-Type": "application/zip"},
        timeout=120,
    )


def api_message(answer: requests.Response) -> str:
    """The message of the REST API's status page."""
    found = re.search(r"<h3>(.*?)</h3>", answer.text, re.S)
    assert found, answer.text
    return html.unescape(found.group(1))


def activities(browser: requests.Session, server: Server) -> list[dict[str, Any]]:
    answer = browser.get(server.url + "/app/activity?format=json", timeout=30)
    assert answer.status_code == 200
    rows: list[dict[str, Any]] = answer.json()["activities"]
    return rows


# -- the compressed uploader ---------------------------------------------------------------
def test_upload_targets_are_the_projects_the_user_may_write(site: Server) -> None:
    mia = login(site, "mia", "pw").get(site.url + "/app/upload").text
    assert re.findall(r'<option value="(DEMO\d+)"', mia) == ["DEMO01"]
    admin = login(site, "admin", "admin").get(site.url + "/app/upload").text
    assert re.findall(r'<option value="(DEMO\d+)"', admin) == ["DEMO01", "DEMO02"]
    cole = login(site, "cole", "pw").get(site.url + "/app/upload").text
    assert 'id="no-targets"' in cole
    assert "<select" not in cole
    guest = requests.get(site.url + "/app/upload", allow_redirects=False, timeout=30)
    assert guest.status_code == 303
    assert guest.headers["Location"].startswith("/app/login")


def test_upload_into_the_archive_lands_on_the_tracker_page(site: Server, archive: Path) -> None:
    mia = login(site, "mia", "pw")
    data = session_zip(archive, "DEMO01_S001_MR1", folder="FORMS1")
    answer = upload(mia, site, data)
    assert answer.status_code == 303
    where = answer.headers["Location"]
    assert re.fullmatch(r"/app/activity/\d+", where)
    tracker = mia.get(site.url + where).text
    files = len(dicom_md5s(archive, "DEMO01_S001_MR1"))
    assert f"done: {files} files in 1 session" in tracker
    link = re.search(r'href="(/app/experiments/[^"]+)"', tracker)
    assert link, tracker
    uri = "/data/projects/DEMO01/experiments/FORMS1"
    assert server_md5s(site, uri) == dicom_md5s(archive, "DEMO01_S001_MR1")
    (row,) = activities(mia, site)
    assert row["state"] == "done"
    assert row["files"] == files
    assert row["filename"] == "session.zip"
    assert row["destination"] == "archive"
    assert row["links"][0]["href"] == link.group(1)


def test_upload_with_script_answers_json_and_goes_to_the_prearchive(
    site: Server, archive: Path
) -> None:
    mia = login(site, "mia", "pw")
    data = session_zip(archive, "DEMO01_S001_MR1", folder="PRE1")
    answer = upload(mia, site, data, destination="prearchive", as_json=True)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"]
    assert result["state"] == "done"
    (link,) = result["links"]
    assert link["href"].startswith("/app/prearchive/DEMO01/")
    listing = mia.get(site.url + "/app/prearchive").text
    assert "PRE1" in listing
    assert link["href"] in listing
    assert call(site, "GET", "/data/projects/DEMO01/experiments/PRE1").status_code == 404


def test_refused_uploads_keep_nothing_and_say_why(site: Server, archive: Path) -> None:
    data = session_zip(archive, "DEMO01_S001_MR1", folder="NOPE1")
    mia = login(site, "mia", "pw")
    forged = upload(mia, site, data, csrf="0" * 32)
    assert forged.status_code == 403
    assert "out of date" in forged.text
    empty = upload(mia, site, b"", as_json=True)
    assert empty.status_code == 400
    assert empty.json()["message"].startswith("Choose a .zip")
    # A collaborator may not upload: the page says what the import service says.
    cole = login(site, "cole", "pw")
    token = csrf_of(cole.get(site.url + "/").text)
    refused = upload(cole, site, data, as_json=True, csrf=token)
    api = api_import(site, data, "/archive", auth=("cole", "pw"))
    assert refused.status_code == api.status_code == 403
    assert refused.json()["message"] == api_message(api)
    assert [a["state"] for a in activities(cole, site)] == ["failed", "failed"]
    # Not a zip at all: the import service's message, and the tracker keeps it.
    broken = upload(mia, site, b"not a zip", as_json=True)
    assert broken.status_code == 400
    assert "not a readable zip archive" in broken.json()["message"]
    states = [(a["state"], a["message"]) for a in activities(mia, site)]
    assert states[0] == ("failed", broken.json()["message"])
    assert len(states) == 3
    assert all(s == "failed" for s, _ in states)
    assert call(site, "GET", "/data/projects/DEMO01/experiments/NOPE1").status_code == 404
    assert list((archive / "tmp").iterdir()) == []


def test_imports_through_the_api_are_tracked_too(site: Server, archive: Path) -> None:
    data = session_zip(archive, "DEMO01_S001_MR1", folder="API1")
    answer = api_import(site, data, "/prearchive", auth=("mia", "pw"))
    assert answer.status_code == 200
    mia = login(site, "mia", "pw")
    (row,) = activities(mia, site)
    assert row["state"] == "done"
    assert row["destination"] == "prearchive"
    assert row["filename"] == ""  # a raw body has no name
    others = activities(login(site, "admin", "admin"), site)
    assert row["activity"] not in [a["activity"] for a in others]  # one's own only
    page = mia.get(site.url + "/").text
    assert 'id="activity-indicator" data-running="0"' in page


def test_an_import_cut_off_by_a_stop_is_failed_at_the_next_start(
    serve: Callable[..., Server], archive: Path
) -> None:
    store = Store(archive)
    running = store.start_activity("admin", project="DEMO01")
    store.close()
    server = serve()
    admin = login(server, "admin", "admin")
    (row,) = [a for a in activities(admin, server) if a["activity"] == running]
    assert (row["state"], row["message"]) == ("failed", INTERRUPTED)


# -- the prearchive page -------------------------------------------------------------------
def _to_prearchive(site: Server, archive: Path, *folders: str) -> list[str]:
    """Import sessions into DEMO01's prearchive through the API; their page links."""
    links = []
    for folder in folders:
        data = session_zip(archive, "DEMO01_S001_MR1", folder=folder)
        answer = api_import(site, data, "/prearchive")
        assert answer.status_code == 200, answer.text
        links.append(
            "/app"
            + answer.text.strip()
            .removeprefix("/data")
            .replace("/prearchive/projects/", "/prearchive/")
        )
    return links


def test_prearchive_page_archives_with_new_labels(site: Server, archive: Path) -> None:
    (link,) = _to_prearchive(site, archive, "PA1")
    mia = login(site, "mia", "pw")
    details = mia.get(site.url + link)
    assert details.status_code == 200
    assert re.search(r"<th scope=\"row\">\d+</th>", details.text)  # its scans
    token = csrf_of(details.text)
    form = {
        "csrf": token,
        "action": "archive",
        "project": "DEMO01",
        "subject": "NEWSUBJ",
        "session": "RELABELLED",
    }
    done = mia.post(site.url + link, data=form, allow_redirects=False)
    assert done.status_code == 303
    assert done.headers["Location"].startswith("/app/experiments/")
    found = call(site, "GET", "/data/projects/DEMO01/subjects/NEWSUBJ/experiments/RELABELLED")
    assert found.status_code == 200
    assert "PA1" not in mia.get(site.url + "/app/prearchive").text


def test_prearchive_page_refuses_as_the_api_does(site: Server, archive: Path) -> None:
    first, second = _to_prearchive(site, archive, "DUP1", "DUP2")
    mia = login(site, "mia", "pw")
    token = csrf_of(mia.get(site.url + first).text)
    form = {
        "csrf": token,
        "action": "archive",
        "project": "DEMO01",
        "subject": "S9",
        "session": "SAME",
    }
    assert mia.post(site.url + first, data=form, allow_redirects=False).status_code == 303
    # The same label again: the API answers 409, and the page shows its message.
    src = "/prearchive/" + second.removeprefix("/app/prearchive/").replace(
        "DEMO01/", "projects/DEMO01/", 1
    )
    api = call(site, "POST", f"/data/services/archive?src={src}&subject=S9&session=SAME")
    assert api.status_code == 409
    refused = mia.post(site.url + second, data=form, allow_redirects=False)
    assert refused.status_code == 409
    assert html.escape(api_message(api)) in refused.text
    # Moving to a project mia may not write: the API's 403, on the page.
    move = {"csrf": token, "action": "move", "newProject": "DEMO02"}
    moved = mia.post(site.url + second, data=move, allow_redirects=False)
    assert moved.status_code == 404
    assert "DEMO02" in moved.text


def test_prearchive_bulk_actions_report_each_session(site: Server, archive: Path) -> None:
    links = _to_prearchive(site, archive, "B1", "B2", "B3")
    admin = login(site, "admin", "admin")
    listing = admin.get(site.url + "/app/prearchive").text
    sources = re.findall(r'name="src" value="([^"]+)"', listing)
    assert len(sources) == 3
    token = csrf_of(listing)
    moved = admin.post(
        site.url + "/app/prearchive",
        data={"csrf": token, "action": "move", "newProject": "DEMO02", "src": sources[:1]},
    )
    assert moved.status_code == 200
    assert "1 of 1 done" in moved.text
    deleted = admin.post(
        site.url + "/app/prearchive", data={"csrf": token, "action": "delete", "src": sources[1:]}
    )
    assert "2 of 2 done" in deleted.text
    rows = call(site, "GET", "/data/prearchive/projects?format=json").json()["ResultSet"]["Result"]
    assert [(r["project"], r["name"]) for r in rows] == [("DEMO02", "B1")]
    stale = admin.post(
        site.url + "/app/prearchive", data={"csrf": token, "action": "delete", "src": sources[1:2]}
    )
    assert stale.status_code == 400
    assert "refused: No prearchive session" in stale.text
    assert links  # the import links were prearchive pages


# -- subjects ------------------------------------------------------------------------------
def _subject(site: Server, label: str) -> dict[str, Any]:
    """A subject's fields, demographics and custom fields (``field:NAME``) from the API."""
    answer = call(site, "GET", f"/data/projects/DEMO01/subjects/{label}?format=json")
    assert answer.status_code == 200, answer.text
    item = answer.json()["items"][0]
    fields: dict[str, Any] = dict(item["data_fields"])
    for child in item["children"]:
        for sub in child["items"]:
            if child["field"] == "demographics":
                fields.update(sub["data_fields"])
            else:
                fields[f"field:{sub['data_fields']['name']}"] = sub["data_fields"]["field"]
    return fields


def test_subject_form_creates_validates_and_edits(site: Server) -> None:
    mia = login(site, "mia", "pw")
    form_page = mia.get(site.url + "/app/projects/DEMO01/add-subject")
    assert form_page.status_code == 200
    token = csrf_of(form_page.text)
    base = {
        "csrf": token,
        "label": "FORM01",
        "gender": "female",
        "dob": "",
        "yob": "1980",
        "handedness": "left",
        "new_field": "site",
        "new_value": "north",
    }
    bad = mia.post(
        site.url + "/app/projects/DEMO01/add-subject", data={**base, "dob": "1980-13-40"}
    )
    api = call(site, "PUT", "/data/projects/DEMO01/subjects/X?dob=1980-13-40")
    assert bad.status_code == api.status_code == 400
    assert "Invalid date of birth &#39;1980-13-40&#39;: use YYYY-MM-DD." in bad.text
    assert 'value="FORM01"' in bad.text  # what was typed stays
    made = mia.post(site.url + "/app/projects/DEMO01/add-subject", data=base, allow_redirects=False)
    assert made.status_code == 303, made.text
    assert made.headers["Location"] == "/app/projects/DEMO01/subjects/FORM01"
    fields = _subject(site, "FORM01")
    assert (fields["gender"], fields["yob"], fields["handedness"]) == ("female", "1980", "left")
    assert fields["field:site"] == "north"
    again = mia.post(site.url + "/app/projects/DEMO01/add-subject", data=base)
    assert again.status_code == 409
    assert "already has a subject FORM01" in again.text
    edit = mia.get(site.url + "/app/projects/DEMO01/subjects/FORM01/edit").text
    assert 'name="field:site" id="field-1" value="north"' in edit
    changed = mia.post(
        site.url + "/app/projects/DEMO01/subjects/FORM01/edit",
        data={
            "csrf": token,
            "label": "FORM02",
            "gender": "",
            "yob": "1981",
            "handedness": "left",
            "field:site": "<i>south</i>",
        },
        allow_redirects=False,
    )
    assert changed.headers["Location"] == "/app/projects/DEMO01/subjects/FORM02"
    fields = _subject(site, "FORM02")
    assert (fields.get("gender", ""), fields["yob"]) == ("", "1981")
    assert fields["field:site"] == "<i>south</i>"
    shown = mia.get(site.url + "/app/projects/DEMO01/subjects/FORM02").text
    assert "<dd>&lt;i&gt;south&lt;/i&gt;</dd>" in shown  # escaped, never markup
    assert "<i>south" not in shown
    cole = login(site, "cole", "pw")
    assert cole.get(site.url + "/app/projects/DEMO01/add-subject").status_code == 403


SHEET = (
    "label,gender,dob,handedness,site\n"
    + "".join(
        f"SHEET{i:02d},{'mf'[i % 2]},19{60 + i}-01-0{1 + i % 9},right,north\n" for i in range(20)
    )
    + "SHEET99,banana,,,\n"
)


def test_spreadsheet_creates_subjects_and_reports_each_row(site: Server) -> None:
    mia = login(site, "mia", "pw")
    page = mia.get(site.url + "/app/projects/DEMO01/spreadsheet").text
    template = mia.get(site.url + "/app/projects/DEMO01/spreadsheet.csv")
    assert template.text.splitlines()[0].startswith("label,gender,dob,yob,handedness")
    answer = mia.post(
        site.url + "/app/projects/DEMO01/spreadsheet",
        data={"csrf": csrf_of(page)},
        files={"file": ("subjects.csv", SHEET.encode(), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert "20 created, 0 updated, 1 refused." in answer.text
    refused = re.search(
        r'<tr class="refused"><td class="num">(\d+)</td>.*?<td>([^<]*)</td></tr>', answer.text
    )
    assert refused
    assert refused.group(1) == "22"
    assert "Invalid gender &#39;banana&#39;" in refused.group(2)
    assert (_subject(site, "SHEET07")["gender"], _subject(site, "SHEET08")["gender"]) == (
        "female",
        "male",
    )
    again = mia.post(
        site.url + "/app/projects/DEMO01/spreadsheet",
        data={"csrf": csrf_of(page)},
        files={"file": ("s.csv", b"label,site\nSHEET01,south\n", "text/csv")},
    )
    assert "0 created, 1 updated, 0 refused." in again.text
    headless = mia.post(
        site.url + "/app/projects/DEMO01/spreadsheet",
        data={"csrf": csrf_of(page)},
        files={"file": ("s.csv", b"name,site\nA,b\n", "text/csv")},
    )
    assert headless.status_code == 400
    assert "no label column" in headless.text


@pytest.mark.parametrize(
    "text",
    [
        SHEET,
        "Subject,GENDER,yob,extra\nA1,m,1970,x\nA1,f,1971,y\nbad label,,,\n,,,\nB2,,20x0,z,too\n",
        "\ufeffid;site\nC1;n\n",
        'label;gender;site\nD1;f;north\nD2;x;"a;b"\n',
        "label\tyob\nE1\t1960\nE2\t1961\textra\n",
        'id,"note; with semicolons"\nF1,x\n',
        "label\n.dot\n_ok\n",
    ],
)
def test_spreadsheet_rules_are_the_clients(text: str) -> None:
    """Which rows the page refuses, and what the others set, as ``upload subjects.csv``."""
    try:
        rows, errors = parse_subjects(text)
    except UsageError:
        with pytest.raises(spreadsheet.SheetError, match="no label column"):
            spreadsheet.read(text)
        return
    ours = spreadsheet.read(text)
    assert [(r.line, r.refused) for r in ours if r.refused] == [
        (e.line, e.message) for e in errors if "label" in e.message or "cells" in e.message
    ]
    accepted = {r.line: (r.label, r.fields) for r in ours if not r.refused}
    assert {r.line: (r.label, r.fields) for r in rows}.items() <= accepted.items()


def post_xml(browser: requests.Session, site: Server, document: bytes) -> requests.Response:
    """The Upload XML form, sent with one document."""
    page = browser.get(site.url + "/app/projects/DEMO01/upload-xml").text
    return browser.post(
        site.url + "/app/projects/DEMO01/upload-xml",
        data={"csrf": csrf_of(page)},
        files={"file": ("document.xml", document, "text/xml")},
        allow_redirects=False,
    )


def test_xml_upload_creates_a_subject_and_a_session(site: Server) -> None:
    mia = login(site, "mia", "pw")
    subject = (
        b'<?xml version="1.0"?>\n<!-- a subject -->\n<xnat:Subject label="XMLSUB" '
        b'xmlns:xnat="http://nrg.wustl.edu/xnat"><xnat:demographics '
        b'xsi:type="xnat:demographicData" xmlns:xsi="http://www.w3.org/2001/'
        b'XMLSchema-instance"><xnat:gender>male</xnat:gender></xnat:demographics>'
        b"</xnat:Subject>"
    )
    made = post_xml(mia, site, subject)
    assert made.status_code == 303, made.text
    assert made.headers["Location"] == "/app/projects/DEMO01/subjects/XMLSUB"
    assert _subject(site, "XMLSUB")["gender"] == "male"
    session = (
        b'<xnat:MRSession label="XMLSESS" xmlns:xnat="http://nrg.wustl.edu/xnat">'
        b"<xnat:date>2020-02-03</xnat:date><xnat:subject_ID>XMLSUB</xnat:subject_ID>"
        b"</xnat:MRSession>"
    )
    made = post_xml(mia, site, session)
    assert made.status_code == 303
    assert made.headers["Location"].startswith("/app/experiments/")
    found = call(site, "GET", "/data/projects/DEMO01/subjects/XMLSUB/experiments/XMLSESS")
    assert found.status_code == 200
    junk = post_xml(mia, site, b"hello")
    assert junk.status_code == 400
    assert "not an XML document" in junk.text


# -- a large upload ------------------------------------------------------------------------
def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert found, status
    return int(found.group(1))


def big_session_zip(site: Server, zipped: Path, folder: str) -> int:
    """A session zip holding 1 GiB of filler beside its DICOM (passed over by the importer
    with Ignore-Unparsable); its size."""
    dicom = session_zip(site.root, "DEMO01_S001_MR1", folder=folder)
    with zipfile.ZipFile(io.BytesIO(dicom)) as small, zipfile.ZipFile(zipped, "w") as zf:
        for info in small.infolist():
            zf.writestr(info, small.read(info))
        with zf.open(f"{folder}/notes/filler.bin", "w", force_zip64=True) as filler:
            block = bytes(range(256)) * 4096  # 1 MiB, stored as it is
            for _ in range(1024):
                filler.write(block)
    size = zipped.stat().st_size
    assert size > 1024**3
    return size


def test_a_1_gib_upload_keeps_the_servers_memory_flat(site: Server, tmp_path: Path) -> None:
    """A session zip holding 1 GiB besides its DICOM goes through the page's form as a
    chunked stream; the server's peak memory grows by far less than the upload, and the
    tracker shows it receiving while it arrives."""
    zipped = tmp_path / "big.zip"
    size = big_session_zip(site, zipped, "BIG1")
    mia = login(site, "mia", "pw")
    token = csrf_of(mia.get(site.url + "/app/upload").text)
    boundary = "----minixnat-test-boundary"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in [
            ("csrf", token),
            ("project", "DEMO01"),
            ("importer", "DICOM-zip"),
            ("destination", "archive"),
            ("ignore", "true"),
        ]
    ) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    )

    halfway = threading.Event()

    def body() -> Iterator[bytes]:
        yield head.encode()
        with zipped.open("rb") as source:
            while chunk := source.read(1024 * 1024):
                if source.tell() > size // 2:
                    halfway.wait(60)  # the tracker is looked at with the body half sent
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    before = peak_rss_kib(site.process.pid)
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(
            mia.post,
            site.url + "/app/upload",
            data=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Accept": "application/json",
            },
            timeout=600,
        )
        watcher = login(site, "mia", "pw")
        for _ in range(200):
            running = activities(watcher, site)
            if running and running[0]["state"] == "receiving":
                break
            time.sleep(0.05)
        page = watcher.get(site.url + "/app/sessions").text
        halfway.set()
        answer = sent.result()
    assert running[0]["state"] == "receiving"
    assert 'data-running="1">Uploads <span class="badge">1 running</span>' in page
    grown = peak_rss_kib(site.process.pid) - before
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["state"] == "done"
    assert result["summary"].startswith("done: ")  # the DICOM files; the filler is passed over
    assert grown < 100 * 1024, f"the server's peak memory grew by {grown // 1024} MiB"
    (row,) = activities(mia, site)
    assert row["activity"] == result["activity"]
    assert list((site.root / "tmp").iterdir()) == []  # nothing of the upload is left behind


# -- ECAT through the classic importer -----------------------------------------------------
def _ecat_zip() -> bytes:
    """Three ECAT files of one patient: two scans on one day, one the next day."""
    day = datetime(2021, 3, 4, 9, 30, tzinfo=UTC)
    files = [
        ("p7_fdg", day, "FDG brain"),
        ("p7_tx", day.replace(hour=10), "transmission"),
        ("p7_later", day.replace(day=5), "FDG brain"),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, started, description in files:
            made = ecat7("P7", started, patient_name="Pat^Seven", description=description)
            zf.writestr(f"pet/{name}.v", made)
    return buf.getvalue()


def test_the_classic_importer_takes_ecat_and_dicom_zip_says_so(site: Server) -> None:
    data = _ecat_zip()
    refused = api_import(site, data, "/archive")
    assert refused.status_code == 400
    assert "pet/p7_fdg.v: ECAT files are imported by the classic importer" in api_message(refused)
    mia = login(site, "mia", "pw")
    token = csrf_of(mia.get(site.url + "/app/upload").text)
    answer = mia.post(
        site.url + "/app/upload",
        data={"csrf": token, "project": "DEMO01", "importer": "SI", "destination": "archive"},
        files={"file": ("pet.zip", data, "application/zip")},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["summary"] == "done: 3 files in 2 sessions"
    sessions = call(site, "GET", "/data/projects/DEMO01/subjects/Pat_Seven/experiments?format=json")
    rows = sessions.json()["ResultSet"]["Result"]
    assert sorted((r["date"], r["xsiType"]) for r in rows) == [
        ("2021-03-04", "xnat:petSessionData"),
        ("2021-03-05", "xnat:petSessionData"),
    ]
    first = next(r for r in rows if r["date"] == "2021-03-04")
    scans = call(site, "GET", f"/data/experiments/{first['ID']}/scans?format=json")
    found = sorted((s["ID"], s["type"], s["xsiType"]) for s in scans.json()["ResultSet"]["Result"])
    assert found == [
        ("p7_fdg", "FDG brain", "xnat:petScanData"),
        ("p7_tx", "transmission", "xnat:petScanData"),
    ]
    files = call(site, "GET", f"/data/experiments/{first['ID']}/scans/p7_fdg/resources?format=json")
    (resource,) = files.json()["ResultSet"]["Result"]
    assert (resource["label"], resource["format"]) == ("ECAT", "ECAT")


def test_ecat_in_the_upload_layout_keeps_its_folder_names(site: Server) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        started = datetime(2020, 1, 2, 8, 0, tzinfo=UTC)
        zf.writestr("PETSESS/scans/3/resources/ECAT/files/a.v", ecat7("P8", started))
    answer = api_import(site, buf.getvalue(), "/archive", handler="SI")
    assert answer.status_code == 200, answer.text
    assert answer.text.strip() == "/data/archive/projects/DEMO01/subjects/P8/experiments/PETSESS"
    listed = call(
        site, "GET", "/data/projects/DEMO01/experiments/PETSESS/scans/3/files?format=json"
    )
    assert [r["Name"] for r in listed.json()["ResultSet"]["Result"]] == ["a.v"]


def test_a_logged_out_upload_script_gets_a_message_not_the_login_page(site: Server) -> None:
    answer = requests.post(
        site.url + "/app/upload",
        files={"file": ("s.zip", b"PK", "application/zip")},
        headers={"Accept": "application/json"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 401
    assert answer.json()["message"].startswith("You are not logged in")
    page = requests.get(site.url + "/app/upload", allow_redirects=False, timeout=30)
    assert page.status_code == 303  # a browser without the script is sent to log in


def test_the_tracker_keeps_a_recent_history(tmp_path: Path) -> None:
    """Each user's ended imports beyond the newest KEEP are dropped; running ones stay."""
    store = Store(tmp_path / "archive")
    try:
        running = store.start_activity("mia")
        for _ in range(KEEP + 5):
            store.end_activity(store.start_activity("mia"), "done", files=1)
        store.end_activity(store.start_activity("cole"), "failed", message="no")
        mine = store.recent_activities("mia", limit=10 * KEEP)
        assert len(mine) == KEEP + 1  # the newest KEEP ended ones, and the running one
        assert running in [a.id for a in mine]
        assert mine[0].id > mine[-2].id
        assert len(store.recent_activities("cole")) == 1
    finally:
        store.close()


def test_a_tar_gz_goes_through_the_page_too(site: Server, archive: Path) -> None:
    base = archive / "archive" / "DEMO01" / "arc001" / "DEMO01_S001_MR1" / "SCANS"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(base.glob("*/DICOM/*")):
            scan = path.parent.parent.name
            tf.add(path, f"TARGZ1/scans/{scan}/resources/DICOM/files/{path.name}")
    mia = login(site, "mia", "pw")
    answer = upload(mia, site, buf.getvalue(), name="session.tar.gz", as_json=True)
    assert answer.status_code == 200, answer.text
    sent = dicom_md5s(archive, "DEMO01_S001_MR1")
    assert answer.json()["summary"] == f"done: {len(sent)} files in 1 session"
    assert server_md5s(site, "/data/projects/DEMO01/experiments/TARGZ1") == sent

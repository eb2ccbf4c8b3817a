"""minixnat's web pages over plain HTTP: who sees what, form protection, dead cookies,
escaping, and the download page's decisions (pure).  The browser tests are in
``test_pages_browser.py``."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from minixnat.pages.choices import (
    NO_TYPE,
    FormError,
    ScanChoice,
    SessionChoices,
    read_form,
    tally,
)
from minixnat.pages.download import handoff_command
from minixnat.pages.visit import safe_next
from tests.conftest import Server
from tests.test_download import ENV, cli
from tests.test_minixnat_api import _admin
from xnat_downloader.xnat.parse import catalog_link, same_server, server_of_link


def login_csrf(browser: requests.Session, server: Server) -> str:
    """Open the login form, as a browser does first; its token for the post."""
    return csrf_of(browser.get(server.url + "/app/login", timeout=30).text)


def login(server: Server, user: str, password: str) -> requests.Session:
    browser = requests.Session()
    answer = browser.post(
        server.url + "/app/login",
        data={
            "username": user,
            "password": password,
            "next": "/",
            "csrf": login_csrf(browser, server),
        },
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303, answer.text
    assert "JSESSIONID" in browser.cookies
    return browser


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


@pytest.fixture
def site(serve: Callable[..., Server], archive: Path) -> Server:
    _admin(archive, "user", "add", "mia", "--password", "pw")
    _admin(archive, "project", "member", "DEMO01", "mia", "member")
    return serve()


# -- who sees what ---------------------------------------------------------------------------


def test_guest_is_sent_to_log_in_and_comes_back(site: Server) -> None:
    home = requests.get(site.url + "/", timeout=30)
    assert home.status_code == 200
    # xnatpy's guest check reads exactly this markup.
    assert '<span id="user_info">Logged in as: <span style="color:red;">Guest</span>' in home.text
    assert "DEMO01" not in home.text  # private projects are not listed for guests
    for path in ("/app/projects/DEMO01", "/app/projects/NOPE", "/app/download?project=DEMO01"):
        answer = requests.get(site.url + path, allow_redirects=False, timeout=30)
        assert answer.status_code == 303, path
        assert answer.headers["Location"].startswith("/app/login?next=%2Fapp%2F"), path
    browser = requests.Session()
    form = browser.get(site.url + "/app/login?next=%2Fapp%2Fprojects%2FDEMO01", timeout=30)
    assert 'value="/app/projects/DEMO01"' in form.text
    done = browser.post(
        site.url + "/app/login",
        data={
            "username": "mia",
            "password": "pw",
            "next": "/app/projects/DEMO01",
            "csrf": csrf_of(form.text),
        },
        timeout=30,
    )
    assert done.url.endswith("/app/projects/DEMO01")
    assert "Download images" in done.text


def test_login_failure_and_open_redirects(site: Server) -> None:
    browser = requests.Session()
    answer = browser.post(
        site.url + "/app/login",
        data={
            "username": "mia",
            "password": "wrong",
            "next": "/",
            "csrf": login_csrf(browser, site),
        },
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 401
    assert "WWW-Authenticate" not in answer.headers  # no browser password prompt
    assert "Login attempt failed" in answer.text
    assert 'value="mia"' in answer.text  # the user name is kept, the password is not
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        browser = requests.Session()
        token = login_csrf(browser, site)
        answer = browser.post(
            site.url + "/app/login",
            data={"username": "mia", "password": "pw", "next": target, "csrf": token},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.headers["Location"] == "/", target
    assert safe_next("/app/sessions?q=a") == "/app/sessions?q=a"


def test_login_form_resists_login_csrf(site: Server) -> None:
    """Another site's form cannot log a browser in as someone else: a post without the
    form's cookie and token (or with a token for another cookie) opens no session."""
    for data, with_form in (
        ({"username": "mia", "password": "pw"}, False),  # a cross-site post: no cookie
        ({"username": "mia", "password": "pw", "csrf": "0" * 32}, True),  # a forged token
    ):
        browser = requests.Session()
        if with_form:
            login_csrf(browser, site)
        answer = browser.post(site.url + "/app/login", data=data, allow_redirects=False, timeout=30)
        assert answer.status_code == 403
        assert "reload the page" in answer.text
        assert "JSESSIONID" not in browser.cookies
        # The answer is a fresh form that works.
        retry = browser.post(
            site.url + "/app/login",
            data={**data, "csrf": csrf_of(answer.text)},
            allow_redirects=False,
            timeout=30,
        )
        assert retry.status_code == 303
        assert "JSESSIONID" in browser.cookies


def test_members_see_their_projects_only(site: Server) -> None:
    mia = login(site, "mia", "pw")
    home = mia.get(site.url + "/", timeout=30).text
    assert '<span id="user_info">Logged in as: &nbsp;<a href="/">mia</a>' in home
    assert "/app/projects/DEMO01" in home
    assert "/app/projects/DEMO02" not in home
    for path in ("/app/projects/DEMO02", "/app/download?project=DEMO02"):
        answer = mia.get(site.url + path, timeout=30)
        assert answer.status_code == 404, path
        assert "DEMO02_S001" not in answer.text
    other = requests.get(
        site.url + "/data/projects/DEMO02/experiments?format=json", auth=("admin", "admin")
    ).json()["ResultSet"]["Result"][0]["ID"]
    for path in (f"/app/experiments/{other}", f"/app/experiments/{other}/files"):
        assert mia.get(site.url + path, timeout=30).status_code == 404, path
    searched = mia.get(site.url + "/app/sessions", timeout=30).text
    assert "DEMO01_S001_MR1" in searched
    assert "DEMO02_" not in searched
    # A protected project is described to members of the site but shows no data.
    _admin(site.root, "project", "access", "DEMO02", "protected")
    protected = mia.get(site.url + "/app/projects/DEMO02", timeout=30)
    assert protected.status_code == 200
    assert "protected" in protected.text
    assert "DEMO02_S001" not in protected.text


def test_dead_session_cookie_leads_to_the_login_form_not_a_prompt(site: Server) -> None:
    browser = requests.Session()
    browser.cookies.set("JSESSIONID", "0123456789ABCDEF")
    answer = browser.get(site.url + "/app/projects/DEMO01", allow_redirects=False, timeout=30)
    assert answer.status_code == 303
    assert "WWW-Authenticate" not in answer.headers
    assert "JSESSIONID=;" in answer.headers["Set-Cookie"]
    assert "Max-Age=0" in answer.headers["Set-Cookie"]
    # The API still says 401, so scripts learn their session died.
    api = requests.get(
        site.url + "/data/projects", cookies={"JSESSIONID": "0123456789ABCDEF"}, timeout=30
    )
    assert api.status_code == 401


def test_logout_ends_the_session(site: Server) -> None:
    mia = login(site, "mia", "pw")
    home = mia.get(site.url + "/", timeout=30).text
    assert mia.get(site.url + "/app/logout", timeout=30).status_code == 405  # not a GET
    sid = mia.cookies["JSESSIONID"]
    out = mia.post(site.url + "/app/logout", data={"csrf": csrf_of(home)}, timeout=30)
    assert out.status_code == 200
    assert 'Logged in as: <span style="color:red;">Guest</span>' in out.text
    reuse = requests.get(site.url + "/data/projects", cookies={"JSESSIONID": sid}, timeout=30)
    assert reuse.status_code == 401


def test_forms_need_the_session_token(site: Server) -> None:
    mia = login(site, "mia", "pw")
    page = mia.get(site.url + "/app/download?project=DEMO01", timeout=30).text
    listed = re.findall(r'name="listed" value="([^"]+)"', page)
    form = [("listed", s) for s in listed] + [("pick", listed[0]), ("method", "zip")]
    form += [("format", "DICOM"), ("type", "T1w")]
    refused = mia.post(site.url + "/app/download", data=form, timeout=30)
    assert refused.status_code == 403
    forged = mia.post(site.url + "/app/download", data=[*form, ("csrf", "0" * 32)], timeout=30)
    assert forged.status_code == 403
    good = mia.post(
        site.url + "/app/download",
        data=[*form, ("csrf", csrf_of(page))],
        allow_redirects=False,
        timeout=30,
    )
    assert good.status_code == 303
    assert re.fullmatch(r"/app/download/mia-[0-9_]+\?method=zip", good.headers["Location"])
    cookie = good.headers.get("Set-Cookie", "") or mia.get(site.url + "/").headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie
    assert "HttpOnly" in cookie


def test_download_form_errors_name_the_fix(site: Server) -> None:
    mia = login(site, "mia", "pw")
    page = mia.get(site.url + "/app/download?project=DEMO01", timeout=30).text
    token = csrf_of(page)
    listed = re.findall(r'name="listed" value="([^"]+)"', page)
    base = [("csrf", token), *[("listed", s) for s in listed], ("method", "zip")]
    none = mia.post(site.url + "/app/download", data=base, timeout=30)
    assert none.status_code == 400
    assert "Choose at least one session" in none.text
    nothing = mia.post(site.url + "/app/download", data=[*base, ("pick", listed[0])], timeout=30)
    assert nothing.status_code == 400
    assert "scan format and one scan type" in nothing.text
    empty = mia.post(
        site.url + "/app/download",
        data=[*base, ("pick", listed[0]), ("format", "DICOM"), ("type", "NO-SUCH-TYPE")],
        timeout=30,
    )
    assert empty.status_code == 400
    assert "no files" in empty.text
    # What the user ticked survives the refusal.
    assert re.search(rf'value="{listed[0]}" id="pick-1" checked', empty.text)


def test_someone_elses_download_is_not_found(site: Server) -> None:
    admin = login(site, "admin", "admin")
    page = admin.get(site.url + "/app/download?project=DEMO01", timeout=30).text
    listed = re.findall(r'name="listed" value="([^"]+)"', page)
    made = admin.post(
        site.url + "/app/download",
        data=[
            ("csrf", csrf_of(page)),
            *[("listed", s) for s in listed],
            ("pick", listed[0]),
            ("method", "client"),
            ("format", "DICOM"),
            ("type", "T1w"),
        ],
        allow_redirects=False,
        timeout=30,
    )
    cid_path = made.headers["Location"].split("?")[0]
    mia = login(site, "mia", "pw")
    assert mia.get(site.url + cid_path, timeout=30).status_code == 404
    home = mia.get(site.url + "/", timeout=30).text
    stolen = mia.post(site.url + cid_path + "/handoff", data={"csrf": csrf_of(home)}, timeout=30)
    assert stolen.status_code == 404
    assert "XNAT_PASS" not in stolen.text


def test_user_text_is_escaped(site: Server) -> None:
    evil = "<script>alert(1)</script>"
    answer = requests.put(
        site.url + "/data/projects/DEMO01",
        params={"xnat:projectData/description": evil},
        auth=("admin", "admin"),
        timeout=30,
    )
    assert answer.status_code == 200
    page = login(site, "admin", "admin").get(site.url + "/app/projects/DEMO01", timeout=30)
    assert evil not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_static_files_are_only_the_packaged_ones(site: Server) -> None:
    css = requests.get(site.url + "/app/static/site.css", timeout=30)
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")
    for name in ("..%2Fsite.py", "site.py", "nope.css"):
        assert requests.get(site.url + f"/app/static/{name}", timeout=30).status_code in (
            400,
            404,
        )


# -- the download page's decisions (pure) ------------------------------------------------------

SESSIONS = [
    SessionChoices(
        "E1",
        "P",
        "S1",
        "MR1",
        scans=(ScanChoice("T1w", ("DICOM", "NIFTI")), ScanChoice("T2w", ("DICOM",))),
        resources=("QC",),
    ),
    SessionChoices("E2", "P", "S2", "MR2", scans=(ScanChoice("T1w", ("DICOM",)),)),
    SessionChoices("E3", "Q", "S3", "CT1", scans=(ScanChoice("", ("DICOM",)),)),
]


def test_tally_counts_scans_of_the_chosen_sessions() -> None:
    all_of = tally(SESSIONS, {"E1", "E2", "E3"})
    assert [(o.value, o.count) for o in all_of.types] == [(NO_TYPE, 1), ("T1w", 2), ("T2w", 1)]
    assert [(o.value, o.count) for o in all_of.formats] == [("DICOM", 4), ("NIFTI", 1)]
    some = tally(SESSIONS, {"E2"})
    # Every listed option stays, counted over the chosen sessions only.
    assert [(o.value, o.count) for o in some.types] == [(NO_TYPE, 0), ("T1w", 1), ("T2w", 0)]
    assert [(o.value, o.count) for o in some.resources] == [("QC", 0)]
    assert some.types[0].label == "(no type)"


def test_read_form_builds_the_xapi_selection() -> None:
    form = [
        ("pick", "E1"),
        ("pick", "E3"),
        ("pick", "E1"),
        ("method", "client"),
        ("format", "DICOM"),
        ("type", "T1w"),
        ("type", NO_TYPE),
        ("include_project", "1"),
        ("simplify", "1"),
    ]
    wanted = read_form(form, SESSIONS)
    assert wanted.method == "client"
    assert wanted.spec == {
        "sessions": ["P:S1:MR1:E1", "Q:S3:CT1:E3"],
        "projectIds": ["P", "Q"],
        "scan_formats": ["DICOM"],
        "scan_types": ["T1w", NO_TYPE],
        "resources": [],
        "assessors": [],
        "reconstructions": [],
        "options": ["projectIncludedInPath", "simplified"],
    }
    only_qc = read_form([("pick", "E1"), ("method", "zip"), ("resource", "QC")], SESSIONS)
    assert only_qc.spec["resources"] == ["QC"]
    assert only_qc.spec["scan_types"] == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ([("method", "zip")], "at least one session"),
        ([("pick", "E9"), ("method", "zip")], "E9 is not on this page"),
        ([("pick", "E1"), ("method", "ftp")], "download method"),
        ([("pick", "E1"), ("method", "zip"), ("type", "T1w")], "one scan format"),
    ],
)
def test_read_form_refusals(form: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FormError, match=message):
        read_form(form, SESSIONS)


@given(st.text(min_size=1).filter(lambda t: "\0" not in t))
def test_handoff_command_quotes_any_folder(folder: str) -> None:
    import shlex

    words = shlex.split(handoff_command("http://h:1", "u-1", "al ias", folder))
    assert words[-2:] == ["-o", folder]
    assert words[:6] == ["xnat-downloader", "download", "-w", "http://h:1", "-u", "al ias"]
    # no secret in the command (the folder, the last word, may be named anything)
    assert not any("XNAT_PASS" in w for w in words[:-2])
    assert words[words.index("--catalog") + 1] == "http://h:1/xapi/archive/download/u-1/xml"


def test_catalog_links_stay_on_the_named_server() -> None:
    link = "https://xnat.example.org/xnat/xapi/archive/download/a-1/xml"
    assert catalog_link(link) == link
    assert catalog_link("download.xml") is None
    assert server_of_link(link) == "https://xnat.example.org/xnat"
    assert same_server("https://xnat.example.org/xnat", link)
    assert not same_server("https://xnat.example.org/other", link)
    assert not same_server("http://xnat.example.org/xnat", link)
    assert not same_server("https://xnat.example.org:8443/xnat", link)
    assert not same_server("https://xnat.example.org.evil.com/xnat", link)
    assert same_server("https://XNAT.example.org:443/xnat/", link)


# -- the client's side of the hand-off: --catalog with a link -----------------------------------


def test_catalog_link_names_its_server_and_others_are_refused(
    shared_server: Server, tmp_path: Path
) -> None:
    made = requests.post(
        shared_server.url + "/xapi/archive/downloadwithsize",
        json={
            "sessions": ["DEMO01:DEMO01_S001:DEMO01_S001_MR1:XNAT_E00001"],
            "projectIds": ["DEMO01"],
            "scan_formats": ["DICOM"],
            "scan_types": ["T2w"],
        },
        auth=("admin", "admin"),
        timeout=30,
    ).json()
    link = f"{shared_server.url}/xapi/archive/download/{made['id']}/xml"
    # No -w (and no XNAT_HOST): the link names the server.
    no_host = {**ENV, "XNAT_HOST": ""}
    code, _, err = cli("download", "--catalog", link, "-o", str(tmp_path / "out"), env=no_host)
    assert code == 0, err
    fetched = list((tmp_path / "out").rglob("*.dcm"))
    assert len(fetched) == 3
    assert sum(p.stat().st_size for p in fetched) == int(made["size"])
    assert all("/scans/2-T2w/resources/DICOM/" in p.as_posix() for p in fetched)
    # A link on another server is not fetched with this server's credentials.
    elsewhere = "http://127.0.0.2:9/xapi/archive/download/x/xml"
    code, _, err = cli(
        "download", "-w", shared_server.url, "--catalog", elsewhere, "-o", str(tmp_path / "out2")
    )
    assert code == 2
    assert "is not on" in err


def test_path_options_shape_the_zip(site: Server) -> None:
    admin = login(site, "admin", "admin")
    page = admin.get(site.url + "/app/download?project=DEMO01", timeout=30).text
    listed = re.findall(r'name="listed" value="([^"]+)"', page)
    base = [("csrf", csrf_of(page)), *[("listed", s) for s in listed], ("pick", listed[0])]
    base += [("format", "DICOM"), ("type", "T1w"), ("method", "zip")]
    names = {}
    for label, options in {
        "plain": [],
        "subject": [("include_subject", "1")],
        "project": [("include_project", "1")],
        "simple": [("simplify", "1")],
    }.items():
        made = admin.post(
            site.url + "/app/download", data=base + options, allow_redirects=False, timeout=30
        )
        cid = made.headers["Location"].split("/")[-1].split("?")[0]
        body = admin.get(site.url + f"/xapi/archive/download/{cid}/zip", timeout=60).content
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            names[label] = sorted(zf.namelist())[0]
    session = "DEMO01_S001_MR1"
    assert names["plain"].startswith(f"{session}/scans/1-T1w/resources/DICOM/")
    assert names["subject"].startswith(f"DEMO01_S001/{session}/scans/")
    assert names["project"].startswith(f"DEMO01/DEMO01_S001/{session}/scans/")
    assert names["simple"].startswith(f"{session}/1/DICOM/")

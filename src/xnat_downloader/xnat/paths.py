"""XNAT's REST paths, built in one place with every segment quoted.

Everything else in the client receives these as plain strings (``transfer/`` fetches and
sends to them without knowing what they mean).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from xnat_downloader.errors import UsageError

LOGIN = "/data/JSESSION"  # GET with Basic credentials: a session cookie; DELETE: log out
IMPORT_SERVICE = "/data/services/import"
ARCHIVE_SERVICE = "/data/services/archive"
PREARCHIVE = "/data/prearchive"
TOKEN_ISSUE = "/data/services/tokens/issue"
_RESOURCE_FILE = re.compile(r"^(.*?/resources/[^/]+)/files/(.+)$")


def q(segment: str) -> str:
    """One path segment, quoted (a ``/`` in a label stays inside the segment)."""
    return quote(segment, safe="")


def project(pid: str) -> str:
    return f"/data/projects/{q(pid)}"


# XNAT's workflow service matches the pipeline name with SQL ``LIKE '%name%'`` and needs a
# name when no experiment is given: ``%`` names every pipeline.
ALL_WORKFLOWS = "/data/services/workflows/%25"


def project_subjects(pid: str) -> str:
    return f"{project(pid)}/subjects"


def project_experiments(pid: str) -> str:
    return f"{project(pid)}/experiments"


def accessibility(pid: str, access: str) -> str:
    return f"{project(pid)}/accessibility/{q(access)}"


def owner(pid: str, subject: str = "", session: str = "", scan: str = "") -> str:
    """The path of a project, subject, session (by label) or scan: where resources hang."""
    path = project(pid)
    if subject:
        path += f"/subjects/{q(subject)}"
    if session:
        path += f"/experiments/{q(session)}"
    if scan:
        path += f"/scans/{q(scan)}"
    return path


def derived(session_uri: str, collection: str, name: str) -> str:
    """An assessor (by label) or reconstruction (by ID) under a session path; its files'
    resources hang under ``…/out``."""
    return f"{session_uri}/{collection}/{q(name)}"


def experiment(eid: str) -> str:
    return f"/data/experiments/{q(eid)}"


def scan_of(session_uri: str, scan: str) -> str:
    """A scan under a session path (``/data/…/experiments/E``)."""
    return f"{session_uri}/scans/{q(scan)}"


def resource_files(owner_path: str, label: str) -> str:
    """The ``…/resources/{label}/files`` listing (and upload target) of an owner."""
    return f"{owner_path}/resources/{q(label)}/files"


def session_scan_files(session_uri: str, resource: str = "") -> str:
    """Every scan file of a session, from one listing (of one resource, if named)."""
    if resource:
        return f"{session_uri}/scans/ALL/resources/{q(resource)}/files"
    return f"{session_uri}/scans/ALL/files"


def session_files(session_uri: str) -> str:
    """The session's own resources' files."""
    return f"{session_uri}/files"


def prearchive(project_id: str | None = None) -> str:
    return f"{PREARCHIVE}/projects" + (f"/{q(project_id)}" if project_id else "")


def prearchive_service(action: str) -> str:
    """``move`` or ``delete`` of prearchive sessions."""
    return f"/data/services/prearchive/{q(action)}"


def under_data(rel: str) -> str:
    """A path as the ``/data`` API names it (listings give some, e.g. the prearchive's
    ``url`` column, without the prefix)."""
    return f"/data{rel}"


def relabelled(session_uri: str, old: str, new: str) -> str:
    """A session's URI once its label ``old`` is ``new``: the same URI when it names the
    session by ID (or by anything but ``old``)."""
    head, sep, last = session_uri.rpartition("/")
    return f"{head}{sep}{q(new)}" if sep and last == q(old) else session_uri


def is_prearchive(uri: str) -> bool:
    return uri.startswith(PREARCHIVE)


def split_resource_file(uri: str) -> tuple[str, str] | None:
    """``(…/resources/{label}, path in the resource)`` of a file URI, or None."""
    match = _RESOURCE_FILE.match(uri)
    return (match.group(1), match.group(2)) if match else None


def files_listing_of(file_uri: str) -> tuple[str, str] | None:
    """``(the …/files listing a file is in, its quoted path there)``, or None."""
    listing, sep, rel = file_uri.partition("/files/")
    return (f"{listing}/files", rel) if sep else None


def resource_zip(resource_uri: str) -> tuple[str, dict[str, str]]:
    """The request for a whole resource as one zip: stored, not deflated (DICOM barely
    compresses, and deflating costs the server a core per stream; XNAT honours it too)."""
    return f"{resource_uri}/files", {"format": "zip", "compression": "0"}


def path_in_resource_zip(member: str) -> str | None:
    """The path inside the resource that a member of XNAT's resource zip names (XNAT's zip
    structures put it after ``/files/``), or None when the name does not say."""
    return member.split("/files/", 1)[1] if "/files/" in member else None


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` taken out, for messages: a password typed into
    a URL is never printed."""
    return re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@", r"\1", url.strip(), count=1)


def split_given_url(text: str, given: str, what: str) -> SplitResult:
    """``text`` (a URL the user gave as ``given``) split; UsageError naming it as ``what``
    when it does not parse, its port included (which urllib checks only when asked)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a port that is not a number raises here, not in a request
    except ValueError as exc:
        raise UsageError(f"{without_userinfo(given)!r} is not a valid {what} ({exc})") from exc
    return parts


def server_root(url: str) -> str:
    """``https://host[:port][/context]`` from what a user types (trailing /, /data, no scheme)."""
    text = url.strip()
    if not text:
        raise UsageError("no XNAT server given: use -w URL or set XNAT_HOST")
    if "://" not in text:
        text = f"https://{text}"
    parts = split_given_url(text, url, "server URL")
    if "@" in parts.netloc:  # user:password@host: refused, and never echoed
        msg = (
            f"the server URL {without_userinfo(text)!r} was given with a user name or password "
            "in it: give the user with -u (or XNAT_USER) and the password in XNAT_PASS or "
            "~/.netrc (a password on the command line is visible to every user of the machine)"
        )
        raise UsageError(msg)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"{url!r} is not an http(s) URL of an XNAT server"
        raise UsageError(msg)
    path = parts.path.rstrip("/")
    for marker in ("/app/", "/data/", "/REST/", "/xapi/"):
        at = (path + "/").find(marker)
        deep = path[at + len(marker) :] if at >= 0 else ""
        if at >= 0 and deep and deep not in ("archive", "template/Login.vm"):
            # A page or API address pasted from the browser: say which root to use.
            root = urlunsplit((parts.scheme, parts.netloc, path[:at], "", ""))
            msg = (
                f"{url!r} is the address of a page or an API path on the server, not the "
                f"server itself: use -w {root}"
            )
            raise UsageError(msg)
    for suffix in ("/data/archive", "/data", "/REST", "/app/template/Login.vm"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))

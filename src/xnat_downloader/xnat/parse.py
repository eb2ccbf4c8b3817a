"""Pure parsers for XNAT's answers: the ResultSet envelope, file URIs, dates, catalogs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from xnat_downloader.errors import ServerError, UsageError
from xnat_downloader.http.client import origin
from xnat_downloader.xnat.paths import split_given_url

FILE_URI = re.compile(r"/resources/(?P<res>[^/]+)/files/(?P<path>.+)$")
OWNER_URI = re.compile(r"/(?P<kind>scans|assessors|reconstructions)/(?P<id>[^/]+)/")


def result_rows(doc: Any, what: str) -> list[dict[str, str]]:
    """The rows of a ``{"ResultSet": {"Result": [...]}}`` listing, every cell a string."""
    try:
        rows = doc["ResultSet"]["Result"]
    except (KeyError, TypeError) as exc:
        msg = f"the server's listing of {what} is not an XNAT ResultSet"
        raise ServerError(msg) from exc
    if not isinstance(rows, list):
        msg = f"the server's listing of {what} has no list of results"
        raise ServerError(msg)
    return [
        {str(k): "" if v is None else str(v) for k, v in row.items()}
        for row in rows
        if isinstance(row, dict)
    ]


def item_fields(doc: Any, what: str) -> dict[str, Any]:
    """The ``data_fields`` of an ``{"items": [...]}`` document's current item (the one
    that is not a history entry); ServerError when there is none."""
    try:
        item = next(i for i in doc["items"] if not i.get("meta", {}).get("isHistory"))
        fields = item["data_fields"]
    except (KeyError, StopIteration, TypeError, AttributeError) as exc:
        msg = f"the server's description of {what} has no data fields"
        raise ServerError(msg) from exc
    if not isinstance(fields, dict):
        msg = f"the server's description of {what} has no data fields"
        raise ServerError(msg)
    return fields


def item_type(doc: Any) -> str:
    """The ``xsi:type`` of an items document's current item ("" if it says none)."""
    for item in doc.get("items", []) if isinstance(doc, dict) else []:
        if not item.get("meta", {}).get("isHistory"):
            return str(item.get("meta", {}).get("xsi:type", ""))
    return ""


def parse_date(text: str) -> date | None:
    text = text.strip()[:10]
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def parse_size(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _path_of(uri: str) -> str | None:
    """The path of a URI a server sent (absolute or not); None when it does not parse."""
    try:
        return urlsplit(uri).path if "://" in uri else uri.split("?", 1)[0]
    except ValueError:  # e.g. "http://[not-an-address/…"
        return None


def split_file_uri(uri: str) -> tuple[str, str] | None:
    """``(resource id or label, path inside the resource)`` from a file ``URI``."""
    path = _path_of(uri)
    match = FILE_URI.search(path) if path is not None else None
    if not match:
        return None
    return unquote(match.group("res")), unquote(match.group("path"))


def holder_kind(uri: str) -> str | None:
    """What holds the resource a file URI is in: the collection its owner is named under
    (``projects``, ``subjects``, ``experiments``, ``scans``, …), or None when the URI names
    no resource file.  ``/data/projects/P/resources/R/files/x`` is a project's own."""
    path = _path_of(uri)
    match = FILE_URI.search(path) if path is not None else None
    if path is None or match is None:
        return None
    parts = path[: match.start()].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def owner_of(uri: str) -> tuple[str, str] | None:
    """``(kind, id)`` of the scan, assessor or reconstruction a file URI belongs to."""
    path = _path_of(uri)
    match = OWNER_URI.search(path) if path is not None else None
    return (match.group("kind"), unquote(match.group("id"))) if match else None


@dataclass(frozen=True)
class CatalogEntry:
    """One ``cat:entry``: a resource URI with the folder it goes in, or one file."""

    uri: str
    name: str
    cache_path: str
    digest: str
    size: int | None


def catalog_link(text: str) -> str | None:
    """``text`` if it is an http(s) link to a catalog (the download page's hand-off);
    UsageError for one that does not parse."""
    parts = split_given_url(text, text, "link")
    return text if parts.scheme in ("http", "https") and parts.netloc else None


def server_of_link(link: str) -> str:
    """The XNAT base URL a catalog link lives under: what precedes ``/xapi/`` or ``/data/``."""
    parts = urlsplit(link)
    path = parts.path
    for marker in ("/xapi/", "/data/", "/REST/"):
        if marker in path:
            path = path.split(marker, 1)[0]
            break
    else:
        path = ""
    return f"{parts.scheme}://{parts.netloc}{path}"


def same_server(base_url: str, link: str) -> bool:
    """Whether ``link`` is on the server at ``base_url`` (scheme, host, port and context path).

    Credentials go only to the server the user named, so a catalog link elsewhere is refused
    rather than fetched with them; a link that does not parse is nobody's.
    """
    where = origin(link)
    if not where[0] or where != origin(base_url):
        return False
    context = urlsplit(base_url).path.rstrip("/")
    path = urlsplit(link).path
    return path == context or path.startswith(context + "/")


def parse_catalog(text: bytes | str, source: str) -> list[CatalogEntry]:
    """Every ``cat:entry`` of an XNAT catalog XML (nested entry sets included)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        msg = f"{source} is not valid catalog XML: {exc}"
        raise UsageError(msg) from exc
    if not root.tag.endswith("Catalog"):
        msg = f"{source} is not an XNAT catalog (its root element is {root.tag})"
        raise UsageError(msg)
    entries = []
    for element in root.iter():
        if not element.tag.endswith("}entry") and element.tag != "entry":
            continue
        uri = element.get("URI", "")
        if not uri:
            continue
        size = None
        for meta in element.iter():
            if meta.tag.endswith("metaField") and meta.get("name") == "SIZE" and meta.text:
                size = parse_size(meta.text)
        entries.append(
            CatalogEntry(
                uri,
                element.get("name", ""),
                element.get("cachePath", ""),
                element.get("digest", ""),
                size,
            )
        )
    if not entries:
        msg = f"{source} lists no cat:entry elements with a URI"
        raise UsageError(msg)
    return entries


def parse_uri_list(body: bytes) -> list[str]:
    """The URIs of an import's ``text/uri-list`` (or plain text) answer."""
    text = body.decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("/")]
